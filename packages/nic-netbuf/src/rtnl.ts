/**
 * The in-process control channel: one NETLINK_ROUTE socket (npm `netlink`
 * 0.3.0) per operation, used for the checkpoint ops of every NIC whose
 * network namespace is the one this process runs in.
 *
 * Each op is one RTM_NEWQDISC request (flags REQUEST|ACK, i.e. `tc qdisc
 * change`) addressed by the IFB's ifindex and the qdisc's explicit handle,
 * parent TC_H_ROOT. With handle 0 the kernel would silently create a new root
 * qdisc (platform.md's DANGER note), so a zero handle is refused here.
 *
 * A socket lives in the namespace of the process that opened it and Node
 * cannot `setns`, so NICs in other namespaces keep the `tc -batch` channel
 * (channel.ts).
 */
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { abortError, raceSignal, RemusError } from '@remus/core';

/** What this module uses of `netlink`'s RtNetlinkSocket. */
interface RtSocket {
  newQdisc(
    data: { family?: number; ifindex?: number; handle?: number; parent?: number },
    attrs: { kind?: string; options?: Buffer },
    options?: { timeout?: number },
  ): Promise<unknown[]>;
  getLink(data: object, attrs: { ifname?: string }, options?: { timeout?: number }): Promise<{ data: { index?: number } }[]>;
  readonly socket: { close(): void };
}

const require = createRequire(import.meta.url);

/** TC_H_ROOT. */
const ROOT = 0xffff_ffff;

/** sch_plug actions (include/uapi/linux/pkt_sched.h). */
export const PLUG_BUFFER = 0;
export const PLUG_RELEASE_ONE = 1;
export const PLUG_RELEASE_INDEFINITE = 2;
export const PLUG_LIMIT = 3;

const LE = endianness() === 'LE';

/** struct tc_plug_qopt { int action; __u32 limit; } in host byte order (not nested). */
export function plugOptions(action: number, limit = 0): Buffer {
  const b = Buffer.alloc(8);
  if (LE) {
    b.writeInt32LE(action, 0);
    b.writeUInt32LE(limit, 4);
  } else {
    b.writeInt32BE(action, 0);
    b.writeUInt32BE(limit, 4);
  }
  return b;
}

/** Parses a tc handle (`1:`, `1:0`, hex major[:minor]) into its 32-bit value; undefined if malformed. */
export function parseHandle(text: string): number | undefined {
  const m = /^([0-9a-f]{1,4}):([0-9a-f]{0,4})$/i.exec(text.trim());
  if (!m) return undefined;
  const value = ((parseInt(m[1]!, 16) << 16) | (m[2] ? parseInt(m[2], 16) : 0)) >>> 0;
  return value === 0 ? undefined : value;
}

/** A qdisc change to send: kind and its TCA_OPTIONS payload. */
export interface QdiscChange {
  readonly kind: string;
  readonly options: Buffer;
}

/** One NETLINK_ROUTE socket in this process's network namespace. Once closed, every call fails at once. */
export class RtnlChannel {
  private readonly sock: RtSocket;
  private closed = false;
  private readonly timeoutMs: number;

  private constructor(sock: RtSocket, timeoutMs: number) {
    this.sock = sock;
    this.timeoutMs = timeoutMs;
  }

  /** Opens the socket (no process, no I/O but the socket call). Throws OP_FAILED if it cannot. */
  static open(timeoutMs: number): RtnlChannel {
    try {
      const { createRtNetlink } = require('netlink') as { createRtNetlink: () => RtSocket };
      return new RtnlChannel(createRtNetlink(), timeoutMs);
    } catch (e) {
      throw new RemusError('OP_FAILED', `cannot open a NETLINK_ROUTE socket: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The ifindex of `ifname` in this namespace (RTM_GETLINK). Throws OP_FAILED with details.errno. */
  async ifindex(ifname: string, signal?: AbortSignal): Promise<number> {
    this.check(`look up ${ifname}`);
    try {
      const [link] = await bounded(this.sock.getLink({}, { ifname }, { timeout: this.timeoutMs }), signal, `look up ${ifname}`);
      const index = link?.data.index;
      if (typeof index !== 'number' || index <= 0) throw new Error('no link in the answer');
      return index;
    } catch (e) {
      throw mapError(e, `cannot look up the ifindex of ${ifname}`, { ifname });
    }
  }

  /**
   * Changes the root qdisc `handle` of interface `ifindex` (RTM_NEWQDISC,
   * REQUEST|ACK): resolves on the kernel's ACK, rejects with OP_FAILED
   * (details.errno: ENODEV, ENOENT, EINVAL...), TIMEOUT or the signal's reason.
   * `what` names the device and IFB for the message. Never spawns.
   */
  async change(ifindex: number, handle: number, change: QdiscChange, what: string, signal?: AbortSignal): Promise<void> {
    this.check(what);
    if (handle === 0) throw new RemusError('STATE', `${what}: refusing qdisc handle 0 (the kernel would create a new root qdisc)`);
    if (signal?.aborted) throw abortError(signal, what);
    try {
      const request = this.sock.newQdisc({ family: 0, ifindex, handle, parent: ROOT }, { kind: change.kind, options: change.options }, { timeout: this.timeoutMs });
      await bounded(request, signal, what);
    } catch (e) {
      throw mapError(e, what, { ifindex, handle: handle.toString(16), kind: change.kind });
    }
  }

  /** Closes the socket; pending requests are abandoned. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.sock.socket.close();
    } catch {
      // already closed
    }
  }

  get alive(): boolean {
    return !this.closed;
  }

  private check(what: string): void {
    if (this.closed) throw new RemusError('OP_FAILED', `${what}: the netlink control socket is closed (cleanup ran)`);
  }
}

/** `p`, cut short by `signal` (if any) with the core's abort error naming `what`. */
function bounded<T>(p: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  return signal ? raceSignal(p, signal, () => abortError(signal, `${what} (netlink control socket)`)) : p;
}

/** netlink 0.3.0 rejects with `Request rejected: <ERRNO NAME>` or `Timeout has been reached`. */
function mapError(e: unknown, what: string, details: Record<string, unknown>): RemusError {
  if (e instanceof RemusError) return e;
  const message = e instanceof Error ? e.message : String(e);
  if (/Timeout has been reached/.test(message)) {
    return new RemusError('TIMEOUT', `${what}: the kernel did not answer the netlink request in time`, { details, cause: e });
  }
  const errno = /Request rejected: (E[A-Z0-9]+|-?\d+)/.exec(message)?.[1];
  return new RemusError('OP_FAILED', `${what} failed: ${errno ?? message}`, { details: { ...details, errno }, cause: e });
}
