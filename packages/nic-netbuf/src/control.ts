/**
 * Plug control: how the checkpoint ops reach one NIC's buffering qdisc. One
 * interface, three implementations, chosen once at the end of setup:
 *
 * - {@link nativeControl} (the default when the package's addon is built):
 *   the synchronous socket of the NIC's namespace, any namespace (native.ts);
 *   one prebuilt RTM_NEWQDISC request and its ACK per op, no event-loop turn.
 * Without the addon (or with `channel: 'event'`):
 * - {@link netlinkControl}: the NIC is in this process's own namespace; one
 *   RTM_NEWQDISC request on the operation's event-driven socket (rtnl.ts).
 * - {@link tcControl}: the NIC is in another namespace (Node alone cannot
 *   `setns`); one line on that namespace's `tc -batch` process (channel.ts).
 *
 * None spawns a process or looks anything up per checkpoint.
 */
import { RemusError } from '@remus/core';
import type { TcChannel } from './channel.js';
import type { QdiscChangeSpec } from './qdisc.js';
import { qdiscChangeMessage, type NativeRtnlChannel } from './native.js';
import { parseHandle, type RtnlChannel } from './rtnl.js';

/** Sends a NIC's checkpoint changes to its qdisc. */
export interface PlugControl {
  /** Which transport: `native` (synchronous socket of the NIC's namespace), `netlink` (event-driven in-process socket) or `tc` (the namespace's tc batch process). */
  readonly via: 'native' | 'netlink' | 'tc';
  /** The transport object; every NIC on the same socket or in the same namespace shares it. */
  readonly channel: NativeRtnlChannel | RtnlChannel | TcChannel;
  /**
   * Sends one change (block or release) to the qdisc and resolves once the
   * kernel applied it. Rejects with OP_FAILED (the kernel's reason, e.g.
   * details.errno ENODEV), TIMEOUT, or the signal's error. `what` names the
   * op, NIC and IFB for the message.
   */
  change(change: QdiscChangeSpec, what: string, signal: AbortSignal): Promise<void>;
}

/** Plug control over the in-process netlink socket, with the IFB's ifindex looked up once, here. */
export interface NetlinkControl extends PlugControl {
  readonly via: 'netlink';
  readonly channel: RtnlChannel;
  /** The IFB's ifindex, recorded at setup (the checkpoint ops do no lookup). */
  readonly ifindex: number;
}

/**
 * Makes the netlink control of the qdisc `handle` (e.g. `1:`) at the root of
 * `ifb`: checks the handle (non-zero major:minor) and looks up the ifindex.
 * Throws OP_FAILED.
 */
export async function netlinkControl(rtnl: RtnlChannel, ifb: string, handle: string, signal: AbortSignal): Promise<NetlinkControl> {
  const parsed = parseHandle(handle);
  if (parsed === undefined) {
    throw new RemusError('OP_FAILED', `IFB ${ifb}: cannot use qdisc handle ${JSON.stringify(handle)} (need a non-zero major:minor)`, {
      details: { step: 'open-channel', handle },
    });
  }
  const ifindex = await rtnl.ifindex(ifb, signal);
  return {
    via: 'netlink',
    channel: rtnl,
    ifindex,
    change: (c, what, s) => rtnl.change(ifindex, parsed, c.netlink, what, s),
  };
}

/**
 * Plug control over the native synchronous socket of the NIC's namespace:
 * each change is a request prebuilt once per change kind (only its sequence
 * number is written per op), sent and acknowledged on this thread.
 * Throws OP_FAILED when the IFB or the handle is unusable.
 */
export function nativeControl(channel: NativeRtnlChannel, ifb: string, handle: string, timeoutMs: number): PlugControl {
  const parsed = parseHandle(handle);
  if (parsed === undefined) {
    throw new RemusError('OP_FAILED', `IFB ${ifb}: cannot use qdisc handle ${JSON.stringify(handle)} (need a non-zero major:minor)`, {
      details: { handle },
    });
  }
  const ifindex = channel.ifindex(ifb);
  const messages = new WeakMap<QdiscChangeSpec, Buffer>();
  return {
    via: 'native',
    channel,
    change: (c, what, signal) => {
      let m = messages.get(c);
      if (m === undefined) {
        m = qdiscChangeMessage(ifindex, parsed, c.netlink);
        messages.set(c, m);
      }
      try {
        channel.send(m, what, timeoutMs, signal);
        return DONE;
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
}

const DONE: Promise<void> = Promise.resolve();

/** Plug control over a namespace's tc batch channel: `qdisc change dev IFB root handle H ARGS`. */
export function tcControl(channel: TcChannel, ifb: string, handle: string): PlugControl {
  return {
    via: 'tc',
    channel,
    change: (c, _what, s) => channel.run(['qdisc', 'change', 'dev', ifb, 'root', 'handle', handle, ...c.tcArgs], s),
  };
}
