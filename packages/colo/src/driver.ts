/**
 * The COLO driver: from a description of the two sides (QMP sockets of
 * running QEMUs started with the COLO command lines, their pids, addresses),
 * it sets both sides up, starts replication (x-colo migration with a
 * checkpoint delay), reports status and figures from QEMU's events, and runs
 * a watchdog that fails over to the survivor when the peer dies or hangs.
 *
 * {@link ColoPair} is the state machine; beside it: the start plan as data
 * (start.ts), the watchdog (watchdog.ts), fencing and failover (fence.ts),
 * the checkpoint figures (figures.ts).
 *
 * Rule: a promoted secondary is never torn down (see {@link ColoPair.stop}).
 */
import { EventEmitter } from 'node:events';
import {
  RemusError,
  createCheckpointDevices,
  describeCause,
  isRemusError,
  newOperationId,
  nextEvent,
  pollUntil,
  type CheckpointDevices,
  type DeviceSpec,
  type OpsList,
  type SocketAddress,
} from '@remus/core';
import { QmpPool, connectQmp, type QmpClient, type QmpEvent, type QmpLease } from '@remus/qmp';
import { failOverTo, type ColoNetworkFence } from './fence.js';
import { CheckpointFigures, now } from './figures.js';
import { coloIds } from './ids.js';
import type { ColoRole } from './params.js';
import type { ColoQemuOptions } from './qemu.js';
import { newResync, undoResync, type ResyncState } from './resync.js';
import { runStartSteps, startPlan, waitColo, type StartContext } from './start.js';
import { coloPrimaryOps, coloSecondaryOps } from './subkinds.js';
import { startWatchdog, type ColoWatchdogOptions, type Watchdog } from './watchdog.js';

export type { ColoRole } from './params.js';
export type { ColoNetworkFence } from './fence.js';

/** One side of the pair. */
export interface ColoSide {
  /** QMP socket for commands (shared with the side's @remus/colo subkinds through one pool). */
  readonly qmp: string | SocketAddress;
  /**
   * The side's COLO devices for @remus/colo's ops list: a `nic` and a `disk`
   * with the params of COLO_DEVICE_PARAMS[side] (ColoPrimaryNicParams ... ).
   */
  readonly devices: readonly DeviceSpec[];
  /** A second QMP socket for events and liveness probes (recommended: a busy command connection cannot hide a death). */
  readonly qmpEvents?: string | SocketAddress;
  /** Pid of the QEMU process on this host: liveness ("process gone") and fencing (SIGKILL). */
  readonly pid?: number;
}

export interface ColoPairOptions {
  readonly primary: ColoSide;
  readonly secondary: ColoSide;
  /** Where the secondary listens for the migration (as given to its -incoming), e.g. `tcp:127.0.0.1:9998`. */
  readonly migrationUri: string;
  /** x-checkpoint-delay: the period of checkpoints when outputs agree, ms. Default 2000. */
  readonly checkpointDelayMs?: number;
  /** Operation id tagging what the subkinds add to QEMU (names their ids: {@link coloIds}). Default: a fresh one. */
  readonly operationId?: string;
  /** Attaches a side to the clients' network and detaches it (fencing). Without it (and without pids) the driver cannot fence. */
  readonly fence?: ColoNetworkFence;
  /** Watchdog bounds ({@link DEFAULT_WATCHDOG}), or `false`: no watchdog (failover only by {@link ColoPair.failover}). */
  readonly watchdog?: ColoWatchdogOptions | false;
  /** Progress and decisions, as they happen (synchronous; a listener that throws is ignored). */
  readonly onEvent?: (e: ColoDriverEvent) => void;
  /** Bound of QMP commands, ms. Default 10000. */
  readonly commandTimeoutMs?: number;
}

/**
 * The pair's states. Transitions (the only ones {@link ColoPair} makes, all
 * through one place that fires the `state` event and wakes waiters):
 * connected → starting → replicating → failing-over → failed-over;
 * connected / starting → failed (a side died, or start failed);
 * failing-over → failed (a failover step failed);
 * connected / starting / replicating → stopped (close).
 * failed-over, failed and stopped are final.
 */
export type ColoState = 'connected' | 'starting' | 'replicating' | 'failing-over' | 'failed-over' | 'stopped' | 'failed';

const TRANSITIONS: Readonly<Record<ColoState, readonly ColoState[]>> = {
  connected: ['starting', 'failed', 'stopped'],
  starting: ['replicating', 'failed', 'stopped'],
  replicating: ['failing-over', 'stopped'],
  'failing-over': ['failed-over', 'failed'],
  'failed-over': [],
  failed: [],
  stopped: [],
};

export type ColoDriverEvent =
  | { type: 'step'; side: ColoRole; step: string; ms: number }
  | { type: 'state'; state: ColoState }
  | { type: 'checkpoint'; index: number; pauseMs: number; onDemand: boolean }
  | { type: 'peer-failure'; side: ColoRole; why: string }
  | { type: 'failover'; survivor: ColoRole; why: string; ms: number }
  | { type: 'error'; error: RemusError };

/** Figures and state, from QEMU's events. Times in ms. */
export interface ColoStatus {
  readonly state: ColoState;
  /** Serving side (primary until a failover). */
  readonly active: ColoRole;
  /** Checkpoints completed (a STOP followed by a RESUME on the primary while in COLO). */
  readonly checkpoints: number;
  /** Checkpoints that came sooner than the delay: forced by colo-compare on divergent output. */
  readonly onDemandCheckpoints: number;
  /** From start() to the end of the first checkpoint. */
  readonly timeToFirstCheckpointMs?: number | undefined;
  /** Pause per checkpoint (STOP to RESUME, QEMU's own timestamps). */
  readonly pauseMs: { readonly p50?: number | undefined; readonly p99?: number | undefined; readonly max?: number | undefined; readonly count: number };
  /** Why and when replication ended, after a failover. */
  readonly failover?: {
    readonly survivor: ColoRole;
    readonly why: string;
    /** When the failure was noticed (or the manual failover asked for), ms since the epoch. */
    readonly detectedAt: number;
    /** When the survivor's sequence and the network switch were done, ms since the epoch. */
    readonly doneAt: number;
    /** QEMU ids the survivor's sequence left in place on purpose (on a promoted secondary: its filter-rewriter). */
    readonly kept: readonly string[];
    /** True when {@link ColoPair.stop} asked for it (the planned end of replication, not a failure: nothing to reprotect). */
    readonly byStop?: boolean;
  };
  /** After a start with `resync` (reprotect): what the disk mirror copied and how long the VM was paused. */
  readonly resync?: {
    /** Bytes the mirrors copied to the secondary (the disks' size: sync full). */
    readonly bytes: number;
    /** From the mirrors' start to all of them ready (the guest ran meanwhile). */
    readonly mirrorMs: number;
    /** From `stop` (mirrors ready) until both sides were in COLO: the only pause of the guest. */
    readonly pausedMs: number;
  };
}

/** Options of {@link ColoPair.start}. */
export interface ColoStartOptions {
  /** Bound of the whole start after the plan's steps (until both sides are in COLO), ms. Default 120000. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /**
   * The primary is already running (a survivor after a failover, or any
   * running VM): first mirror its disks into the secondary's NBD exports
   * while it runs, then stop it, set up and migrate (QEMU's "resume
   * replication"). `true` or `{ timeoutMs }`: bound for the mirrors to be
   * ready, default 600000. On failure the primary runs again, unprotected.
   */
  readonly resync?: boolean | { readonly timeoutMs?: number };
}

interface SideConn {
  readonly role: ColoRole;
  readonly spec: ColoSide;
  /** Lease on the pooled command connection (the subkinds share it). */
  readonly lease: QmpLease;
  readonly cmd: QmpClient;
  /** Events and watchdog probes: a second monitor when given, else `cmd`. */
  readonly ev: QmpClient;
  /** The side's device layer (@remus/colo ops list on @remus/core). */
  readonly layer: CheckpointDevices;
}

/**
 * A COLO pair under this driver. Create it with {@link ColoPair.connect};
 * then {@link ColoPair.start}. All methods are async; every QMP wait is
 * bounded by `commandTimeoutMs`.
 *
 * Invariants: the state changes only in `#setState`, along
 * {@link ColoState}'s transitions; at most one failover ever runs (`#failoverRun`);
 * the watchdog runs only while `replicating`; after {@link ColoPair.close}
 * no timer, listener or socket of the driver remains.
 */
export class ColoPair {
  readonly #opts: ColoPairOptions;
  readonly #operation: string;
  readonly #sides: Record<ColoRole, SideConn>;
  /** Aborted by close(): ends the failover's waits and the fence's commands. */
  readonly #abort = new AbortController();
  /** Emits `state` on every change (for waitForState). */
  readonly #changes = new EventEmitter();
  #state: ColoState = 'connected';
  #active: ColoRole = 'primary';
  readonly #figures: CheckpointFigures;
  #failover?: NonNullable<ColoStatus['failover']>;
  #failoverRun?: Promise<void>;
  /** Set by stop() before its failover to the primary. */
  #stopping = false;
  #watchdog?: Watchdog;
  #resync?: ColoStatus['resync'];
  readonly #unsubscribe: (() => void)[] = [];

  private constructor(opts: ColoPairOptions, operation: string, sides: Record<ColoRole, SideConn>) {
    this.#opts = opts;
    this.#operation = operation;
    this.#sides = sides;
    this.#figures = new CheckpointFigures(opts.checkpointDelayMs ?? 2000);
  }

  /**
   * Connects to both sides' QMP (commands through a pool of this pair's own,
   * shared with the sides' @remus/colo subkinds; events on the second
   * monitor) and builds each side's device layer. Retries every 100 ms while
   * the sockets do not answer yet; rejects with TIMEOUT (naming the last
   * failure) or ABORTED, nothing left open, when a side does not answer
   * within `timeoutMs` (default 30000).
   */
  static async connect(opts: ColoPairOptions, timeoutMs = 30_000, signal?: AbortSignal): Promise<ColoPair> {
    const pool = new QmpPool();
    const operation = opts.operationId ?? newOperationId();
    const commandTimeoutMs = opts.commandTimeoutMs ?? 10_000;
    const leases: QmpLease[] = [];
    const direct: QmpClient[] = [];
    const retry = <T>(what: string, open: (signal: AbortSignal) => Promise<T>): Promise<T> => {
      let last: unknown;
      return pollUntil(
        // The socket may not exist yet while QEMU starts: any failure is retried until the bound.
        (s) => open(s).catch((e: unknown) => void (last = e)),
        { what, timeoutMs, intervalMs: 100, describe: () => describeCause(last) ?? 'no attempt finished', ...(signal ? { signal } : {}) },
      ) as Promise<T>;
    };
    try {
      const side = async (role: ColoRole, spec: ColoSide): Promise<SideConn> => {
        const lease = await retry(`colo: the ${role}'s QMP socket to answer`, (s) => pool.acquire(spec.qmp, { timeoutMs: 5000, signal: s, commandTimeoutMs }));
        leases.push(lease);
        let ev = lease.client;
        if (spec.qmpEvents !== undefined) {
          ev = await retry(`colo: the ${role}'s QMP events socket to answer`, (s) => connectQmp(spec.qmpEvents!, { timeoutMs: 5000, signal: s, commandTimeoutMs }));
          direct.push(ev);
        }
        const o: ColoQemuOptions = { qmp: spec.qmp, pool, commandTimeoutMs };
        const ops: OpsList = role === 'primary' ? coloPrimaryOps(o) : coloSecondaryOps(o);
        const layer = createCheckpointDevices({ ops, devices: spec.devices, operationId: operation });
        return { role, spec, lease, cmd: lease.client, ev, layer };
      };
      const secondary = await side('secondary', opts.secondary);
      const primary = await side('primary', opts.primary);
      const pair = new ColoPair(opts, operation, { primary, secondary });
      pair.#listen();
      return pair;
    } catch (e) {
      await Promise.all([...leases.map((l) => l.release()), ...direct.map((c) => c.close().catch(() => {}))]);
      throw e;
    }
  }

  /** Current state and figures. */
  status(): ColoStatus {
    return { state: this.#state, active: this.#active, ...this.#figures.summary(), failover: this.#failover, ...(this.#resync ? { resync: this.#resync } : {}) };
  }

  /** The QMP command connection of a side (for callers' own queries). */
  qmp(role: ColoRole): QmpClient {
    return this.#sides[role].cmd;
  }

  #emit(e: ColoDriverEvent): void {
    try {
      this.#opts.onEvent?.(e);
    } catch {
      /* a listener must not break the driver */
    }
  }

  /** The one place the state changes: checks the transition, fires the `state` event, wakes waiters. */
  #setState(next: ColoState): void {
    if (!TRANSITIONS[this.#state].includes(next)) throw new RemusError('STATE', `colo: no transition from ${this.#state} to ${next}`);
    this.#state = next;
    if (next !== 'replicating') this.#stopWatchdog();
    this.#emit({ type: 'state', state: next });
    this.#changes.emit('state', next);
  }

  #listen(): void {
    for (const side of Object.values(this.#sides)) {
      this.#unsubscribe.push(side.ev.onEvent((e) => this.#onEvent(side.role, e)));
      for (const c of new Set([side.cmd, side.ev])) {
        void c.whenClosed().then(() => this.#peerFailed(side.role, 'QMP connection closed'));
      }
    }
  }

  /** What the watchdog learns from QEMU's events (both sides); the primary's also give the checkpoint figures. */
  #onEvent(side: ColoRole, e: QmpEvent): void {
    const peer: ColoRole = side === 'primary' ? 'secondary' : 'primary';
    switch (e.event) {
      case 'QUORUM_REPORT_BAD': {
        const node = (e.data as { 'node-name'?: string })['node-name'];
        if (side === 'primary' && node !== undefined && this.#replicationNodes().includes(node)) void this.#peerFailed('secondary', `QUORUM_REPORT_BAD on ${node}`);
        return;
      }
      case 'COLO_EXIT':
        if ((e.data as { reason?: string }).reason === 'error') void this.#peerFailed(peer, `COLO_EXIT (error) on the ${side}`);
        return;
      case 'SHUTDOWN':
        void this.#peerFailed(side, `${side} QEMU shut down`);
        return;
      default: {
        if (side !== 'primary') return;
        const checkpoint = this.#figures.onEvent(e);
        if (checkpoint) this.#emit({ type: 'checkpoint', ...checkpoint });
      }
    }
  }

  /** The primary's replication nodes (QUORUM_REPORT_BAD on one of them: the secondary's disk fell behind). */
  #replicationNodes(): string[] {
    return this.#opts.primary.devices.filter((d) => d.kind === 'disk').map((d) => coloIds(this.#operation, d.id).primaryDisk.node);
  }

  #startContext(signal: AbortSignal | undefined, resync: ResyncState | undefined): StartContext {
    const side = (r: ColoRole) => ({ cmd: this.#sides[r].cmd, layer: this.#sides[r].layer, devices: this.#opts[r].devices });
    return {
      operation: this.#operation,
      migrationUri: this.#opts.migrationUri,
      checkpointDelayMs: this.#opts.checkpointDelayMs ?? 2000,
      sides: { primary: side('primary'), secondary: side('secondary') },
      signal,
      ...(resync ? { resync } : {}),
    };
  }

  /**
   * Starts replication: runs the start plan (start.ts: the secondary's
   * devices, the primary's, the proxy connected, x-colo on both, the
   * checkpoint delay, the migration), then waits until both sides report
   * COLO mode (bounded by `timeoutMs`, default 120000). Rejects with the
   * failed step's error and context (`colo <side>: <step> failed: ...`; the
   * device layer's PHASE_FAILED keeps its code, anything else OP_FAILED),
   * TIMEOUT or ABORTED; what either side set up is torn down again (with
   * `resync`: the mirrors and NBD clients too, and the primary runs again).
   * Starts the watchdog unless disabled.
   */
  async start(options: ColoStartOptions = {}): Promise<void> {
    if (this.#state !== 'connected') throw new RemusError('STATE', `colo: start() in state ${this.#state}`);
    this.#setState('starting');
    this.#figures.startedAt = now();
    const rs = options.resync;
    const resync: ResyncState | undefined = rs ? newResync((typeof rs === 'object' ? rs.timeoutMs : undefined) ?? 600_000) : undefined;
    const ctx = this.#startContext(options.signal, resync);
    try {
      await runStartSteps(startPlan(resync !== undefined), ctx, (s, ms) => this.#emit({ type: 'step', side: s.side, step: s.step, ms }));
      await waitColo(ctx, {
        timeoutMs: options.timeoutMs ?? 120_000,
        inColo: () => this.#figures.inColo,
        setInColo: () => void (this.#figures.inColo = true),
        starting: () => this.#state === 'starting',
      });
      if ((this.#state as ColoState) !== 'starting') throw new RemusError('STATE', `colo: replication did not start (state ${this.#state})`);
    } catch (e) {
      if ((this.#state as ColoState) === 'starting') this.#setState('failed');
      // What either side set up goes again (a failed setup already tore its own side down).
      await this.#sides.primary.layer.teardown().catch(() => {});
      await this.#sides.secondary.layer.teardown().catch(() => {});
      if (resync) {
        const left = await undoResync(this.#sides.primary.cmd, resync).catch((u: unknown) => [String(u)]);
        if (left.length > 0 && isRemusError(e)) Object.assign(e.details, { resyncUndo: left });
      }
      throw e;
    }
    if (resync) {
      this.#resync = { bytes: resync.bytes, mirrorMs: resync.mirrorMs ?? 0, pausedMs: resync.stoppedAt === undefined ? 0 : performance.now() - resync.stoppedAt };
    }
    this.#setState('replicating');
    if (this.#opts.watchdog !== false) {
      const sides = Object.values(this.#sides).map((s) => ({ role: s.role, pid: s.spec.pid, probe: s.ev }));
      this.#watchdog = startWatchdog(sides, this.#opts.watchdog ?? {}, (role, why) => void this.#peerFailed(role, why));
    }
  }

  #stopWatchdog(): void {
    this.#watchdog?.stop();
    this.#watchdog = undefined;
  }

  /** Records that `failed` is dead or hung and fails over to the other side (once). Never rejects. */
  #peerFailed(failed: ColoRole, why: string): Promise<void> {
    // A failover's error goes to its caller or, for the watchdog's, to onEvent.
    if (this.#failoverRun) return this.#failoverRun.catch(() => {});
    if (this.#state === 'starting' || this.#state === 'connected') this.#setState('failed');
    if (this.#state !== 'replicating') return Promise.resolve();
    this.#emit({ type: 'peer-failure', side: failed, why });
    return this.failover(failed === 'primary' ? 'secondary' : 'primary', why).catch((e: unknown) => {
      this.#emit({ type: 'error', error: isRemusError(e) ? e : new RemusError('OP_FAILED', String(e), { cause: e }) });
    });
  }

  /**
   * Fails over to `survivor` (manual failover, or the watchdog's): fences
   * the other side, runs the survivor's sequence and connects it (fence.ts
   * {@link failOverTo}). Runs at most once; a second call returns the first
   * one's promise. Rejects with STATE when not replicating, OP_FAILED naming
   * the step, TIMEOUT when the fenced process outlives its SIGKILL by 5 s.
   */
  failover(survivor: ColoRole, why = 'manual failover'): Promise<void> {
    if (this.#failoverRun) return this.#failoverRun;
    if (this.#state !== 'replicating') return Promise.reject(new RemusError('STATE', `colo: failover in state ${this.#state}`));
    const detectedAt = now();
    this.#setState('failing-over');
    this.#failoverRun = (async () => {
      const failed: ColoRole = survivor === 'primary' ? 'secondary' : 'primary';
      let kept: readonly string[];
      try {
        ({ kept } = await failOverTo(survivor, {
          client: this.#sides[survivor].cmd,
          operation: this.#operation,
          devices: this.#opts[survivor].devices,
          failedPid: this.#sides[failed].spec.pid,
          fence: this.#opts.fence,
          signal: this.#abort.signal,
          onStep: (step, ms) => this.#emit({ type: 'step', side: survivor, step, ms }),
        }));
      } catch (e) {
        this.#setState('failed');
        throw e;
      }
      const doneAt = now();
      this.#active = survivor;
      this.#failover = { survivor, why, detectedAt, doneAt, kept, ...(this.#stopping ? { byStop: true } : {}) };
      this.#setState('failed-over');
      this.#emit({ type: 'failover', survivor, why, ms: doneAt - detectedAt });
    })();
    return this.#failoverRun;
  }

  /** Resolves with the state once it is one of `states`; TIMEOUT after `timeoutMs`, ABORTED on `signal`. */
  async waitForState(states: readonly ColoState[], timeoutMs: number, signal?: AbortSignal): Promise<ColoState> {
    if (states.includes(this.#state)) return this.#state;
    await nextEvent(this.#changes, 'state', {
      what: `colo: the pair to reach state ${states.join('/')} (now ${this.#state})`,
      timeoutMs,
      filter: (s: ColoState) => states.includes(s),
      ...(signal ? { signal } : {}),
    });
    return this.#state;
  }

  /**
   * Ends replication and keeps one side serving, then {@link ColoPair.close}:
   * - still replicating: a failover to the primary (the secondary is
   *   fenced), then the primary's device layer is torn down (what is left
   *   of the proxy: its chardevs);
   * - after a failover to the primary: the same teardown;
   * - after a failover to the secondary: **nothing is torn down on the
   *   promoted secondary** (driver rule). Its failover sequence already
   *   removed what COLO no longer needs; what it kept (`status().failover.kept`:
   *   the filter-rewriter) must stay for the VM's lifetime, because TCP
   *   connections opened under COLO keep needing its sequence-number
   *   translation, and the device layer's teardown would delete it.
   */
  async stop(): Promise<void> {
    if (this.#state === 'replicating') {
      this.#stopping = true;
      await this.failover('primary', 'stop requested');
    }
    else await this.#failoverRun?.catch(() => {});
    if (this.#active === 'primary' && this.#state === 'failed-over') await this.#sides.primary.layer.teardown();
    // this.#active === 'secondary': deliberately no teardown (see above).
    await this.close();
  }

  /**
   * Detaches the driver: stops the watchdog, aborts a failover's waits,
   * lets it end, moves to `stopped` (unless failed or failed over) and
   * closes its QMP connections (the subkinds' too); QEMUs keep running as
   * they are, and QEMU alone cannot notice a dead peer. Idempotent.
   */
  async close(): Promise<void> {
    this.#stopWatchdog();
    this.#abort.abort();
    for (const u of this.#unsubscribe.splice(0)) u();
    await this.#failoverRun?.catch(() => {});
    if (TRANSITIONS[this.#state].includes('stopped')) this.#setState('stopped');
    for (const s of Object.values(this.#sides)) {
      if (s.ev !== s.cmd) await s.ev.close().catch(() => {});
      // The pool is this pair's own: closing the client ends the subkinds' shares too.
      await s.cmd.close().catch(() => {});
      await s.lease.release();
    }
  }
}
