/**
 * Socket addresses in device params (proxy chardevs, NBD), checked before
 * they reach QEMU, and their QMP and `-drive` option forms.
 */
import { RemusError } from '@remus/core';

/** A TCP endpoint or a unix socket path, as named in a COLO device's params. */
export type ColoSocketAddress = { readonly host: string; readonly port: number } | { readonly path: string };

const HOST = /^[A-Za-z0-9_.:-]{1,253}$/;

/** Reads `value` as a {@link ColoSocketAddress}; throws INVALID_ARGUMENT naming `what`. Accepts `"host:port"` too. */
export function parseAddress(value: unknown, what: string): ColoSocketAddress {
  const bad = (): never => {
    throw new RemusError(
      'INVALID_ARGUMENT',
      `${what} ${JSON.stringify(value)} is not a socket address: use { host, port } (or "host:port") or { path } for a unix socket`,
      { details: { [what]: value } },
    );
  };
  let v = value;
  if (typeof v === 'string') {
    const m = /^(.+):(\d{1,5})$/.exec(v);
    if (!m) return bad();
    v = { host: m[1], port: Number(m[2]) };
  }
  if (v === null || typeof v !== 'object') return bad();
  const o = v as Record<string, unknown>;
  if (typeof o['path'] === 'string') {
    const path = o['path'];
    // A path goes into QMP JSON (safe) and into a `-drive` option string, where commas are escaped; control characters are refused.
    if (path === '' || path.length > 107 || /[\0-\x1f]/.test(path)) return bad();
    return { path };
  }
  const host = o['host'];
  const port = typeof o['port'] === 'string' ? Number(o['port']) : o['port'];
  if (typeof host !== 'string' || !HOST.test(host) || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    return bad();
  }
  return { host, port };
}

/** The QMP `SocketAddressLegacy` form used by `chardev-add` and `nbd-server-start`. */
export function qmpSocketAddress(a: ColoSocketAddress): Record<string, unknown> {
  return 'path' in a ? { type: 'unix', data: { path: a.path } } : { type: 'inet', data: { host: a.host, port: String(a.port) } };
}

/** Text for messages. */
export function formatAddress(a: ColoSocketAddress): string {
  return 'path' in a ? `unix:${a.path}` : `${a.host}:${a.port}`;
}

/** Escapes a value for a QEMU option string (`key=value,key=value`): commas are doubled. */
export function optValue(v: string | number): string {
  return String(v).replaceAll(',', ',,');
}
