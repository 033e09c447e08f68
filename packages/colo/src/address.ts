/**
 * QEMU's forms of core's {@link SocketAddress} (device params are read with
 * core's `parseSocketAddress`, see params.ts): the QMP
 * `SocketAddressLegacy` of `chardev-add` / `nbd-server-start`, and values in
 * a `-drive` option string.
 */
import type { SocketAddress } from '@remus/core';

/** The QMP `SocketAddressLegacy` form used by `chardev-add` and `nbd-server-start`. */
export function qmpSocketAddress(a: SocketAddress): Record<string, unknown> {
  return 'path' in a ? { type: 'unix', data: { path: a.path } } : { type: 'inet', data: { host: a.host, port: String(a.port) } };
}

/** Escapes a value for a QEMU option string (`key=value,key=value`): commas are doubled. */
export function optValue(v: string | number): string {
  return String(v).replaceAll(',', ',,');
}
