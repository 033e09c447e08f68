/**
 * Socket addresses, one type for every package: a TCP host and port or a
 * unix socket path, parsed from config text or objects and checked before
 * they reach a socket, QEMU or a command line.
 */
import { isIP } from 'node:net';
import { RemusError } from './errors.js';

/** A TCP endpoint (`host` a name, an IPv4 or an IPv6 address without brackets) or a unix socket path. */
export type SocketAddress = { readonly host: string; readonly port: number } | { readonly path: string };

export interface ParseAddressOptions {
  /** Accept unix socket paths (`/run/x.sock`, `unix:/run/x.sock`, `{ path }`). Default true. */
  readonly allowPath?: boolean;
  /** Accept port 0 (a listener on an ephemeral port). Default false. */
  readonly allowPortZero?: boolean;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$/;

/**
 * Reads `value` as a {@link SocketAddress}. Text forms: `host:port`,
 * `[v6]:port`, `tcp:host:port`, `unix:/path` and `/path`; objects
 * `{ host, port }` (port a number or digits) and `{ path }`. A host is
 * required (`:7788` is refused: say `0.0.0.0:7788` to mean every interface).
 * Throws INVALID_ARGUMENT naming `what` and the accepted forms.
 */
export function parseSocketAddress(value: unknown, what: string, options: ParseAddressOptions = {}): SocketAddress {
  const allowPath = options.allowPath ?? true;
  const minPort = options.allowPortZero ? 0 : 1;
  const bad = (why: string): never => {
    throw new RemusError(
      'INVALID_ARGUMENT',
      `${what} ${describe(value)} is not a socket address (${why}): use "HOST:PORT" (e.g. "127.0.0.1:7788", "[::1]:7788")${allowPath ? ', a unix socket path ("/run/remus.sock")' : ''} or an object { host, port }${allowPath ? ' / { path }' : ''}`,
      { details: { [what]: describe(value) } },
    );
  };
  const checkPath = (path: unknown): SocketAddress => {
    if (!allowPath) return bad('a unix socket path is not allowed here');
    // 107 bytes is the kernel's sun_path limit; control characters would corrupt QEMU option strings and logs.
    if (typeof path !== 'string' || path === '' || Buffer.byteLength(path) > 107 || /[\0-\x1f\x7f]/.test(path)) {
      return bad('a socket path must be 1-107 bytes without control characters');
    }
    return { path };
  };
  const checkHostPort = (host: unknown, portValue: unknown): SocketAddress => {
    if (typeof host !== 'string' || host === '') return bad('the host is missing');
    if (!(isIP(host) !== 0 || HOSTNAME.test(host))) return bad(`host ${JSON.stringify(host)} is not a name or IP address`);
    const port = typeof portValue === 'string' && /^\d{1,5}$/.test(portValue) ? Number(portValue) : portValue;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < minPort || port > 65535) {
      return bad(`the port must be a whole number from ${minPort} to 65535`);
    }
    return { host, port };
  };
  if (typeof value === 'string') {
    if (value.length > 300) return bad('too long');
    let v = value;
    if (v.startsWith('unix:')) return checkPath(v.slice(5));
    if (v.startsWith('/')) return checkPath(v);
    if (v.startsWith('tcp:')) v = v.slice(4);
    const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):([^:]*)$/.exec(v);
    if (!m) return bad('expected HOST:PORT');
    const host = m[1] ?? m[2];
    if (m[1] !== undefined && isIP(m[1]) !== 6) return bad('brackets hold an IPv6 address');
    return checkHostPort(host, m[3]);
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    if ('path' in o) return checkPath(o['path']);
    return checkHostPort(o['host'], o['port']);
  }
  return bad('expected text or an object');
}

/** Text for messages and command lines: `host:port`, `[v6]:port` or `unix:/path`. */
export function formatSocketAddress(a: SocketAddress): string {
  if ('path' in a) return `unix:${a.path}`;
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** True for hosts that only this machine can reach: `localhost`, 127.0.0.0/8, `::1`. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * True for an address only this machine can reach: a Unix socket or a
 * loopback host ({@link isLoopbackHost}). What a listener without
 * authentication may bind.
 */
export function isLocalAddress(a: SocketAddress): boolean {
  return 'path' in a || isLoopbackHost(a.host);
}

function describe(value: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    s = Object.prototype.toString.call(value);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
