/**
 * The subkind ops interface: what a device plugin provides and the core calls.
 *
 * These operations are provided by a device subkind and called by the core's
 * device layer ({@link createCheckpointDevices}). Every member may return a
 * value or a promise: a synchronous implementation simply returns. Every call
 * gets an `AbortSignal` that fires when the op's timeout runs out or the
 * caller aborts the operation; an op that ignores it is reported as TIMEOUT
 * all the same, and its late result is discarded.
 *
 * Members marked optional may be absent: absent checkpoint ops are no-ops,
 * an absent `match` matches every device of the subkind's kind, absent
 * `init`/`cleanup` mean the subkind has no shared state.
 */

/** One device handed to the layer by the caller. */
export interface DeviceSpec {
  /** Unique within an operation (e.g. `vif1.0`, `xvda`); names the device in errors and events. */
  readonly id: string;
  /** Device kind: `nic`, `disk`, or any kind a plugin declares. Only subkinds of this kind are tried. */
  readonly kind: string;
  /** Kind-specific parameters read by subkinds (interface name, namespace, block device path...). */
  readonly params?: Readonly<Record<string, unknown>>;
}

/**
 * What a subkind's per-device ops receive: the device, the subkind's shared
 * state and the subkind's own per-device data.
 *
 * @typeParam S - shared state returned by `init` (one per subkind per operation).
 * @typeParam D - per-device data, private to the subkind.
 */
export interface DeviceHandle<S = unknown, D = unknown> {
  /** The device as the caller described it. */
  readonly device: DeviceSpec;
  /** What this subkind's `init` returned for this operation (`undefined` without `init`). */
  readonly shared: S;
  /**
   * The subkind's private per-device data. Undefined until `setup` stores
   * something. `setup` should record each resource as soon as it exists, so
   * that `teardown` (which also runs after a failed setup) sees exactly what
   * was made. The core never reads it.
   */
  data: D | undefined;
}

/** Per-call context: the call's abort signal and the checkpoint it belongs to. */
export interface OpContext {
  /**
   * Fires on the op's timeout (reason: a TIMEOUT RemusError) or on the
   * caller's abort. Made when first read (ops that never read it cost no
   * signal). The three checkpoint ops of one checkpoint share one signal when
   * they share a time limit: a timeout in any of them fails that checkpoint.
   */
  readonly signal: AbortSignal;
  /** Checkpoint number for checkpoint ops (1 for the first); 0 outside checkpoints. */
  readonly checkpoint: number;
  /**
   * Fencing epoch of the primary role the run holds (see `arbiter.ts`): the
   * epoch whose output `commit` releases. 0 without an arbiter and outside
   * checkpoints. A subkind that sends state or output elsewhere tags it with
   * this, so a receiver can refuse a deposed primary's.
   */
  readonly epoch: number;
  /**
   * Id of the operation (one protected run). Tag what you create in the
   * kernel with it (an IFB alias, an iptables comment), so that `reap` can
   * find it after a crash. Matches /^[A-Za-z0-9_-]{1,32}$/.
   */
  readonly operation: string;
}

/** "Not mine", with a reason that is shown when no subkind takes the device. */
export interface NoMatch {
  readonly match: false;
  readonly reason: string;
}

/** `true`: the device is this subkind's. `false` or {@link NoMatch}: try the next subkind. */
export type MatchResult = boolean | NoMatch;

/** A value or a promise of it. */
export type MaybePromise<T> = T | Promise<T>;

/** Say "not mine" with a reason (e.g. `noMatch('kernel lacks sch_plug')`). */
export function noMatch(reason: string): NoMatch {
  return { match: false, reason };
}

/** Per-op time limits in milliseconds; unset ops use the layer's default. */
export type OpTimeouts = Partial<Record<OpName, number>>;

/** The names of the ops, as they appear in events and errors. */
export type OpName =
  | 'init'
  | 'cleanup'
  | 'match'
  | 'setup'
  | 'teardown'
  | 'postsuspend'
  | 'preresume'
  | 'commit'
  | 'reap';

/** The three checkpoint ops, in the order every checkpoint runs them. */
export const CHECKPOINT_OPS = ['postsuspend', 'preresume', 'commit'] as const;
export type CheckpointOpName = (typeof CHECKPOINT_OPS)[number];

/**
 * One way of handling devices of a kind: the vtable a plugin provides.
 *
 * Provided by a subkind, called by the core. Order within one operation:
 * `init` (lazily, once) -> `match` (per device) -> `setup` (per matched
 * device) -> any number of checkpoints, each `postsuspend` -> `preresume` ->
 * `commit` -> `teardown` (per matched device, also when `setup` failed) ->
 * `cleanup` (once, if `init` succeeded).
 *
 * @typeParam S - shared state made by `init`.
 * @typeParam D - per-device private data (see {@link DeviceHandle.data}).
 */
export interface SubkindOps<S = any, D = any> {
  /** Subkind name, unique within an ops list (e.g. `nic-netbuf`). Appears in every error and event. */
  readonly name: string;
  /** The device kind this subkind handles (e.g. `nic`); devices of other kinds never reach it. */
  readonly kind: string;
  /** Per-op timeouts overriding the layer's default, for ops known to be slow (e.g. a DRBD barrier). */
  readonly timeouts?: OpTimeouts;

  /**
   * The device param names this subkind reads (e.g. `['ifname', 'netns']`).
   * Optional. When every subkind of a kind in an ops list declares them, a
   * device param none of them knows is an error before anything is touched,
   * naming the closest known name (see {@link checkDevices}).
   */
  readonly params?: readonly string[];

  /**
   * Checks one device's params for this subkind, before anything is touched
   * (at config check time and when the layer is created). Optional. Called
   * for every device of this subkind's kind, whichever subkind will take it,
   * so it checks only the shape of the params it reads (types, names,
   * ranges), never the host. Pure and synchronous: no I/O, no side effects.
   * Throws INVALID_ARGUMENT naming the device and param and the fix.
   */
  checkParams?(device: DeviceSpec): void;

  /**
   * Creates the state every device of this subkind shares in one operation
   * (one netlink socket, one QMP connection, one event stream).
   *
   * Optional. Called at most once per operation, before this subkind's first
   * `match`, and only if some device of its kind reaches it (lazy). Its
   * return value becomes `shared` in every handle. If it fails, the devices
   * that needed it fail with it and setup fails; `cleanup` is not called.
   */
  init?(ctx: OpContext): MaybePromise<S>;

  /**
   * Frees what `init` made. Optional. Called once per operation, after every
   * device of this subkind was torn down, for every subkind whose `init`
   * succeeded (also when setup failed). Should not throw; if it does, the
   * error is reported and the other cleanups still run.
   */
  cleanup?(shared: S, ctx: OpContext): MaybePromise<void>;

  /**
   * Decides whether this subkind takes the device. Optional: absent means it
   * takes every device of its kind. Called per device, in ops-list order,
   * after `init`, only for devices of this subkind's kind; the first subkind
   * that answers `true` takes the device. Return `false` or `noMatch(reason)`
   * for "not mine" (the next subkind is tried). Throw only for real faults
   * (the device is broken or missing): a throw fails the device, it is never
   * read as "not mine". Must not change anything; `handle.data` is not kept.
   */
  match?(handle: DeviceHandle<S, D>, ctx: OpContext): MaybePromise<MatchResult>;

  /**
   * Acquires the device's resources. Required. Called once per matched
   * device. May fail part way: record each resource in `handle.data` as soon
   * as it exists, because `teardown` is called even if `setup` fails.
   */
  setup(handle: DeviceHandle<S, D>, ctx: OpContext): MaybePromise<void>;

  /**
   * Releases what `setup` acquired. Required. Called for every matched device
   * at the end of the operation, **also when its `setup` failed or never
   * finished**, and after failed checkpoints. Best effort and idempotent: it
   * must tolerate half-made or already-removed state and be safe to call
   * twice. Its errors are collected; they do not stop other teardowns.
   */
  teardown(handle: DeviceHandle<S, D>, ctx: OpContext): MaybePromise<void>;

  /**
   * Checkpoint op, after the domain was suspended (e.g. close the network
   * epoch). Optional (absent = no-op). Runs for every device concurrently;
   * any failure fails the checkpoint. Must not spawn processes: it runs
   * inside the guest's pause.
   */
  postsuspend?(handle: DeviceHandle<S, D>, ctx: OpContext): MaybePromise<void>;

  /**
   * Checkpoint op, after the checkpoint state was saved and before the
   * domain resumes (e.g. wait for the disk barrier). Optional (absent =
   * no-op). Same rules as `postsuspend`.
   */
  preresume?(handle: DeviceHandle<S, D>, ctx: OpContext): MaybePromise<void>;

  /**
   * Checkpoint op, after the backup acknowledged the checkpoint (e.g.
   * release the buffered network output of the epoch). Optional (absent =
   * no-op). Same rules as `postsuspend`.
   */
  commit?(handle: DeviceHandle<S, D>, ctx: OpContext): MaybePromise<void>;

  /**
   * Removes what a crashed operation left behind. Optional. Not part of a
   * normal operation: called by recovery tools (`remus cleanup`) after the
   * process that ran operation `operation` died without tearing down (even
   * SIGKILL), with the devices that run had. Finds its objects by the tag
   * it put on them (see {@link OpContext.operation}), removes them, and
   * returns one line per object removed. Idempotent: nothing found, nothing
   * removed, empty result.
   */
  reap?(operation: string, devices: readonly DeviceSpec[], ctx: OpContext): MaybePromise<readonly string[]>;

  /**
   * Figures for progress displays (packets held, released, dropped...).
   * Optional. Synchronous, cheap, no I/O; may be called at any time between
   * setup and teardown.
   */
  stats?(handle: DeviceHandle<S, D>): Readonly<Record<string, number>>;
}

/** An ordered list of subkinds: the first that matches a device takes it. */
export type OpsList = readonly SubkindOps[];

/** Identity helper that types a subkind (and checks it at compile time). */
export function defineSubkind<S, D>(ops: SubkindOps<S, D>): SubkindOps<S, D> {
  return ops;
}
