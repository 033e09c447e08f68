/**
 * The synchronous netlink channel (native/rtnl.c, built at install by
 * node-gyp): one NETLINK_ROUTE socket per network namespace, opened in that
 * namespace at setup, so NICs in any namespace get an in-process socket; each
 * checkpoint op is one prebuilt RTM_NEWQDISC request (only its sequence
 * number changes) and one bounded wait for the kernel's ACK on this thread,
 * with no event-loop turn: the way Xen's netbuf drives sch_plug through
 * libnl. Measured beside a libnl-from-C peer in `pnpm bench`.
 *
 * When the addon was not built (no compiler at install, or pnpm did not run
 * its build script), {@link loadNativeRtnl} says why and nic-netbuf uses the
 * event-driven channels (rtnl.ts for its own namespace, tc batch for others).
 */
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { abortError, RemusError } from '@remus/core';
import type { QdiscChange } from './rtnl.js';

/** The addon's functions (see native/rtnl.c). */
interface Addon {
  open(nsPath: string | null): number;
  ifindex(nsPath: string | null, name: string): number;
  request(fd: number, message: Buffer, timeoutMs: number): number;
  close(fd: number): void;
}

let loaded: Addon | { readonly missing: string } | undefined;

/** The addon, or why it is not there (once per process). */
export function loadNativeRtnl(): Addon | { readonly missing: string } {
  if (loaded) return loaded;
  try {
    loaded = createRequire(import.meta.url)('../build/Release/remus_rtnl.node') as Addon;
  } catch (e) {
    loaded = {
      missing: `the native netlink channel of @remus/nic-netbuf is not built (${(e as Error).message.split('\n')[0]}): reinstall the package with a C compiler, python3 and make present (pnpm: allow its build with \`pnpm approve-builds\`); meanwhile NICs use the slower event-driven channels`,
    };
  }
  return loaded;
}

/** TC_H_ROOT. */
const ROOT = 0xffff_ffff;
const RTM_NEWQDISC = 36;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const TCA_KIND = 1;
const TCA_OPTIONS = 2;
/** Netlink messages are in host byte order. */
const host = endianness() === 'LE';

const ERRNO: Readonly<Record<number, string>> = { 1: 'EPERM', 2: 'ENOENT', 17: 'EEXIST', 19: 'ENODEV', 22: 'EINVAL', 95: 'EOPNOTSUPP' };

/**
 * An RTM_NEWQDISC request (REQUEST|ACK: `tc qdisc change`) for the qdisc
 * `handle` at the root of `ifindex`, in host byte order; the caller writes
 * the sequence number at offset 8 before each send.
 */
export function qdiscChangeMessage(ifindex: number, handle: number, change: QdiscChange): Buffer {
  const kind = Buffer.from(`${change.kind}\0`, 'latin1');
  const align = (n: number): number => (n + 3) & ~3;
  const kindLen = 4 + kind.length;
  const optLen = 4 + change.options.length;
  const len = 16 + 20 + align(kindLen) + align(optLen);
  const m = Buffer.alloc(len);
  const le = new DataView(m.buffer, m.byteOffset, m.byteLength);
  le.setUint32(0, len, host);
  le.setUint16(4, RTM_NEWQDISC, host);
  le.setUint16(6, NLM_F_REQUEST | NLM_F_ACK, host);
  // tcmsg: family(1) pad(3) ifindex(4) handle(4) parent(4) info(4)
  le.setInt32(20, ifindex, host);
  le.setUint32(24, handle, host);
  le.setUint32(28, ROOT, host);
  let o = 36;
  le.setUint16(o, kindLen, host);
  le.setUint16(o + 2, TCA_KIND, host);
  kind.copy(m, o + 4);
  o += align(kindLen);
  le.setUint16(o, optLen, host);
  le.setUint16(o + 2, TCA_OPTIONS, host);
  change.options.copy(m, o + 4);
  return m;
}

/** One synchronous NETLINK_ROUTE socket in one network namespace (undefined: this process's). Once closed, every call fails. */
export class NativeRtnlChannel {
  readonly netns: string | undefined;
  readonly #addon: Addon;
  #fd: number;
  #seq = 0;

  /** Opens the socket in `netns` (a name under /run/netns). Throws OP_FAILED naming the namespace. */
  constructor(addon: Addon, netns: string | undefined) {
    this.#addon = addon;
    this.netns = netns;
    try {
      this.#fd = addon.open(netns === undefined ? null : `/run/netns/${netns}`);
    } catch (e) {
      throw new RemusError('OP_FAILED', `cannot open a netlink socket in ${netns === undefined ? 'this namespace' : `namespace ${netns}`}: ${(e as Error).message}`, {
        cause: e,
        details: { netns, errno: (e as { code?: string }).code },
      });
    }
  }

  get alive(): boolean {
    return this.#fd >= 0;
  }

  /** The interface's index in this channel's namespace. Throws OP_FAILED when it is missing. */
  ifindex(name: string): number {
    this.#check(`looking up ${name}`);
    const i = this.#addon.ifindex(this.netns === undefined ? null : `/run/netns/${this.netns}`, name);
    if (i <= 0) {
      throw new RemusError('OP_FAILED', `interface ${name} not found${this.netns ? ` in namespace ${this.netns}` : ''}`, { details: { errno: 'ENODEV', ifname: name } });
    }
    return i;
  }

  /**
   * Sends `message` (from {@link qdiscChangeMessage}) and waits for the
   * kernel's ACK, at most `timeoutMs`, on this thread. Throws OP_FAILED with
   * the kernel's errno, TIMEOUT, or the signal's error (checked before sending:
   * the call itself is bounded, not interruptible).
   */
  send(message: Buffer, what: string, timeoutMs: number, signal?: AbortSignal): void {
    this.#check(what);
    if (signal?.aborted) throw abortError(signal, what);
    this.#seq = (this.#seq + 1) >>> 0 || 1;
    if (host) message.writeUInt32LE(this.#seq, 8);
    else message.writeUInt32BE(this.#seq, 8);
    const r = this.#addon.request(this.#fd, message, Math.max(1, Math.min(Math.ceil(timeoutMs), 60_000)));
    if (r === 0) return;
    if (r < 0) throw new RemusError('TIMEOUT', `${what}: the kernel did not answer within ${timeoutMs} ms`, { details: { timeoutMs } });
    const errno = ERRNO[r] ?? `errno ${r}`;
    throw new RemusError('OP_FAILED', `${what}: the kernel refused the qdisc change (${errno})`, { details: { errno } });
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    this.#addon.close(this.#fd);
    this.#fd = -1;
  }

  #check(what: string): void {
    if (this.#fd < 0) throw new RemusError('STATE', `${what}: the netlink channel${this.netns ? ` of namespace ${this.netns}` : ''} is closed`);
  }
}
