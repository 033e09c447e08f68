/**
 * The subkind's private state: per operation ({@link NetbufShared}) and per
 * NIC ({@link NicData}). Not exported from the package entry.
 */
import type { DeviceHandle } from '@remus/core';
import type { TcChannel } from './channel.js';
import type { PlugControl } from './control.js';
import type { NativeRtnlChannel } from './native.js';
import type { RtnlChannel } from './rtnl.js';

/** The state every NIC of one operation shares. */
export interface NetbufShared {
  /**
   * The tc batch channels: one per network namespace (key: namespace name),
   * opened by the first setup there and reused by every NIC in it; closed
   * by cleanup. A failed open is removed so the next setup retries.
   */
  readonly channels: Map<string, Promise<TcChannel>>;
  /**
   * The in-process NETLINK_ROUTE socket for NICs in this process's own
   * namespace: opened by the first such setup, shared by all of them,
   * closed by cleanup.
   */
  rtnl: RtnlChannel | undefined;
  /**
   * The native synchronous netlink sockets (native.ts), one per namespace
   * (key: its name, '' for this process's): opened by the first setup there,
   * closed by cleanup. Empty when the addon is not built or `channel: 'event'`.
   */
  readonly native: Map<string, NativeRtnlChannel>;
  /** The qdisc probe, started by the first match: undefined = usable, else why not. */
  probe: Promise<string | undefined> | undefined;
}

/**
 * One NIC's state, owned by this subkind. Every kernel object is recorded
 * the moment it exists so teardown (also after a failed or aborted setup)
 * removes exactly what was made.
 */
export interface NicData {
  readonly ifname: string;
  readonly netns: string | undefined;
  /** The operation (ctx.operation of setup). */
  readonly operation: string;
  /** The alias put on the IFB: `remus-netbuf:<operation>:<ifname>`; reap finds crashed runs' IFBs by it. */
  readonly tag: string;
  /** The IFB carrying the buffer; set before `ip link add` (or from the script's output). */
  ifb: string | undefined;
  /** True once this plugin's `ip link add` of `ifb` succeeded. An IFB is deleted only if this is true or it carries `tag`. */
  ifbCreated: boolean;
  /** Handle of the buffering qdisc at the IFB's root (e.g. `1:`); set once it is installed. */
  qdiscHandle: string | undefined;
  /** True once `tc qdisc add dev <ifname> ingress` succeeded, until teardown removed it. */
  ingressAdded: boolean;
  /** True once the operator's setup script was started, until its teardown run succeeded. */
  scriptStarted: boolean;
  /** How the checkpoint ops reach the qdisc; set by setup's last step, cleared by teardown. Checkpoint ops need it. */
  control: PlugControl | undefined;
  /** Epochs closed by postsuspend and released by commit. */
  closed: number;
  released: number;
}

export type Handle = DeviceHandle<NetbufShared, NicData>;

/** ` (network namespace NS)`, or nothing for this process's namespace. */
export function inNs(netns: string | undefined): string {
  return netns === undefined ? '' : ` (network namespace ${netns})`;
}
