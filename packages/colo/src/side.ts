/**
 * One side of a COLO pair split across two hosts, driven by its own process
 * over its own QMP only, with every failover decided through an
 * {@link Arbiter} (etcd in `@remus/arbiter-etcd`) under fencing epochs.
 *
 * Across hosts nobody can SIGKILL the other side, and a partition looks like
 * a death. So:
 * - The **primary** acquires the role before it starts COLO and serves only
 *   while it holds it. A watch on the role (memory only, every
 *   `lapseCheckMs`) fences it the moment {@link roleLapse} says the role
 *   lapsed: its QEMU is SIGKILLed (by pid, confirmed gone; `stop` over QMP
 *   when no pid is known) and its network detached, so it releases nothing
 *   more. Its deadline falls before the lease's expiry on the arbiter's
 *   server by the arbiter's margin, and the other side promotes only after
 *   that expiry plus a promotion margin: the old primary is stopped first.
 * - The **secondary** campaigns for the role once it is in COLO mode. It
 *   promotes only holding the role (epoch admitted to the host's
 *   {@link EpochStore}), not marked outdated, after the optional hard fence
 *   succeeded: then QEMU's failover sequence on the secondary
 *   ({@link coloFailoverOnSecondary}) and `fence.attach` (its network).
 * - A primary that loses its **secondary** (COLO_EXIT with an error,
 *   QUORUM_REPORT_BAD on its replication node, COLO mode ended with an
 *   error, or no checkpoint completed for `stallMs`) first marks the
 *   secondary outdated with a fenced write ({@link Arbiter.publish}: it
 *   succeeds only while the role is held under its epoch), then runs
 *   {@link coloFailoverOnPrimary} and serves alone. If it cannot mark, it
 *   fences itself: an outdated-unmarked secondary could otherwise promote
 *   later with a state older than what clients saw.
 * - A side whose own QEMU dies or hangs (the watchdog of watchdog.ts over
 *   its own QEMU only) fences itself and resigns (primary) or stops
 *   campaigning (secondary).
 *
 * The start is the pair's start plan (start.ts) split by side: the
 * secondary runs its steps and reports `ready` before the step that waits
 * for the primary; the primary must be started after that (by whoever runs
 * the two processes: the lab, an agent).
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
  roleLapse,
  sleep,
  type Arbiter,
  type CheckpointDevices,
  type DeviceSpec,
  type EpochStore,
  type SocketAddress,
} from '@remus/core';
import { QmpPool, connectQmp, type QmpClient, type QmpEvent, type QmpLease } from '@remus/qmp';
import { coloFailoverOnPrimary, coloFailoverOnSecondary } from './failover.js';
import { KILL_CONFIRM_MS, killAndConfirm } from './fence.js';
import { CheckpointFigures, now } from './figures.js';
import { coloIds } from './ids.js';
import type { ColoRole } from './params.js';
import type { ColoQemuOptions } from './qemu.js';
import { undoResync, type ResyncState } from './resync.js';
import { runStartSteps, sideStartPlan, startPlan, type StartContext } from './start.js';
import { coloPrimaryOps, coloSecondaryOps } from './subkinds.js';
import { startWatchdog, type ColoWatchdogOptions, type Watchdog } from './watchdog.js';

/** What connects this side's QEMU to the clients' network and takes it off. */
export interface ColoSideFence {
  /** Connects this side (a promoted secondary) to the clients' network. */
  attach(signal: AbortSignal): Promise<void>;
  /** Takes this side off the clients' network; must succeed when it already is off. */
  detach(signal: AbortSignal): Promise<void>;
}

export interface ColoSideOptions {
  /** The COLO role this side starts in. */
  readonly role: ColoRole;
  /** This host's name (events, status, the outdated record). */
  readonly host: string;
  /** The other host's name. */
  readonly peer: string;
  /** This side's QEMU: command monitor (shared with its @remus/colo subkinds through one pool). */
  readonly qmp: string | SocketAddress;
  /** A second monitor for events and the watchdog's probes (recommended). */
  readonly qmpEvents?: string | SocketAddress;
  /** Pid of this side's QEMU (same host): its watchdog, and SIGKILL when it must release nothing more. */
  readonly pid?: number;
  /** This side's COLO devices (COLO_DEVICE_PARAMS[role]). */
  readonly devices: readonly DeviceSpec[];
  /** Primary: the secondary's -incoming, e.g. `tcp:10.0.0.2:9998`. */
  readonly migrationUri?: string;
  /** Primary: x-checkpoint-delay, ms. Default 2000. */
  readonly checkpointDelayMs?: number;
  /** Operation id tagging what the subkinds add (give both sides the same one). Default: a fresh one. */
  readonly operationId?: string;
  /** Decides who serves. Owned by the caller (not closed by {@link ColoSideDriver.close}). */
  readonly arbiter: Arbiter;
  /** The host's highest-epoch store: never act as primary below it. */
  readonly epochs?: EpochStore;
  /** This side's network (attach on promotion, detach when fenced). */
  readonly fence?: ColoSideFence;
  /** Run by a secondary holding the role, before it promotes; a failure blocks the promotion (resign, state `failed`). */
  readonly hardFence?: (signal: AbortSignal) => Promise<void>;
  /** Name of the fenced record marking the secondary outdated. Default {@link COLO_OUTDATED_RECORD}. */
  readonly outdatedRecord?: string;
  /** Primary: no checkpoint completed for this long in COLO = the secondary is lost, ms. Default checkpointDelayMs + 4000. */
  readonly stallMs?: number;
  /** Period of the role watch, ms. Default 20. */
  readonly lapseCheckMs?: number;
  /** The watchdog over this side's own QEMU (DEFAULT_WATCHDOG). */
  readonly watchdog?: ColoWatchdogOptions;
  /** Bound of QMP commands, ms. Default 10000. */
  readonly commandTimeoutMs?: number;
  /** Progress and decisions (synchronous; a throwing listener is ignored). */
  readonly onEvent?: (e: ColoSideEvent) => void;
}

/** The fenced record (Arbiter.publish) naming a secondary that may not promote: `{ host, epoch }`. */
export const COLO_OUTDATED_RECORD = 'colo-outdated';
/** The fenced record the role holder writes when it starts replicating or serving: a {@link ColoPairRecord}. */
export const COLO_STATE_RECORD = 'colo-state';

/** What the role holder last wrote about the pair ({@link COLO_STATE_RECORD}). */
export interface ColoPairRecord {
  readonly host: string;
  readonly peer: string;
  readonly state: ColoSideState;
  readonly protected: boolean;
  readonly epoch: number;
  /** Ms since the epoch. */
  readonly at: number;
}

/** The pair as `remus colo status` shows it, from the arbiter alone. */
export interface ColoHaStatus {
  /** Epoch of the current role holder; undefined when nobody holds the role. */
  readonly epoch: number | undefined;
  /** Host holding the role (serving, or about to). */
  readonly holder: string | undefined;
  /** Checkpoints run: the holder wrote `replicating` under the current epoch. */
  readonly protected: boolean;
  /** The holder's last written state under the current epoch (undefined when it wrote none yet). */
  readonly state: ColoSideState | undefined;
  /** A host marked outdated (may not promote), if any. */
  readonly outdated: string | undefined;
  /** One line saying why. */
  readonly why: string;
}

/**
 * Reads the pair's status from what the arbiter holds: the leader (holder
 * and epoch), {@link COLO_STATE_RECORD} and {@link COLO_OUTDATED_RECORD}
 * (their raw values, as `Arbiter.read` returns them). A state record of an
 * older epoch says nothing about the current holder. Pure.
 */
export function coloHaStatus(leader: { readonly host: string; readonly epoch: number } | undefined, stateRecord: string | undefined, outdatedRecord: string | undefined): ColoHaStatus {
  const parse = <T>(v: string | undefined): T | undefined => {
    if (v === undefined || v === '') return undefined;
    try {
      return JSON.parse(v) as T;
    } catch {
      return undefined;
    }
  };
  const rec = parse<ColoPairRecord>(stateRecord);
  const out = parse<{ host?: string; epoch?: number }>(outdatedRecord);
  const outdated = typeof out?.host === 'string' ? out.host : undefined;
  if (!leader) return { epoch: undefined, holder: undefined, protected: false, state: undefined, outdated, why: 'nobody holds the role: no side serves (a failover may be under way)' };
  const current = rec !== undefined && rec.epoch === leader.epoch && rec.host === leader.host ? rec : undefined;
  const state = current?.state;
  const prot = current?.protected === true;
  const why = prot
    ? `${leader.host} replicates to ${current!.peer} under epoch ${leader.epoch}`
    : current
      ? `${leader.host} is ${current.state} under epoch ${leader.epoch}, without a secondary${outdated ? ` (${outdated} marked outdated)` : ''}`
      : `${leader.host} holds epoch ${leader.epoch} but wrote no state under it yet${rec ? ` (last record: ${rec.host} ${rec.state} under epoch ${rec.epoch})` : ''}`;
  return { epoch: leader.epoch, holder: leader.host, protected: prot, state, outdated, why };
}

/**
 * States. connected → starting → replicating → failing-over → serving;
 * `fenced` (released nothing more: QEMU killed or stopped), `outdated` (a
 * secondary that may not promote), `failed`, `stopped` are final.
 * serving → fenced when the role lapses. Every change goes through one place.
 */
export type ColoSideState = 'connected' | 'starting' | 'replicating' | 'failing-over' | 'serving' | 'fenced' | 'outdated' | 'failed' | 'stopped';

const TRANSITIONS: Readonly<Record<ColoSideState, readonly ColoSideState[]>> = {
  connected: ['starting', 'failed', 'fenced', 'stopped'],
  starting: ['replicating', 'serving', 'failed', 'fenced', 'stopped'],
  replicating: ['failing-over', 'fenced', 'outdated', 'failed', 'stopped'],
  'failing-over': ['serving', 'fenced', 'outdated', 'failed', 'stopped'],
  serving: ['starting', 'fenced', 'stopped'],
  fenced: [],
  outdated: [],
  failed: [],
  stopped: [],
};

export type ColoSideEvent =
  | { type: 'state'; state: ColoSideState; at: number }
  | { type: 'step'; step: string; ms: number }
  | { type: 'ready' }
  | { type: 'role'; epoch: number }
  | { type: 'checkpoint'; index: number; pauseMs: number; onDemand: boolean }
  | { type: 'peer-failure'; why: string }
  | { type: 'promoted'; epoch: number; why: string; ms: number; at: number }
  | { type: 'solo'; epoch: number; why: string; ms: number; at: number }
  | { type: 'fenced'; why: string; at: number }
  | { type: 'error'; error: RemusError };

/** What `remus colo status` shows for one side. */
export interface ColoSideStatus {
  readonly host: string;
  readonly peer: string;
  /** COLO role now: a promoted secondary is `primary`. */
  readonly role: ColoRole;
  readonly state: ColoSideState;
  /** Epoch of the role this side holds or last held; 0 when never. */
  readonly epoch: number;
  /** This side holds the role now (as the arbiter knows, deadline not passed). */
  readonly holdsRole: boolean;
  /** Checkpoints are running: this side is one of a replicating pair. */
  readonly protected: boolean;
  readonly checkpoints: number;
  readonly failover?: { readonly why: string; readonly at: number; readonly ms: number } | undefined;
  readonly fencedWhy?: string | undefined;
}

/**
 * One side, driven by this process. {@link ColoSideDriver.connect}, then
 * {@link ColoSideDriver.start}; decisions happen by themselves afterwards.
 * Invariants: the state changes only in `#setState`; this side releases
 * output only in `replicating`/`failing-over`/`serving` as primary while
 * holding the role (`#epoch` > 0); `#fence` runs at most once.
 */
export class ColoSideDriver {
  readonly #o: ColoSideOptions;
  readonly #operation: string;
  readonly #lease: QmpLease;
  readonly #cmd: QmpClient;
  readonly #ev: QmpClient;
  #layer: CheckpointDevices;
  /** This side's COLO devices now (a reprotected survivor's are primary devices). */
  #devices: readonly DeviceSpec[];
  #migrationUri: string | undefined;
  readonly #pool: QmpPool;
  readonly #abort = new AbortController();
  readonly #changes = new EventEmitter();
  #figures: CheckpointFigures;
  readonly #unsubscribe: (() => void)[] = [];
  #state: ColoSideState = 'connected';
  #role: ColoRole;
  /** Epoch this side acts under as primary; 0 while it does not. */
  #epoch = 0;
  #lastProgress = 0;
  #watchdog?: Watchdog;
  #failover?: { why: string; at: number; ms: number };
  #fencedWhy?: string;
  #fenceRun?: Promise<void>;
  #decision?: Promise<void>;

  private constructor(o: ColoSideOptions, operation: string, pool: QmpPool, lease: QmpLease, ev: QmpClient, layer: CheckpointDevices) {
    this.#o = o;
    this.#operation = operation;
    this.#lease = lease;
    this.#cmd = lease.client;
    this.#ev = ev;
    this.#layer = layer;
    this.#pool = pool;
    this.#devices = o.devices;
    this.#migrationUri = o.migrationUri;
    this.#role = o.role;
    this.#figures = new CheckpointFigures(o.checkpointDelayMs ?? 2000);
  }

  /** Connects to this side's QMP (retried every 100 ms up to `timeoutMs`, default 30000) and builds its device layer. */
  static async connect(o: ColoSideOptions, timeoutMs = 30_000, signal?: AbortSignal): Promise<ColoSideDriver> {
    if (o.role === 'primary' && !o.migrationUri) throw new RemusError('INVALID_ARGUMENT', 'colo side: a primary needs migrationUri (the secondary\'s -incoming)');
    const pool = new QmpPool();
    const commandTimeoutMs = o.commandTimeoutMs ?? 10_000;
    const retry = <T>(what: string, open: (s: AbortSignal) => Promise<T>): Promise<T> => {
      let last: unknown;
      return pollUntil((s) => open(s).catch((e: unknown) => void (last = e)), {
        what,
        timeoutMs,
        intervalMs: 100,
        describe: () => describeCause(last) ?? 'no attempt finished',
        ...(signal ? { signal } : {}),
      }) as Promise<T>;
    };
    const lease = await retry(`colo ${o.role} on ${o.host}: the QMP socket to answer`, (s) => pool.acquire(o.qmp, { timeoutMs: 5000, signal: s, commandTimeoutMs }));
    let ev = lease.client;
    try {
      if (o.qmpEvents !== undefined) ev = await retry(`colo ${o.role} on ${o.host}: the QMP events socket to answer`, (s) => connectQmp(o.qmpEvents!, { timeoutMs: 5000, signal: s, commandTimeoutMs }));
    } catch (e) {
      await lease.release();
      throw e;
    }
    const q: ColoQemuOptions = { qmp: o.qmp, pool, commandTimeoutMs };
    const operation = o.operationId ?? newOperationId();
    const layer = createCheckpointDevices({ ops: o.role === 'primary' ? coloPrimaryOps(q) : coloSecondaryOps(q), devices: o.devices, operationId: operation });
    const side = new ColoSideDriver(o, operation, pool, lease, ev, layer);
    side.#listen();
    return side;
  }

  status(): ColoSideStatus {
    const holdsRole = this.#epoch > 0 && roleLapse(this.#o.arbiter.role(), this.#epoch) === undefined;
    return {
      host: this.#o.host,
      peer: this.#o.peer,
      role: this.#role,
      state: this.#state,
      epoch: this.#epoch || this.#o.arbiter.role().epoch,
      holdsRole,
      protected: this.#state === 'replicating',
      checkpoints: this.#figures.summary().checkpoints,
      failover: this.#failover,
      fencedWhy: this.#fencedWhy,
    };
  }

  /** The command connection (callers' own queries). */
  qmp(): QmpClient {
    return this.#cmd;
  }

  #emit(e: ColoSideEvent): void {
    try {
      this.#o.onEvent?.(e);
    } catch {
      /* a listener must not break the driver */
    }
  }

  #setState(next: ColoSideState): void {
    if (!TRANSITIONS[this.#state].includes(next)) throw new RemusError('STATE', `colo side ${this.#o.host}: no transition from ${this.#state} to ${next}`);
    this.#state = next;
    this.#emit({ type: 'state', state: next, at: now() });
    this.#changes.emit('state', next);
    if ((next === 'replicating' || next === 'serving') && this.#epoch > 0) void this.#publishState(next);
  }

  /** The role holder's fenced note of the pair's state ({@link COLO_STATE_RECORD}), for `remus colo status`. Best effort. */
  async #publishState(state: ColoSideState): Promise<void> {
    const a = this.#o.arbiter;
    if (!a.publish) return;
    const rec: ColoPairRecord = { host: this.#o.host, peer: this.#o.peer, state, protected: state === 'replicating', epoch: this.#epoch, at: now() };
    const publish = (name: string, value: string): Promise<void> =>
      a.publish!(name, value, this.#abort.signal).catch((e: unknown) => {
        if (!this.#abort.signal.aborted) this.#emit({ type: 'error', error: asRemusError(e) });
      });
    await publish(COLO_STATE_RECORD, JSON.stringify(rec));
    // Replicating again: the secondary holds a full copy, so no host is outdated any more (a mark from an
    // earlier partition would otherwise keep a reprotected secondary on that host from ever promoting).
    if (state === 'replicating') await publish(this.#outdatedRecord(), '');
  }

  #final(): boolean {
    return TRANSITIONS[this.#state].length === 0;
  }

  #listen(): void {
    this.#unsubscribe.push(this.#ev.onEvent((e) => this.#onEvent(e)));
    for (const c of new Set([this.#cmd, this.#ev])) void c.whenClosed().then(() => this.#ownFailure('QMP connection closed'));
  }

  #onEvent(e: QmpEvent): void {
    switch (e.event) {
      case 'SHUTDOWN':
        return this.#ownFailure('QEMU shut down');
      case 'COLO_EXIT':
        if ((e.data as { reason?: string }).reason === 'error') this.#peerFailure(`COLO_EXIT (error) on ${this.#o.host}`);
        return;
      case 'QUORUM_REPORT_BAD': {
        const node = (e.data as { 'node-name'?: string })['node-name'];
        if (this.#role === 'primary' && node !== undefined && this.#replicationNodes().includes(node)) this.#peerFailure(`QUORUM_REPORT_BAD on ${node}`);
        return;
      }
      default: {
        if (this.#role !== 'primary') return;
        if (e.event === 'RESUME' || e.event === 'MIGRATION') this.#lastProgress = performance.now();
        const c = this.#figures.onEvent(e);
        if (c) this.#emit({ type: 'checkpoint', ...c });
      }
    }
  }

  #replicationNodes(): string[] {
    return this.#devices.filter((d) => d.kind === 'disk').map((d) => coloIds(this.#operation, d.id).primaryDisk.node);
  }

  /**
   * Starts this side's part of replication. Primary: acquires the role
   * (waits while another host holds it: bound it with `signal`), then its
   * start steps, then waits until QEMU reports COLO. Secondary: its steps
   * up to the one waiting for the primary, the `ready` event (start the
   * primary now), the rest, then waits for COLO mode and campaigns in the
   * background. Bounded by `timeoutMs` (default 120000) once the role is
   * held. On failure this side's devices are torn down, the state is
   * `failed` (or `fenced` when the primary lost the role meanwhile).
   */
  async start(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    if (this.#state !== 'connected') throw new RemusError('STATE', `colo side: start() in state ${this.#state}`);
    const signal = options.signal ? AbortSignal.any([options.signal, this.#abort.signal]) : this.#abort.signal;
    this.#setState('starting');
    this.#figures.startedAt = now();
    const ctx: StartContext = {
      operation: this.#operation,
      migrationUri: this.#migrationUri ?? '',
      checkpointDelayMs: this.#o.checkpointDelayMs ?? 2000,
      sides: { [this.#role]: { cmd: this.#cmd, layer: this.#layer, devices: this.#devices } },
      signal,
    };
    const onStep = (s: { step: string }, ms: number): void => this.#emit({ type: 'step', step: s.step, ms });
    try {
      if (this.#role === 'primary') {
        await this.#takeRole(signal);
        await runStartSteps(sideStartPlan('primary'), ctx, onStep);
      } else {
        const plan = sideStartPlan('secondary');
        await runStartSteps(plan.filter((s) => !s.waitsForPeer), ctx, onStep);
        this.#emit({ type: 'ready' });
        await runStartSteps(plan.filter((s) => s.waitsForPeer), ctx, onStep);
      }
      await this.#waitColo(options.timeoutMs ?? 120_000, signal);
      if ((this.#state as ColoSideState) !== 'starting') throw new RemusError('STATE', `colo side ${this.#o.host}: replication did not start (state ${this.#state})`);
    } catch (e) {
      if ((this.#state as ColoSideState) === 'starting') this.#setState('failed');
      await this.#layer.teardown().catch(() => {});
      throw e;
    }
    this.#replicating();
    if (this.#role === 'secondary') void this.#campaign();
  }

  /** Enters `replicating`: the watchdog over this side's QEMU, and on a primary the stall watch. */
  #replicating(): void {
    this.#lastProgress = performance.now();
    this.#setState('replicating');
    // The watchdog names sides by the role this side had when it started: `me` stays this side after a promotion.
    const me = this.#role;
    this.#watchdog ??= startWatchdog([{ role: me, pid: this.#o.pid, probe: this.#ev }], this.#o.watchdog ?? {}, (failed, why) =>
      failed === me ? this.#ownFailure(why) : this.#peerFailure(why),
    );
    if (this.#role === 'primary') void this.#watchStall();
  }

  /**
   * Protection again after a failover (QEMU's "resume replication", the
   * resync steps of resync.ts in the pair's start plan): this side serves
   * holding the role; a fresh secondary (its side started and `ready`, its
   * NBD export up) gets this side's disks mirrored, then this side's
   * primary devices, x-colo and the migration. `devices` are this side's
   * **primary** devices (its proxy's listening addresses, the new
   * secondary's NBD server). Resolves in `replicating` with what the mirror
   * copied; on failure the resync is undone (the VM runs again,
   * unprotected), the state is `serving` again, and it rejects.
   */
  async reprotect(o: { devices: readonly DeviceSpec[]; migrationUri: string; timeoutMs?: number; mirrorTimeoutMs?: number }): Promise<{ bytes: number; mirrorMs: number; pausedMs: number }> {
    if (this.#state !== 'serving') throw new RemusError('STATE', `colo side ${this.#o.host}: reprotect in state ${this.#state} (only a side serving alone)`);
    const lapse = roleLapse(this.#o.arbiter.role(), this.#epoch);
    if (lapse !== undefined) throw new RemusError('ROLE_LOST', `colo side ${this.#o.host}: reprotect: ${lapse}`);
    const q: ColoQemuOptions = { qmp: this.#o.qmp, pool: this.#pool, commandTimeoutMs: this.#o.commandTimeoutMs ?? 10_000 };
    const layer = createCheckpointDevices({ ops: coloPrimaryOps(q), devices: o.devices, operationId: this.#operation });
    const resync: ResyncState = { timeoutMs: o.mirrorTimeoutMs ?? 600_000, jobs: [], nodes: [], bytes: 0 };
    const signal = this.#abort.signal;
    const ctx: StartContext = { operation: this.#operation, migrationUri: o.migrationUri, checkpointDelayMs: this.#o.checkpointDelayMs ?? 2000, sides: { primary: { cmd: this.#cmd, layer, devices: o.devices } }, signal, resync };
    const before = { devices: this.#devices, layer: this.#layer, role: this.#role, figures: this.#figures, migrationUri: this.#migrationUri };
    // A side that went on alone as the primary still has what coloFailoverOnPrimary kept: the
    // proxy's chardevs, under this operation's ids (and bound to their addresses). The new
    // set-up adds them again, so the old primary layer goes first. A promoted secondary keeps
    // its layer: its rewriter must stay for the VM's lifetime.
    if (before.role === 'primary') await this.#layer.teardown();
    this.#devices = o.devices;
    this.#layer = layer;
    this.#role = 'primary';
    this.#migrationUri = o.migrationUri;
    this.#figures = new CheckpointFigures(this.#o.checkpointDelayMs ?? 2000);
    this.#figures.startedAt = now();
    this.#setState('starting');
    try {
      await runStartSteps(startPlan(true).filter((s) => s.side === 'primary'), ctx, (s, ms) => this.#emit({ type: 'step', step: s.step, ms }));
      await this.#waitColo(o.timeoutMs ?? 120_000, signal);
      if ((this.#state as ColoSideState) !== 'starting') throw new RemusError('STATE', `colo side ${this.#o.host}: reprotect did not finish (state ${this.#state})`);
    } catch (e) {
      await layer.teardown().catch(() => {});
      await undoResync(this.#cmd, resync).catch(() => {});
      this.#devices = before.devices;
      this.#layer = before.layer;
      this.#role = before.role;
      this.#figures = before.figures;
      this.#migrationUri = before.migrationUri;
      if ((this.#state as ColoSideState) === 'starting') this.#setState('serving');
      throw e;
    }
    this.#decision = undefined; // a new pair: its secondary may fail and be handled again
    this.#replicating();
    return { bytes: resync.bytes, mirrorMs: resync.mirrorMs ?? 0, pausedMs: resync.stoppedAt === undefined ? 0 : performance.now() - resync.stoppedAt };
  }

  /** Resolves with the state once it is one of `states`; TIMEOUT after `timeoutMs`. */
  async waitForState(states: readonly ColoSideState[], timeoutMs: number, signal?: AbortSignal): Promise<ColoSideState> {
    if (states.includes(this.#state)) return this.#state;
    await nextEvent(this.#changes, 'state', {
      what: `colo side ${this.#o.host}: state ${states.join('/')} (now ${this.#state})`,
      timeoutMs,
      filter: (s: ColoSideState) => states.includes(s),
      ...(signal ? { signal } : {}),
    });
    return this.#state;
  }

  /** Acquires the role, admits its epoch, and starts the watch that fences this side when it lapses. */
  async #takeRole(signal: AbortSignal): Promise<number> {
    const role = await this.#o.arbiter.acquire(signal);
    try {
      this.#o.epochs?.admit(role.epoch, `colo ${this.#o.host} role epoch`);
    } catch (e) {
      await this.#o.arbiter.resign();
      throw e;
    }
    this.#epoch = role.epoch;
    this.#emit({ type: 'role', epoch: role.epoch });
    void this.#watchRole(role.epoch);
    return role.epoch;
  }

  /** Polls the role (memory only) and fences this side the moment it lapses. */
  async #watchRole(epoch: number): Promise<void> {
    const period = this.#o.lapseCheckMs ?? 20;
    try {
      for (;;) {
        const why = roleLapse(this.#o.arbiter.role(), epoch);
        if (why !== undefined) return void this.#fence(`role lost: ${why}`);
        await sleep(period, this.#abort.signal, 'colo side role watch');
      }
    } catch {
      // closed
    }
  }

  async #waitColo(timeoutMs: number, signal: AbortSignal): Promise<void> {
    let seen = 'no answer yet';
    await pollUntil(
      async () => {
        if (this.#state !== 'starting') return true;
        if (this.#role === 'primary') {
          if (this.#figures.inColo) return true;
          const st = await this.#cmd.execute<{ status?: string }>('query-migrate', undefined, { timeoutMs: 5000 }).catch(() => undefined);
          if (st?.status === 'failed') throw new RemusError('OP_FAILED', 'colo: the migration to the secondary failed');
          seen = `migration ${st?.status ?? 'unknown'}`;
          if (st?.status === 'colo') this.#figures.inColo = true;
          return st?.status === 'colo';
        }
        const st = await this.#cmd.execute<{ mode?: string }>('query-colo-status', undefined, { timeoutMs: 5000 }).catch(() => undefined);
        seen = `COLO mode ${st?.mode ?? 'unknown'}`;
        return st?.mode === 'secondary';
      },
      { what: `colo ${this.#role} on ${this.#o.host}: COLO mode`, timeoutMs, intervalMs: 50, describe: () => seen, signal },
    );
  }

  /** Primary: no checkpoint for `stallMs` in COLO means the secondary is lost (a partition gives no error). */
  async #watchStall(): Promise<void> {
    const stallMs = this.#o.stallMs ?? (this.#o.checkpointDelayMs ?? 2000) + 4000;
    try {
      while (this.#state === 'replicating') {
        await sleep(100, this.#abort.signal, 'colo side stall watch');
        const quiet = performance.now() - this.#lastProgress;
        if (this.#state === 'replicating' && quiet > stallMs) this.#peerFailure(`no checkpoint completed for ${quiet.toFixed(0)} ms`);
      }
    } catch {
      // closed
    }
  }

  /** Secondary: campaigns; holding the role, promotes (once). */
  async #campaign(): Promise<void> {
    let epoch: number;
    try {
      epoch = await this.#takeRole(this.#abort.signal);
    } catch (e) {
      if (this.#abort.signal.aborted || this.#final()) return;
      this.#emit({ type: 'error', error: asRemusError(e) });
      if (this.#state === 'replicating') this.#setState('failed');
      return;
    }
    if (this.#state !== 'replicating') return void this.#o.arbiter.resign();
    this.#decision ??= this.#promote(epoch);
  }

  async #promote(epoch: number): Promise<void> {
    const t0 = performance.now();
    const why = `${this.#o.peer}'s role ended; ${this.#o.host} holds epoch ${epoch}`;
    this.#setState('failing-over');
    const signal = this.#abort.signal;
    try {
      const rec = this.#o.arbiter.read ? await this.#o.arbiter.read(this.#outdatedRecord(), signal) : undefined;
      if (rec !== undefined && rec !== '' && (JSON.parse(rec) as { host?: string }).host === this.#o.host) {
        await this.#o.arbiter.resign();
        this.#epoch = 0;
        this.#fencedWhy = `marked outdated by the primary (${rec})`;
        return this.#setState('outdated');
      }
      if (this.#o.hardFence) {
        try {
          await this.#o.hardFence(signal);
        } catch (e) {
          await this.#o.arbiter.resign();
          this.#epoch = 0;
          this.#emit({ type: 'error', error: new RemusError('OP_FAILED', `colo ${this.#o.host}: hard fence failed, promotion blocked: ${describeCause(e)}`, { cause: e }) });
          return this.#setState('failed');
        }
      }
      const lapse = roleLapse(this.#o.arbiter.role(), epoch);
      if (lapse !== undefined) throw new RemusError('ROLE_LOST', `colo ${this.#o.host}: ${lapse}`);
      await coloFailoverOnSecondary(this.#cmd, { operation: this.#operation, devices: this.#devices, signal, onStep: (step, ms) => this.#emit({ type: 'step', step, ms }) });
      await this.#o.fence?.attach(signal);
    } catch (e) {
      if (signal.aborted) return;
      this.#emit({ type: 'error', error: asRemusError(e) });
      return this.#fence(`promotion failed: ${describeCause(e)}`);
    }
    this.#role = 'primary';
    const ms = performance.now() - t0;
    this.#failover = { why, at: now(), ms };
    if (this.#state !== 'failing-over') return; // fenced meanwhile
    this.#setState('serving');
    this.#emit({ type: 'promoted', epoch, why, ms, at: now() });
  }

  #outdatedRecord(): string {
    return this.#o.outdatedRecord ?? COLO_OUTDATED_RECORD;
  }

  /** The other side failed (as seen from here). Only a replicating primary acts: it goes on alone. */
  #peerFailure(why: string): void {
    if (this.#state !== 'replicating') return;
    this.#emit({ type: 'peer-failure', why });
    if (this.#role !== 'primary') return; // a secondary promotes only holding the role (#campaign)
    this.#decision ??= this.#goSolo(why);
  }

  async #goSolo(why: string): Promise<void> {
    const t0 = performance.now();
    const epoch = this.#epoch;
    // The sequence's first step drains the replication child: across a cut link QEMU's main loop
    // (and both monitors) block until the link's TCP gives up. Each step is bounded by
    // commandTimeoutMs; the watchdog would take that wait for a hung QEMU.
    this.#stopWatchdog();
    this.#setState('failing-over');
    const signal = this.#abort.signal;
    try {
      if (!this.#o.arbiter.publish) throw new RemusError('STATE', `arbiter ${this.#o.arbiter.name} cannot publish: the secondary cannot be marked outdated`);
      await this.#o.arbiter.publish(this.#outdatedRecord(), JSON.stringify({ host: this.#o.peer, epoch }), signal);
      await coloFailoverOnPrimary(this.#cmd, { operation: this.#operation, devices: this.#devices, signal, onStep: (step, ms) => this.#emit({ type: 'step', step, ms }) });
    } catch (e) {
      if (signal.aborted) return;
      this.#emit({ type: 'error', error: asRemusError(e) });
      return this.#fence(`going on alone failed: ${describeCause(e)}`);
    }
    const ms = performance.now() - t0;
    this.#failover = { why, at: now(), ms };
    if (this.#state !== 'failing-over') return;
    this.#setState('serving');
    this.#emit({ type: 'solo', epoch, why, ms, at: now() });
  }

  /** This side's own QEMU died or hung. */
  #ownFailure(why: string): void {
    if (this.#final() || this.#abort.signal.aborted) return;
    if (this.#epoch > 0 || this.#role === 'primary') return void this.#fence(`own QEMU: ${why}`);
    // A secondary whose QEMU is gone has nothing to promote.
    this.#abort.abort();
    this.#fencedWhy = `own QEMU: ${why}`;
    this.#setState('failed');
  }

  /**
   * Releases nothing more, at once: SIGKILL of this side's QEMU (confirmed
   * gone) or, without a pid, QMP `stop`; then network off and role given
   * up. Runs once; the state becomes `fenced`.
   */
  #fence(why: string): Promise<void> {
    this.#fenceRun ??= (async () => {
      const at = now();
      this.#fencedWhy = why;
      this.#stopWatchdog();
      const signal = AbortSignal.timeout(KILL_CONFIRM_MS + 5000);
      try {
        if (this.#o.pid !== undefined) await killAndConfirm(this.#o.pid, { timeoutMs: KILL_CONFIRM_MS, signal });
        else await this.#cmd.execute('stop', undefined, { timeoutMs: 2000 });
      } catch (e) {
        this.#emit({ type: 'error', error: asRemusError(e) });
      }
      await this.#o.fence?.detach(signal).catch((e: unknown) => this.#emit({ type: 'error', error: asRemusError(e) }));
      await this.#o.arbiter.resign();
      this.#epoch = 0;
      if (!this.#final()) this.#setState('fenced');
      this.#emit({ type: 'fenced', why, at });
    })();
    return this.#fenceRun;
  }

  #stopWatchdog(): void {
    this.#watchdog?.stop();
    this.#watchdog = undefined;
  }

  /**
   * Detaches: stops the watches and the campaign, lets a running decision
   * end, closes this side's QMP connections. The QEMU keeps running as it
   * is; the arbiter is the caller's to close (a role held is lost with it).
   * Idempotent.
   */
  async close(): Promise<void> {
    this.#stopWatchdog();
    this.#abort.abort();
    for (const u of this.#unsubscribe.splice(0)) u();
    await this.#decision?.catch(() => {});
    if (TRANSITIONS[this.#state].includes('stopped')) this.#setState('stopped');
    if (this.#ev !== this.#cmd) await this.#ev.close().catch(() => {});
    await this.#cmd.close().catch(() => {});
    await this.#lease.release();
  }
}

function asRemusError(e: unknown): RemusError {
  return isRemusError(e) ? e : new RemusError('OP_FAILED', describeCause(e) ?? String(e), { cause: e });
}
