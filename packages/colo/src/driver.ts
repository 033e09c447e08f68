/**
 * The COLO driver: from a description of the two sides (QMP sockets of
 * running QEMUs started with the COLO command lines, their pids, addresses),
 * it sets both sides up, starts replication (x-colo migration with a
 * checkpoint delay), reports status and figures from QEMU's events, and runs
 * a watchdog that fails over to the survivor when the peer dies or hangs.
 *
 * QEMU has no heartbeat of its own: when the secondary dies and nobody fails
 * the primary over, colo-compare holds every reply forever and clients hang.
 *
 * No split brain on one host: only one side is on the clients' network at a
 * time. A failover first fences the losing side (SIGKILL by pid, confirmed
 * gone; `fence.detach`), and only then promotes the survivor and, for the
 * secondary, connects it (`fence.attach`). Across two hosts a pid and a
 * local bridge are not enough: a partition looks like a death, so it needs
 * an arbiter (a third node or quorum service), a fencing device (power /
 * IPMI, or the switch port) that the survivor uses before it answers
 * clients, and the takeover of the service address.
 *
 * Rule: a promoted secondary is never torn down (see {@link ColoPair.stop}).
 */
import { readFileSync } from 'node:fs';
import { RemusError, createCheckpointDevices, type SocketAddress, newOperationId, type CheckpointDevices, type DeviceSpec, type OpsList } from '@remus/core';
import { QmpPool, connectQmp, isQmpRefusal, type QmpClient, type QmpEvent, type QmpLease } from '@remus/qmp';
import { coloFailoverOnPrimary, coloFailoverOnSecondary } from './failover.js';
import { coloIds } from './ids.js';
import { coloPrimaryOps, coloSecondaryOps } from './subkinds.js';
import type { ColoQemuOptions } from './qemu.js';

/** One side of the pair. */
export interface ColoSide {
  /** QMP socket for commands (shared with the side's @remus/colo subkinds through one pool). */
  readonly qmp: string | SocketAddress;
  /**
   * The side's COLO devices for @remus/colo's ops list: a `nic` (params of
   * ColoPrimaryNicParams / ColoSecondaryNicParams) and a `disk`
   * (ColoPrimaryDiskParams / ColoSecondaryDiskParams).
   */
  readonly devices: readonly DeviceSpec[];
  /** A second QMP socket for events and liveness probes (recommended: a busy command connection cannot hide a death). */
  readonly qmpEvents?: string | SocketAddress;
  /** Pid of the QEMU process on this host: liveness ("process gone") and fencing (SIGKILL). */
  readonly pid?: number;
}

/** What connects a side to the clients' network and takes it off (fencing). */
export interface ColoNetworkFence {
  /** Connects `side` to the clients' network. */
  attach(side: ColoRole, signal: AbortSignal): Promise<void>;
  /** Takes `side` off the clients' network; must succeed when it already is off. */
  detach(side: ColoRole, signal: AbortSignal): Promise<void>;
}

export type ColoRole = 'primary' | 'secondary';

/**
 * The watchdog's bounds. A peer whose process or QMP socket goes away is
 * noticed at once (socket closed) or within `intervalMs` (pid probe); a hung
 * one (QMP silent) within {@link watchdogBoundMs}: `(intervalMs +
 * probeTimeoutMs) * misses + intervalMs`. COLO_EXIT (error) and
 * QUORUM_REPORT_BAD on the replication child act as soon as they arrive.
 */
export interface ColoWatchdogOptions {
  /** Period of liveness probes (pid, query-status), ms. Default 200. */
  readonly intervalMs?: number;
  /** Time a probe may take, ms. Default 1500. */
  readonly probeTimeoutMs?: number;
  /** Consecutive missed probes that declare a side hung. Default 3. */
  readonly misses?: number;
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

export type ColoState = 'connected' | 'starting' | 'replicating' | 'failing-over' | 'failed-over' | 'stopped' | 'failed';

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
  readonly timeToFirstCheckpointMs?: number;
  /** Pause per checkpoint (STOP to RESUME, QEMU's own timestamps). */
  readonly pauseMs: { readonly p50?: number; readonly p99?: number; readonly max?: number; readonly count: number };
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
  };
}

/** The default watchdog bounds. */
export const DEFAULT_WATCHDOG = { intervalMs: 200, probeTimeoutMs: 1500, misses: 3 } as const;

/** The longest a hung peer goes unnoticed with these watchdog options, ms. */
export function watchdogBoundMs(options: ColoWatchdogOptions = {}): number {
  const w = { ...DEFAULT_WATCHDOG, ...options };
  return (w.intervalMs + w.probeTimeoutMs) * w.misses + w.intervalMs;
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

function now(): number {
  return performance.timeOrigin + performance.now();
}

function eventMs(e: QmpEvent): number {
  return e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
}

function percentile(sorted: readonly number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** True when `pid` is a process of this host that has not exited (a zombie counts as gone). Reads `/proc/<pid>/stat` (Linux). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false; // no such process
  }
  // `pid (comm) S ...`: comm may hold spaces and parentheses, the state follows the last `)`.
  return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
}

/** SIGKILLs `pid` and waits, bounded, until it is gone. Throws TIMEOUT when it outlives `timeoutMs`. */
async function killAndConfirm(pid: number, timeoutMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  const until = now() + timeoutMs;
  while (processAlive(pid)) {
    if (now() > until) throw new RemusError('TIMEOUT', `colo: pid ${pid} still alive ${timeoutMs} ms after SIGKILL`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A COLO pair under this driver. Create it with {@link ColoPair.connect};
 * then {@link ColoPair.start}. All methods are async; every QMP wait is
 * bounded by `commandTimeoutMs`.
 *
 * Invariants: at most one failover ever runs; once `failing-over` starts the
 * watchdog is stopped; after {@link ColoPair.close} no timer, listener or
 * socket of the driver remains.
 */
export class ColoPair {
  readonly #opts: ColoPairOptions;
  readonly #operation: string;
  readonly #sides: Record<ColoRole, SideConn>;
  readonly #abort = new AbortController();
  #state: ColoState = 'connected';
  #active: ColoRole = 'primary';
  #startedAt?: number;
  #firstCheckpointAt?: number;
  #inColo = false;
  #stopAt?: number;
  #lastCheckpointEnd?: number;
  readonly #pauses: number[] = [];
  #onDemand = 0;
  #failover?: NonNullable<ColoStatus['failover']>;
  #failoverRun?: Promise<void>;
  #watchdogTimer?: NodeJS.Timeout;
  readonly #misses: Record<ColoRole, number> = { primary: 0, secondary: 0 };
  readonly #unsubscribe: (() => void)[] = [];
  readonly #stateWaiters = new Set<() => void>();

  private constructor(opts: ColoPairOptions, operation: string, sides: Record<ColoRole, SideConn>) {
    this.#opts = opts;
    this.#operation = operation;
    this.#sides = sides;
  }

  /**
   * Connects to both sides' QMP (commands through a pool of this pair's own,
   * shared with the sides' @remus/colo subkinds; events on the second
   * monitor) and builds each side's device layer. Retries while the sockets
   * do not exist yet; rejects with QMP_FAILED / TIMEOUT / ABORTED, nothing
   * left open, when a side does not answer within `timeoutMs` (default 30000).
   */
  static async connect(opts: ColoPairOptions, timeoutMs = 30_000, signal?: AbortSignal): Promise<ColoPair> {
    const pool = new QmpPool();
    const operation = opts.operationId ?? newOperationId();
    const commandTimeoutMs = opts.commandTimeoutMs ?? 10_000;
    const leases: QmpLease[] = [];
    const direct: QmpClient[] = [];
    const retry = async <T>(open: () => Promise<T>): Promise<T> => {
      const until = now() + timeoutMs;
      for (;;) {
        try {
          return await open();
        } catch (e) {
          // The socket may not exist yet while QEMU starts.
          if (now() > until || signal?.aborted) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    try {
      const side = async (role: ColoRole, spec: ColoSide): Promise<SideConn> => {
        const lease = await retry(() => pool.acquire(spec.qmp, { timeoutMs: 5000, signal, commandTimeoutMs }));
        leases.push(lease);
        let ev = lease.client;
        if (spec.qmpEvents !== undefined) {
          ev = await retry(() => connectQmp(spec.qmpEvents!, { timeoutMs: 5000, signal, commandTimeoutMs }));
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
    const sorted = [...this.#pauses].sort((a, b) => a - b);
    return {
      state: this.#state,
      active: this.#active,
      checkpoints: this.#pauses.length,
      onDemandCheckpoints: this.#onDemand,
      timeToFirstCheckpointMs:
        this.#firstCheckpointAt !== undefined && this.#startedAt !== undefined ? this.#firstCheckpointAt - this.#startedAt : undefined,
      pauseMs: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1), count: sorted.length },
      failover: this.#failover,
    };
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

  #setState(s: ColoState): void {
    this.#state = s;
    this.#emit({ type: 'state', state: s });
    for (const w of this.#stateWaiters) w();
  }

  #listen(): void {
    const p = this.#sides.primary;
    const s = this.#sides.secondary;
    this.#unsubscribe.push(
      p.ev.onEvent((e) => this.#onEvent('primary', e)),
      s.ev.onEvent((e) => this.#onEvent('secondary', e)),
    );
    for (const side of [p, s]) {
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
        break;
      }
      case 'COLO_EXIT':
        if ((e.data as { reason?: string }).reason === 'error') void this.#peerFailed(peer, `COLO_EXIT (error) on the ${side}`);
        break;
      case 'SHUTDOWN':
        void this.#peerFailed(side, `${side} QEMU shut down`);
        break;
      default:
        if (side === 'primary') this.#onCheckpointEvent(e);
    }
  }

  /** MIGRATION (status colo), then STOP ... RESUME on the primary: one checkpoint. */
  #onCheckpointEvent(e: QmpEvent): void {
    switch (e.event) {
      case 'MIGRATION':
        if ((e.data as { status?: string }).status === 'colo') this.#inColo = true;
        break;
      case 'STOP':
        if (this.#inColo) this.#stopAt = eventMs(e);
        break;
      case 'RESUME': {
        if (!this.#inColo || this.#stopAt === undefined) break;
        const end = eventMs(e);
        const pauseMs = end - this.#stopAt;
        const delay = this.#opts.checkpointDelayMs ?? 2000;
        // A checkpoint that began well before the delay ran out was forced by a divergence.
        const onDemand = this.#lastCheckpointEnd !== undefined && this.#stopAt - this.#lastCheckpointEnd < delay * 0.8;
        this.#stopAt = undefined;
        this.#lastCheckpointEnd = end;
        this.#pauses.push(pauseMs);
        if (onDemand) this.#onDemand++;
        if (this.#firstCheckpointAt === undefined) this.#firstCheckpointAt = now();
        this.#emit({ type: 'checkpoint', index: this.#pauses.length, pauseMs, onDemand });
        break;
      }
    }
  }

  async #step<T>(role: ColoRole, step: string, run: (c: QmpClient) => Promise<T>): Promise<T> {
    const t0 = now();
    try {
      return await run(this.#sides[role].cmd);
    } catch (e) {
      throw new RemusError('OP_FAILED', `colo ${role}: ${step} failed: ${e instanceof Error ? e.message : String(e)}`, { op: step, cause: e });
    } finally {
      this.#emit({ type: 'step', side: role, step, ms: now() - t0 });
    }
  }

  /**
   * Starts replication: the secondary's NBD export and x-colo; the primary's
   * replication child, x-colo, events, the checkpoint delay; then the
   * migration. Resolves once both sides report COLO mode (bounded by
   * `timeoutMs`, default 120000); rejects with OP_FAILED naming the step,
   * TIMEOUT or ABORTED. Starts the watchdog unless disabled.
   */
  async start(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    if (this.#state !== 'connected') throw new RemusError('STATE', `colo: start() in state ${this.#state}`);
    this.#setState('starting');
    this.#startedAt = now();
    try {
      // COLO order: the secondary first (its proxy chardevs reconnect until the primary listens; its NBD export must exist before the primary's replication child connects).
      await this.#step('secondary', 'set up devices (@remus/colo)', () => this.#sides.secondary.layer.setup());
      await this.#step('primary', 'set up devices (@remus/colo)', () => this.#sides.primary.layer.setup());
      await this.#step('secondary', 'proxy connected', () => this.#waitProxyConnected(options.signal));
      await this.#step('secondary', 'migrate-set-capabilities', (c) =>
        c.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-colo', state: true }] }),
      );
      await this.#step('primary', 'migrate-set-capabilities', (c) =>
        c.execute('migrate-set-capabilities', {
          capabilities: [
            { capability: 'x-colo', state: true },
            { capability: 'events', state: true },
          ],
        }),
      );
      await this.#step('primary', 'migrate-set-parameters', (c) =>
        c.execute('migrate-set-parameters', { 'x-checkpoint-delay': this.#opts.checkpointDelayMs ?? 2000 }),
      );
      await this.#step('primary', 'migrate', (c) => c.execute('migrate', { uri: this.#opts.migrationUri }));
      await this.#waitColo(options.timeoutMs ?? 120_000, options.signal);
      if ((this.#state as ColoState) !== 'starting') throw new RemusError('STATE', `colo: replication did not start (state ${this.#state})`);
    } catch (e) {
      if ((this.#state as ColoState) === 'starting') this.#setState('failed');
      // What either side set up goes again (a failed setup already tore its own side down).
      await this.#sides.primary.layer.teardown().catch(() => {});
      await this.#sides.secondary.layer.teardown().catch(() => {});
      throw e;
    }
    this.#setState('replicating');
    if (this.#opts.watchdog !== false) this.#startWatchdog();
  }

  /** The primary's replication nodes (QUORUM_REPORT_BAD on one of them: the secondary's disk fell behind). */
  #replicationNodes(): string[] {
    return this.#opts.primary.devices.filter((d) => d.kind === 'disk').map((d) => coloIds(this.#operation, d.id).primaryDisk.node);
  }

  /** Waits (bounded, 10 s) until the secondary's proxy chardevs are connected to the primary's servers. */
  async #waitProxyConnected(signal?: AbortSignal): Promise<void> {
    const mine = new Set(
      this.#opts.secondary.devices.filter((d) => d.kind === 'nic').flatMap((d) => {
        const id = coloIds(this.#operation, d.id).secondaryNic;
        return [id.red0, id.red1];
      }),
    );
    await this.#waitUntil(async () => {
      const chardevs = await this.#sides.secondary.cmd.execute<{ label: string; filename: string }[]>('query-chardev');
      const ours = chardevs.filter((c) => mine.has(c.label));
      return ours.length === mine.size && ours.every((c) => !c.filename.startsWith('disconnected:'));
    }, 10_000, signal, "the secondary's proxy to connect to the primary");
  }

  /** Polls `done` every 50 ms until it holds; TIMEOUT after `timeoutMs`, ABORTED on `signal`. */
  async #waitUntil(done: () => Promise<boolean>, timeoutMs: number, signal: AbortSignal | undefined, what: string): Promise<void> {
    const until = now() + timeoutMs;
    while (!(await done())) {
      if (signal?.aborted) throw new RemusError('ABORTED', `colo: aborted waiting for ${what}`, { cause: signal.reason });
      if (now() > until) throw new RemusError('TIMEOUT', `colo: ${what} did not happen within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Waits until both sides are in COLO mode: the primary's MIGRATION event
   * (or query-migrate, polled meanwhile) says `colo`, then the secondary's
   * query-colo-status says `secondary` (it enters COLO a little later, once
   * it loaded the first state), or until the state left `starting`.
   */
  async #waitColo(timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    const o = { timeoutMs: 5000 };
    await this.#waitUntil(async () => {
      if (this.#state !== 'starting') return true;
      if (!this.#inColo) {
        const st = await this.#sides.primary.cmd.execute<{ status?: string }>('query-migrate', undefined, o).catch(() => undefined);
        if (st?.status === 'failed') throw new RemusError('OP_FAILED', 'colo: the migration to the secondary failed');
        if (st?.status !== 'colo') return false;
        this.#inColo = true;
      }
      const sec = await this.#sides.secondary.cmd.execute<{ mode?: string }>('query-colo-status', undefined, o).catch(() => undefined);
      return sec?.mode === 'secondary';
    }, timeoutMs, signal, 'both sides to enter COLO');
  }

  #startWatchdog(): void {
    const w = { ...DEFAULT_WATCHDOG, ...(this.#opts.watchdog || {}) };
    const tick = async (): Promise<void> => {
      this.#watchdogTimer = undefined;
      if (this.#state !== 'replicating') return;
      await Promise.all((['primary', 'secondary'] as const).map((r) => this.#probe(r, w.probeTimeoutMs, w.misses)));
      if (this.#state === 'replicating') this.#watchdogTimer = setTimeout(() => void tick(), w.intervalMs);
    };
    this.#watchdogTimer = setTimeout(() => void tick(), w.intervalMs);
  }

  async #probe(role: ColoRole, timeoutMs: number, misses: number): Promise<void> {
    const side = this.#sides[role];
    if (side.spec.pid !== undefined && !processAlive(side.spec.pid)) {
      await this.#peerFailed(role, `process ${side.spec.pid} is gone`);
      return;
    }
    try {
      const st = await side.ev.execute<{ mode?: string; reason?: string }>('query-colo-status', undefined, { timeoutMs });
      this.#misses[role] = 0;
      if (this.#state === 'replicating' && st.mode === 'none' && st.reason === 'error') {
        await this.#peerFailed(role === 'primary' ? 'secondary' : 'primary', `query-colo-status on the ${role}: COLO ended with an error`);
      }
    } catch (e) {
      if (this.#state !== 'replicating') return;
      if (isQmpRefusal(e)) {
        this.#misses[role] = 0; // QEMU answered (with an error): alive
        return;
      }
      this.#misses[role]++;
      if (this.#misses[role] >= misses) await this.#peerFailed(role, `QMP silent for ${misses} probes of ${timeoutMs} ms`);
    }
  }

  /** Records that `failed` is dead or hung and fails over to the other side (once). */
  #peerFailed(failed: ColoRole, why: string): Promise<void> {
    // Never rejects: a failover's error goes to its caller or, for the watchdog's, to onEvent.
    if (this.#state === 'stopped' || this.#state === 'failed-over' || this.#failoverRun) return (this.#failoverRun ?? Promise.resolve()).catch(() => {});
    if (this.#state !== 'replicating') {
      if (this.#state === 'starting' || this.#state === 'connected') this.#setState('failed');
      return Promise.resolve();
    }
    this.#emit({ type: 'peer-failure', side: failed, why });
    return this.failover(failed === 'primary' ? 'secondary' : 'primary', why).catch((e: unknown) => {
      this.#emit({ type: 'error', error: e instanceof RemusError ? e : new RemusError('OP_FAILED', String(e), { cause: e }) });
    });
  }

  /**
   * Fails over to `survivor` (manual failover, or the watchdog's). The other
   * side is fenced first when this host can (SIGKILL by pid, confirmed gone;
   * `fence.detach`), then the survivor runs its sequence
   * ({@link coloFailoverOnSecondary} / {@link coloFailoverOnPrimary}) and,
   * when it is the secondary, `fence.attach` connects it. Runs at most once;
   * a second call returns the first one's promise. Rejects with STATE when
   * not replicating, OP_FAILED naming the step, TIMEOUT when the fenced
   * process outlives its SIGKILL by 5 s.
   */
  failover(survivor: ColoRole, why = 'manual failover'): Promise<void> {
    if (this.#failoverRun) return this.#failoverRun;
    if (this.#state !== 'replicating') return Promise.reject(new RemusError('STATE', `colo: failover in state ${this.#state}`));
    const detectedAt = now();
    this.#stopWatchdog();
    this.#setState('failing-over');
    this.#failoverRun = (async () => {
      const failed: ColoRole = survivor === 'primary' ? 'secondary' : 'primary';
      let kept: readonly string[];
      try {
        await this.#fence(failed);
        const opts = {
          operation: this.#operation,
          devices: this.#opts[survivor].devices,
          signal: this.#abort.signal,
          onStep: (step: string, ms: number) => this.#emit({ type: 'step', side: survivor, step, ms }),
        };
        const sequence = survivor === 'secondary' ? coloFailoverOnSecondary : coloFailoverOnPrimary;
        ({ kept } = await sequence(this.#sides[survivor].cmd, opts));
        if (survivor === 'secondary') await this.#opts.fence?.attach('secondary', this.#abort.signal);
      } catch (e) {
        this.#setState('failed');
        throw e;
      }
      const doneAt = now();
      this.#active = survivor;
      this.#failover = { survivor, why, detectedAt, doneAt, kept };
      this.#setState('failed-over');
      this.#emit({ type: 'failover', survivor, why, ms: doneAt - detectedAt });
    })();
    return this.#failoverRun;
  }

  /** Makes sure `role` can no longer reach the clients: SIGKILL by pid (confirmed gone), then `fence.detach`. */
  async #fence(role: ColoRole): Promise<void> {
    const pid = this.#sides[role].spec.pid;
    if (pid !== undefined) await killAndConfirm(pid, 5000);
    await this.#opts.fence?.detach(role, this.#abort.signal);
  }

  #stopWatchdog(): void {
    if (this.#watchdogTimer) clearTimeout(this.#watchdogTimer);
    this.#watchdogTimer = undefined;
  }

  /** Resolves when the state is one of `states` (bounded). */
  async waitForState(states: readonly ColoState[], timeoutMs: number): Promise<ColoState> {
    const until = now() + timeoutMs;
    while (!states.includes(this.#state)) {
      const left = until - now();
      if (left <= 0) throw new RemusError('TIMEOUT', `colo: state ${this.#state} after ${timeoutMs} ms, wanted ${states.join('/')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(done, Math.min(left, 200));
        function done(): void {
          clearTimeout(t);
          r();
        }
        this.#stateWaiters.add(done);
      });
      this.#stateWaiters.clear();
    }
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
    if (this.#state === 'replicating') await this.failover('primary', 'stop requested');
    else await this.#failoverRun?.catch(() => {});
    if (this.#active === 'primary' && this.#state === 'failed-over') await this.#sides.primary.layer.teardown();
    // this.#active === 'secondary': deliberately no teardown (see above).
    await this.close();
  }

  /**
   * Detaches the driver: stops the watchdog and closes its QMP connections
   * (the subkinds' too); QEMUs keep running as they are, and QEMU alone
   * cannot notice a dead peer. Idempotent.
   */
  async close(): Promise<void> {
    this.#stopWatchdog();
    this.#abort.abort();
    if (this.#state !== 'failed' && this.#state !== 'failed-over') this.#state = 'stopped';
    for (const u of this.#unsubscribe.splice(0)) u();
    await this.#failoverRun?.catch(() => {});
    for (const s of Object.values(this.#sides)) {
      if (s.ev !== s.cmd) await s.ev.close().catch(() => {});
      // The pool is this pair's own: closing the client ends the subkinds' shares too.
      await s.cmd.close().catch(() => {});
      await s.lease.release();
    }
  }
}
