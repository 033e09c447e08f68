/**
 * The `disk-drbd` subkind: a Remus checkpoint barrier on a DRBD disk.
 *
 * Per operation, `init` opens one DRBD state source (by default the kernel's
 * `/proc/drbd`, read through one file handle). `match` and `setup` find the
 * device and refuse a DRBD device that cannot carry checkpoints with a
 * DEVICE_NOT_READY error naming the fix. At every checkpoint, `postsuspend`
 * checks the device is still replicating and `preresume` waits, bounded,
 * until the kernel reports no write of this device unanswered by the peer.
 * The checkpoint ops only read the state source: they spawn nothing.
 */
import {
  isRemusError,
  noMatch,
  pollUntil,
  RemusError,
  runScript,
  validateDuration,
  withDeadline,
  type DeviceHandle,
  type MatchResult,
  type OpContext,
  type SubkindOps,
  checkOptionNames,
} from '@remus/core';
import { openProcDrbd, type DrbdMinorState, type DrbdStateSource, type DrbdStateSourceFactory } from './state.js';
import { classifyPath, readParams, resourceMinor, resourceOfMinor, unusable, type DrbdTarget, type Unusable } from './target.js';

/**
 * Remus checkpoint ioctls of a DRBD patched for protocol D (the DRBD 8.3.11
 * patch Xen's Remus used): ioctl 20 sends a checkpoint, ioctl 30 waits for
 * the backup's acknowledgement. Node cannot issue ioctls, so a native binding
 * provides them. Used only for devices whose protocol is `D`.
 */
export interface DrbdCheckpointIoctls {
  /** Opens the control descriptor of a device (Xen: `open(path, O_RDONLY)`), in `setup`. */
  open(path: string): Promise<DrbdCheckpointChannel>;
}

/** One device's control descriptor for the protocol D ioctls. */
export interface DrbdCheckpointChannel {
  /** Ioctl 20 (SEND_CHECKPOINT), in `postsuspend`. Must not block. */
  sendCheckpoint(): Promise<void>;
  /** Ioctl 30 (WAIT_CHECKPOINT_ACK), in `preresume`. Must give up when `signal` fires. */
  waitCheckpointAck(signal: AbortSignal): Promise<void>;
  /** Closes the descriptor, in `teardown`. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link diskDrbd}. All optional. */
export interface DiskDrbdOptions {
  /**
   * An operator's probe script, used instead of the built-in probe by
   * `match` and `setup`. Called as `probe DEVICE_PATH`, with Xen's
   * `block-drbd-probe` exit codes: 0 DRBD and ready, 1 not a DRBD device
   * ("not mine"), 2 unknown error, 3 not configured for the Remus protocol,
   * 4 not Connected or not Primary/Secondary. 2, 3 and 4 fail the device.
   */
  readonly probe?: string;
  /** Time limit of one probe run, ms. Default 10 000. */
  readonly probeTimeoutMs?: number;
  /**
   * Bound on the checkpoint barrier (the wait in `preresume`), ms. Default
   * 5 000. The subkind's `preresume` timeout is this plus one second, so the
   * barrier's own, more precise error wins over the core's TIMEOUT.
   */
  readonly barrierTimeoutMs?: number;
  /** Pause between two reads of the state while the barrier waits, ms. Default 1. */
  readonly pollIntervalMs?: number;
  /** `drbdsetup` command, to find a resource's minor in `match`/`setup` only. Default `drbdsetup` (drbd-utils 9 runs `drbdsetup-84` itself on a DRBD 8.4 kernel). */
  readonly drbdsetup?: string;
  /** Makes the operation's state source. Default: {@link openProcDrbd} on `/proc/drbd`. Must not spawn per refresh. */
  readonly stateSource?: DrbdStateSourceFactory;
  /** Protocol D checkpoint ioctls; without them, a protocol D device is refused. */
  readonly checkpointIoctls?: DrbdCheckpointIoctls;
}

/** What `init` makes: the operation's one state source (private to this subkind). */
interface DiskDrbdShared {
  readonly source: DrbdStateSource;
}

/**
 * Per-device data (private to this subkind). Invariants: `target` is set by
 * `setup` once the device resolved; `channel` only for protocol D devices,
 * from setup until teardown; `suspended` is true between a successful
 * `postsuspend` and the end of that checkpoint's `preresume`.
 */
interface DiskDrbdData {
  target: DrbdTarget | undefined;
  channel: DrbdCheckpointChannel | undefined;
  suspended: boolean;
  /** Requests not yet completed (`ap`) and not yet answered by the peer (`pe`) when the domain was suspended. */
  pendingAtSuspend: number;
  checkpoints: number;
  lastBarrierMs: number;
  maxBarrierMs: number;
}

type Handle = DeviceHandle<DiskDrbdShared, DiskDrbdData>;

/** The subkind's name, as it appears in errors and events. */
export const SUBKIND = 'disk-drbd';

/** What Xen's probe exit codes mean, for messages. */
const PROBE_EXIT: Readonly<Record<number, string>> = {
  2: 'an unknown error',
  3: 'that the device is not configured for the Remus protocol',
  4: 'that the device is not Connected or not Primary here',
};

/**
 * Makes the `disk-drbd` subkind (kind `disk`). Devices are named by
 * `params.path` (`/dev/drbd0`, `/dev/drbd/by-res/r0/0`) and/or
 * `params.resource` (with `params.volume` when the resource has several).
 */
export function diskDrbd(options: DiskDrbdOptions = {}): SubkindOps<DiskDrbdShared, DiskDrbdData> {
  checkOptionNames(options, ['probe', 'probeTimeoutMs', 'barrierTimeoutMs', 'pollIntervalMs', 'drbdsetup', 'stateSource', 'checkpointIoctls'], SUBKIND);
  const probeTimeoutMs = positive(options.probeTimeoutMs, 'probeTimeoutMs') ?? 10_000;
  const barrierTimeoutMs = positive(options.barrierTimeoutMs, 'barrierTimeoutMs') ?? 5_000;
  const pollIntervalMs = positive(options.pollIntervalMs, 'pollIntervalMs') ?? 1;
  const drbdsetup = options.drbdsetup ?? 'drbdsetup';
  const openSource = options.stateSource ?? (() => openProcDrbd());
  if (options.probe !== undefined && (typeof options.probe !== 'string' || options.probe === '')) {
    throw new RemusError('INVALID_ARGUMENT', `${SUBKIND}: probe must be the path of a script`);
  }
  const protocolD = options.checkpointIoctls !== undefined;

  /** The device's DRBD target, or why it is not mine. Throws for DRBD devices that cannot be used. */
  const decide = async (h: Handle, ctx: OpContext): Promise<DrbdTarget | { match: false; reason: string }> => {
    const params = readParams(h.device);
    if (params.path === undefined && params.resource === undefined) {
      return noMatch(`${h.device.id} has neither params.path nor params.resource, so it names no DRBD device`);
    }
    const minorOfResource =
      params.resource === undefined ? undefined : await requireLoaded(h.shared.source, params.resource, () =>
        resourceMinor(drbdsetup, params.resource!, params.volume, ctx.signal),
      );
    const path = params.path ?? `/dev/drbd${minorOfResource!}`;
    if (options.probe !== undefined) {
      const verdict = await runProbe(options.probe, path, probeTimeoutMs, ctx.signal);
      if (verdict !== true) return verdict;
    }
    const kind = await classifyPath(path);
    if (!kind.drbd) {
      if (options.probe !== undefined) {
        throw notReady(h, `the probe ${options.probe} said ${path} is a ready DRBD device, but ${kind.reason}`, 'fix the probe or params.path');
      }
      if (params.resource !== undefined) {
        throw new RemusError('INVALID_ARGUMENT', `${h.device.id}: params.resource is ${params.resource}, but ${kind.reason}`, { device: h.device.id });
      }
      return noMatch(kind.reason);
    }
    if (minorOfResource !== undefined && minorOfResource !== kind.minor) {
      throw new RemusError(
        'INVALID_ARGUMENT',
        `${h.device.id}: ${path} is DRBD minor ${kind.minor}, but resource ${params.resource} is minor ${minorOfResource}: give one of them, or matching ones`,
        { device: h.device.id },
      );
    }
    const resource = params.resource ?? (await resourceOfMinor(drbdsetup, kind.minor, ctx.signal));
    const target: DrbdTarget = { path, minor: kind.minor, resource };
    if (options.probe === undefined) {
      const status = await h.shared.source.refresh();
      const bad = unusable(status.minors.get(kind.minor), resource, protocolD);
      if (bad) throw unusableError(h, target, bad, 'cannot be protected');
    }
    return target;
  };

  return {
    name: SUBKIND,
    kind: 'disk',
    timeouts: {
      preresume: barrierTimeoutMs + 1_000,
      match: probeTimeoutMs + 20_000,
      setup: probeTimeoutMs + 20_000,
    },

    /** Opens the operation's one DRBD state source. A host without the DRBD module still gets one (it lists no devices). */
    async init(): Promise<DiskDrbdShared> {
      return { source: await openSource() };
    },

    /** Closes the state source. */
    async cleanup(shared: DiskDrbdShared): Promise<void> {
      await shared?.source.close();
    },

    /**
     * Not a DRBD device (a file, a loop device, no path): "not mine". A DRBD
     * device that cannot be protected (not Primary here, not Connected, peer
     * disk not UpToDate, unknown resource, wrong protocol): throws
     * DEVICE_NOT_READY saying which and how to fix it. Changes nothing.
     */
    async match(h: Handle, ctx: OpContext): Promise<MatchResult> {
      const verdict = await decide(h, ctx);
      return 'minor' in verdict ? true : verdict;
    },

    /**
     * Resolves the device again (setup may run without match), checks it is
     * usable, and for a protocol D device opens its control descriptor.
     * Touches neither the resource's role nor its configuration.
     */
    async setup(h: Handle, ctx: OpContext): Promise<void> {
      h.data ??= { target: undefined, channel: undefined, suspended: false, pendingAtSuspend: 0, checkpoints: 0, lastBarrierMs: 0, maxBarrierMs: 0 };
      const verdict = await decide(h, ctx);
      if (!('minor' in verdict)) throw notReady(h, `is not a DRBD device: ${verdict.reason}`, 'give the path of a DRBD device (/dev/drbdN) or a resource name');
      h.data.target = verdict;
      const state = h.shared.source.current().minors.get(verdict.minor);
      if (state?.protocol === 'D' && options.checkpointIoctls) {
        h.data.channel = await options.checkpointIoctls.open(verdict.path);
      }
    },

    /** Releases what setup holds (a protocol D descriptor). Never changes the resource. Idempotent. */
    async teardown(h: Handle): Promise<void> {
      const data = h.data;
      if (!data) return;
      const channel = data.channel;
      data.channel = undefined;
      data.suspended = false;
      await channel?.close();
    },

    /**
     * Reads the state (no process) and fails the checkpoint when the device
     * stopped replicating since the last one; records what was in flight.
     * Protocol D: sends the checkpoint (ioctl 20).
     */
    async postsuspend(h: Handle, ctx: OpContext): Promise<void> {
      const data = ready(h);
      data.suspended = false;
      const state = await stateOf(h, data.target!, ctx, 'when the domain was suspended');
      data.pendingAtSuspend = (state.counters['ap'] ?? 0) + (state.counters['pe'] ?? 0);
      if (data.channel) await data.channel.sendCheckpoint();
      data.suspended = true;
    },

    /**
     * The checkpoint barrier: waits until every write issued before the
     * suspend is acknowledged by the peer (protocol C: no application request
     * pending, none unanswered by the peer, nothing out of sync, still
     * Connected and peer UpToDate), at most `barrierTimeoutMs`. Fails at once
     * when the peer disconnects or its disk stops being UpToDate.
     */
    async preresume(h: Handle, ctx: OpContext): Promise<void> {
      const data = ready(h);
      if (!data.suspended) {
        throw new RemusError('STATE', `${data.target!.path}: preresume without a successful postsuspend in checkpoint ${ctx.checkpoint}`);
      }
      data.suspended = false;
      const started = performance.now();
      const what = `the checkpoint barrier of ${describe(data.target!)}`;
      const channel = data.channel;
      let last: DrbdMinorState | undefined;
      try {
        if (channel) {
          await withDeadline((signal) => channel.waitCheckpointAck(signal), { what, timeoutMs: barrierTimeoutMs, signal: ctx.signal });
        } else {
          await pollUntil(async () => drained((last = await stateOf(h, data.target!, ctx, 'during the checkpoint barrier'))), {
            what,
            timeoutMs: barrierTimeoutMs,
            intervalMs: pollIntervalMs,
            signal: ctx.signal,
          });
        }
      } catch (e) {
        // The barrier's own bound (not the caller's signal): its error names the counters still pending.
        if (isRemusError(e, 'TIMEOUT') && !ctx.signal.aborted) throw barrierTimeout(h, data, ctx, last);
        throw e;
      }
      const ms = performance.now() - started;
      data.checkpoints++;
      data.lastBarrierMs = ms;
      data.maxBarrierMs = Math.max(data.maxBarrierMs, ms);
    },

    /** Checkpoints passed, in-flight requests at the last suspend, barrier times (ms). */
    stats(h: Handle): Readonly<Record<string, number>> {
      const d = h.data;
      return {
        checkpoints: d?.checkpoints ?? 0,
        pendingAtSuspend: d?.pendingAtSuspend ?? 0,
        lastBarrierMs: d?.lastBarrierMs ?? 0,
        maxBarrierMs: d?.maxBarrierMs ?? 0,
      };
    },
  };

  /** The device's state now, or a DEVICE_NOT_READY error that says what broke and what it means for the checkpoint. */
  async function stateOf(h: Handle, target: DrbdTarget, ctx: OpContext, when: string): Promise<DrbdMinorState> {
    const status = await h.shared.source.refresh();
    const state = status.minors.get(target.minor);
    const bad = unusable(state, target.resource, protocolD);
    if (bad) {
      throw unusableError(
        h,
        target,
        bad,
        `failed checkpoint ${ctx.checkpoint} ${when}: the backup's disk does not hold this checkpoint (writes since the last checkpoint may be missing there)`,
      );
    }
    return state!;
  }
}

/** True when no request of the device is pending locally or at the peer and nothing is out of sync. */
function drained(state: DrbdMinorState): boolean {
  const c = state.counters;
  return c['ap'] === 0 && c['pe'] === 0 && (c['oos'] ?? 0) === 0;
}

function ready(h: Handle): DiskDrbdData {
  if (!h.data?.target) throw new RemusError('STATE', `${h.device.id}: checkpoint op before a successful setup`);
  return h.data;
}

function barrierTimeout(h: Handle, data: DiskDrbdData, ctx: OpContext, state: DrbdMinorState | undefined): RemusError {
  const t = data.target!;
  const c = state?.counters ?? {};
  const counts = state ? ` (still ap:${c['ap']} pe:${c['pe']} oos:${c['oos'] ?? 0}; ${data.pendingAtSuspend} were pending at the suspend)` : '';
  return new RemusError(
    'TIMEOUT',
    `${describe(t)} failed checkpoint ${ctx.checkpoint}: the peer did not acknowledge every write issued before the suspend within the barrier bound${counts}: the backup is too slow or the replication link stalls; check the link and the backup's disk, or raise barrierTimeoutMs`,
    { device: h.device.id, details: { minor: t.minor, resource: t.resource, counters: { ...c } } },
  );
}

function describe(t: DrbdTarget): string {
  return t.resource === undefined ? `DRBD disk ${t.path}` : `DRBD disk ${t.path} (resource ${t.resource})`;
}

function unusableError(h: Handle, t: DrbdTarget, bad: Unusable, consequence: string): RemusError {
  return new RemusError('DEVICE_NOT_READY', `${describe(t)} ${bad.problem}; it ${consequence}. Fix: ${bad.fix}`, {
    device: h.device.id,
    details: { path: t.path, minor: t.minor, resource: t.resource, xenExitCode: bad.xenExitCode },
  });
}

function notReady(h: Handle, problem: string, fix: string): RemusError {
  return new RemusError('DEVICE_NOT_READY', `${h.device.id} ${problem}. Fix: ${fix}`, { device: h.device.id });
}

/** Resolves a resource name, first making sure DRBD is loaded at all (a clearer error than drbdsetup's). */
async function requireLoaded<T>(source: DrbdStateSource, resource: string, body: () => Promise<T>): Promise<T> {
  if (!source.loaded) {
    throw new RemusError('UNSUPPORTED_HOST', `DRBD resource ${resource} was asked for, but the DRBD kernel module is not loaded: \`modprobe drbd\` and bring the resource up`);
  }
  return body();
}

/** Runs the operator's probe: true (ready), a NoMatch (exit 1), or throws DEVICE_NOT_READY (2, 3, 4) / SCRIPT_FAILED (others). */
async function runProbe(probe: string, path: string, timeoutMs: number, signal: AbortSignal): Promise<true | { match: false; reason: string }> {
  const r = await runScript(probe, [path], { timeoutMs, signal, okExitCodes: [0, 1, 2, 3, 4] });
  if (r.exitCode === 0) return true;
  const said = r.stderr.trim().split('\n').slice(-3).join(' | ') || r.stdout.trim().split('\n').slice(-3).join(' | ');
  if (r.exitCode === 1) return noMatch(`the probe ${probe} says ${path} is not a DRBD device${said ? ` (${said})` : ''}`);
  throw new RemusError(
    'DEVICE_NOT_READY',
    `the probe ${probe} reports ${PROBE_EXIT[r.exitCode]} for ${path} (exit ${r.exitCode})${said ? `: ${said}` : ''}. Fix: make the DRBD resource Primary here, Connected, with the peer disk UpToDate, as the probe requires`,
    { details: { path, probe, exitCode: r.exitCode } },
  );
}

function positive(v: number | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (validateDuration(v, `${SUBKIND}: ${name}`) <= 0) {
    throw new RemusError('INVALID_ARGUMENT', `${SUBKIND}: ${name} must be a positive number of milliseconds`);
  }
  return v;
}
