/**
 * The checkpoint device layer: one protected operation's devices, matched to
 * subkinds from an ops list, set up, checkpointed and torn down. All phases
 * run through the one engine in `engine.ts`.
 */
import { RemusError, type ErrorOrigin } from './errors.js';
import { LazyContext, runPhase, type OpListener, type PhaseResult } from './engine.js';
import type {
  CheckpointOpName,
  DeviceHandle,
  DeviceSpec,
  MatchResult,
  OpContext,
  OpName,
  OpTimeouts,
  OpsList,
  SubkindOps,
} from './ops.js';
import { checkDevices, newOperationId, validateOperationId, validateTimeouts } from './validate.js';
import { validateEpoch } from './arbiter.js';

/** Default per-op time limits (ms). Setup-like ops may run scripts; checkpoint ops run inside the guest's pause. */
export const DEFAULT_TIMEOUTS: Readonly<Record<OpName, number>> = {
  init: 30_000,
  cleanup: 30_000,
  match: 30_000,
  setup: 30_000,
  teardown: 30_000,
  postsuspend: 5_000,
  preresume: 5_000,
  commit: 5_000,
  reap: 30_000,
};

export interface CheckpointDevicesOptions {
  /** The subkinds to use, in match order (Remus passes one list, COLO primary and secondary others). */
  readonly ops: OpsList;
  /** The devices to protect. Ids must be unique. Zero devices is fine. */
  readonly devices: readonly DeviceSpec[];
  /** Per-op time limits overriding {@link DEFAULT_TIMEOUTS}; a subkind's own `timeouts` win over these. */
  readonly timeouts?: OpTimeouts;
  /** Aborts setup and checkpoint phases. Teardown and cleanup ignore it: they always run. */
  readonly signal?: AbortSignal;
  /** Receives every op start and end. */
  readonly onEvent?: OpListener;
  /** Id of this operation, seen by every op as `ctx.operation` (for tagging kernel objects). Default: a fresh random id. */
  readonly operationId?: string;
}

/**
 * Lifecycle of a {@link CheckpointDevices}:
 * `new` -> `setting-up` -> `ready` (checkpoints run) -> `tearing-down` -> `torn-down`.
 * A failed setup goes straight on to teardown and ends `torn-down`; a failed
 * checkpoint phase leaves `failed`, from which only `teardown` is allowed.
 */
export type LayerState = 'new' | 'setting-up' | 'ready' | 'failed' | 'tearing-down' | 'torn-down';

/** Which subkind took a device, or why none did. */
export interface Assignment {
  readonly device: string;
  readonly kind: string;
  /** Subkind that took it; undefined if none did. */
  readonly subkind: string | undefined;
  /** Subkinds that said "not mine", with their reasons, in the order tried. */
  readonly declined: readonly { readonly subkind: string; readonly reason: string }[];
  /** Why the device could not be matched (error), if so. */
  readonly error?: RemusError;
}

/** A subkind within one operation: its ops and the state its init made. */
interface SubkindSlot {
  readonly ops: SubkindOps;
  /** undefined: init not run yet; 'ready': init succeeded; an error: init failed. */
  status: undefined | 'ready' | RemusError;
  shared: unknown;
}

/**
 * A device within one operation.
 * Invariant: `handle` and `slot` are set exactly when a subkind matched the
 * device; every such device is torn down at the end, whether or not its
 * setup ran or succeeded.
 */
interface DeviceSlot {
  readonly spec: DeviceSpec;
  /** Subkinds of the device's kind, in ops-list order; `next` indexes the one to try. */
  readonly candidates: readonly SubkindSlot[];
  next: number;
  readonly declined: { subkind: string; reason: string }[];
  slot: SubkindSlot | undefined;
  handle: DeviceHandle | undefined;
  error: RemusError | undefined;
}

/** One checkpoint op to run on one device: the engine's target in checkpoint phases. */
interface Bound {
  readonly dev: DeviceSlot;
  readonly ops: SubkindOps;
  readonly handle: DeviceHandle;
}

const READY: readonly LayerState[] = ['ready'];

const NEXT_OP: Readonly<Record<CheckpointOpName, CheckpointOpName>> = {
  postsuspend: 'preresume',
  preresume: 'commit',
  commit: 'postsuspend',
};

/**
 * Creates the device layer for one operation. Validates the ops list and the
 * devices at once (throws INVALID_SUBKIND / INVALID_ARGUMENT before anything
 * is touched); nothing runs until {@link CheckpointDevices.setup}.
 */
export function createCheckpointDevices(options: CheckpointDevicesOptions): CheckpointDevices {
  return new CheckpointDevices(options);
}

export class CheckpointDevices {
  readonly #options: CheckpointDevicesOptions;
  /** See {@link CheckpointDevicesOptions.operationId}. */
  readonly operationId: string;
  readonly #subkinds: SubkindSlot[];
  readonly #devices: DeviceSlot[];
  #state: LayerState = 'new';
  /** True while a phase runs; a second phase then is a STATE error. */
  #busy = false;
  /** The checkpoint op the next checkpoint phase must be. */
  #expected: CheckpointOpName = 'postsuspend';
  /** The op context of the current checkpoint's three phases (see PhaseSpec.context). */
  #checkpointContext: LazyContext | undefined;
  #checkpoint = 0;
  /** Epoch every op sees as `ctx.epoch` (see {@link bindEpoch}); only goes up. */
  #epoch = 0;
  /** Per checkpoint op, the matched devices whose subkind implements it (computed once after setup). */
  #bound: Record<CheckpointOpName, Bound[]> = { postsuspend: [], preresume: [], commit: [] };

  constructor(options: CheckpointDevicesOptions) {
    const problems = checkDevices(options.ops, options.devices);
    if (problems.length === 1) throw problems[0];
    if (problems.length > 1) {
      throw new RemusError('INVALID_ARGUMENT', `${problems.length} problems in the devices: ${problems.map((p) => p.message).join('; ')}`, {
        failures: problems,
      });
    }
    if (options.timeouts !== undefined) validateTimeouts(options.timeouts, 'timeouts');
    this.#options = options;
    this.operationId = options.operationId === undefined ? newOperationId() : validateOperationId(options.operationId);
    this.#subkinds = options.ops.map((ops) => ({ ops, status: undefined, shared: undefined }));
    this.#devices = options.devices.map((spec) => ({
      spec,
      candidates: this.#subkinds.filter((s) => s.ops.kind === spec.kind),
      next: 0,
      declined: [],
      slot: undefined,
      handle: undefined,
      error: undefined,
    }));
  }

  /** Where the operation is in its lifecycle. */
  get state(): LayerState {
    return this.#state;
  }

  /** Number of the last checkpoint started (0 before the first postsuspend). */
  get checkpoint(): number {
    return this.#checkpoint;
  }

  /** The fencing epoch ops see as `ctx.epoch` (0 until {@link bindEpoch}). */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Sets the fencing epoch every later op sees as `ctx.epoch`. Called by the
   * checkpoint loop before its first checkpoint when it runs under an
   * arbiter. An epoch may only go up: a lower one throws EPOCH_STALE.
   */
  bindEpoch(epoch: number): void {
    validateEpoch(epoch);
    if (epoch < this.#epoch) {
      throw new RemusError('EPOCH_STALE', `epoch ${epoch} is below the epoch ${this.#epoch} these devices already serve`, { details: { epoch, current: this.#epoch } });
    }
    this.#epoch = epoch;
  }

  /** Which subkind took each device (after setup or plan), in device order. */
  assignments(): Assignment[] {
    return this.#devices.map((d) => ({
      device: d.spec.id,
      kind: d.spec.kind,
      subkind: d.slot?.ops.name,
      declined: [...d.declined],
      ...(d.error ? { error: d.error } : {}),
    }));
  }

  /** Each set-up device's figures from its subkind's `stats` (empty objects where absent). */
  stats(): { device: string; subkind: string; stats: Readonly<Record<string, number>> }[] {
    const out: { device: string; subkind: string; stats: Readonly<Record<string, number>> }[] = [];
    for (const d of this.#devices) {
      if (!d.slot || !d.handle) continue;
      let stats: Readonly<Record<string, number>> = {};
      try {
        stats = d.slot.ops.stats?.(d.handle) ?? {};
      } catch {
        // stats are advisory; a broken one shows as empty.
      }
      out.push({ device: d.spec.id, subkind: d.slot.ops.name, stats });
    }
    return out;
  }

  /**
   * Matches every device to a subkind (initialising subkinds lazily) and sets
   * each matched device up. Resolves when all are ready. On any failure the
   * other devices still finish, every matched device is torn down, every
   * initialised subkind is cleaned up, and it rejects with PHASE_FAILED
   * listing every failure: the caller has nothing to undo.
   */
  async setup(): Promise<void> {
    this.#enter('setup', ['new']);
    this.#state = 'setting-up';
    let failures: RemusError[] = [];
    try {
      failures = await this.#matchAll();
      if (failures.length === 0) {
        const matched = this.#devices.filter((d) => d.handle !== undefined);
        const r = await this.#run('setup', matched, (d, ctx) => d.slot!.ops.setup(d.handle!, ctx), deviceWho, this.#options.signal);
        failures = collect(r);
      }
    } finally {
      this.#busy = false;
    }
    if (failures.length === 0) {
      this.#bindCheckpointOps();
      this.#state = 'ready';
      return;
    }
    const teardownFailures = await this.#teardownAll();
    throw phaseError('setup', [...failures, ...teardownFailures]);
  }

  /**
   * Matches devices to subkinds without setting anything up, then cleans up
   * the subkinds it initialised. For "which subkind would take this device".
   * Never rejects for device failures: see each assignment's `error`.
   */
  async plan(): Promise<Assignment[]> {
    this.#enter('plan', ['new']);
    this.#state = 'setting-up';
    try {
      await this.#matchAll();
    } finally {
      this.#busy = false;
    }
    await this.#cleanupAll();
    this.#state = 'torn-down';
    return this.assignments();
  }

  /** Checkpoint phase 1: the domain is suspended. */
  postsuspend(): Promise<void> {
    return this.#checkpointPhase('postsuspend');
  }

  /** Checkpoint phase 2: the state is saved, the domain is about to resume. */
  preresume(): Promise<void> {
    return this.#checkpointPhase('preresume');
  }

  /** Checkpoint phase 3: the backup acknowledged the checkpoint. */
  commit(): Promise<void> {
    return this.#checkpointPhase('commit');
  }

  /**
   * Tears down every matched device (also those whose setup failed), then
   * cleans up every initialised subkind. Collects every error without
   * stopping and rejects with them at the end. A second call is a no-op;
   * before setup it only marks the layer torn down.
   */
  async teardown(): Promise<void> {
    if (this.#state === 'torn-down') return;
    if (this.#state === 'new') {
      this.#state = 'torn-down';
      return;
    }
    this.#enter('teardown', ['ready', 'failed']);
    this.#busy = false;
    const failures = await this.#teardownAll();
    if (failures.length > 0) throw phaseError('teardown', failures);
  }

  #checkpointPhase(op: CheckpointOpName): Promise<void> {
    // Not async: a checkpoint phase is on the guest's pause path, and every
    // async layer adds microtask hops; the checks' errors are still rejections.
    try {
      this.#enter(op, READY);
      if (op !== this.#expected) {
        this.#busy = false;
        throw new RemusError('STATE', `checkpoint op ${op} called out of order: expected ${this.#expected}`, { op });
      }
    } catch (e) {
      return Promise.reject(e);
    }
    if (op === 'postsuspend') {
      this.#checkpoint++;
      this.#checkpointContext = new LazyContext(this.#checkpoint, this.#epoch, this.operationId);
    }
    return this.#run(op, this.#bound[op], CALLERS[op], boundWho, this.#options.signal, this.#checkpointContext).then((r) => {
      this.#busy = false;
      if (r.failed === 0) {
        this.#expected = NEXT_OP[op];
        return;
      }
      this.#state = 'failed';
      throw phaseError(op, collect(r));
    });
  }


  /** Checks that `op` may start now and marks the layer busy. */
  #enter(op: string, allowed: readonly LayerState[]): void {
    if (this.#busy) {
      throw new RemusError('STATE', `${op} called while another phase is running`, { op });
    }
    if (!allowed.includes(this.#state)) {
      throw new RemusError('STATE', `${op} is not allowed in state ${this.#state} (allowed: ${allowed.join(', ')})`, {
        op,
      });
    }
    this.#busy = true;
  }

  /**
   * Matches all devices in rounds: round r tries each unmatched device's r-th
   * candidate. Before each round, the round's subkinds that were never
   * initialised are initialised (lazily: a subkind no device reaches is never
   * initialised). Returns one failure per device that could not be matched.
   */
  async #matchAll(): Promise<RemusError[]> {
    const signal = this.#options.signal;
    for (;;) {
      const round = this.#devices.filter((d) => !d.handle && !d.error && d.next < d.candidates.length);
      if (round.length === 0) break;
      const toInit = [...new Set(round.map((d) => d.candidates[d.next] as SubkindSlot))].filter(
        (s) => s.status === undefined,
      );
      const init = await this.#run('init', toInit, (s, ctx) => (s.ops.init ? s.ops.init(ctx) : undefined), subkindWho, signal);
      toInit.forEach((s, i) => {
        s.status = init.errors[i] ?? 'ready';
        s.shared = init.values[i];
      });
      // Devices whose candidate failed to init fail with that error.
      const ready: DeviceSlot[] = [];
      for (const d of round) {
        const s = d.candidates[d.next] as SubkindSlot;
        if (s.status === 'ready') ready.push(d);
        else d.error = deviceError(d, s.status as RemusError);
      }
      const match = await this.#run(
        'match',
        ready,
        (d, ctx) => {
          const s = d.candidates[d.next] as SubkindSlot;
          return s.ops.match ? s.ops.match(newHandle(d, s), ctx) : true;
        },
        deviceWho,
        signal,
      );
      ready.forEach((d, i) => {
        const s = d.candidates[d.next++] as SubkindSlot;
        const error = match.errors[i];
        if (error) {
          d.error = error;
          return;
        }
        const verdict = match.values[i] as MatchResult;
        if (verdict === true) {
          d.slot = s;
          d.handle = newHandle(d, s);
          return;
        }
        d.declined.push({ subkind: s.ops.name, reason: typeof verdict === 'object' ? verdict.reason : 'not mine' });
      });
    }
    for (const d of this.#devices) {
      if (d.handle || d.error) continue;
      d.error = notSupported(d, this.#options.ops);
    }
    return this.#devices.flatMap((d) => (d.error ? [d.error] : []));
  }

  /** Teardown of every matched device, then cleanup of every initialised subkind. Returns all failures. */
  async #teardownAll(): Promise<RemusError[]> {
    this.#state = 'tearing-down';
    const matched = this.#devices.filter((d) => d.handle !== undefined);
    // Teardown ignores the caller's abort signal: it must always run.
    const r = await this.#run('teardown', matched, (d, ctx) => d.slot!.ops.teardown(d.handle!, ctx), deviceWho, undefined);
    const failures = collect(r);
    failures.push(...(await this.#cleanupAll()));
    this.#state = 'torn-down';
    return failures;
  }

  async #cleanupAll(): Promise<RemusError[]> {
    const inited = this.#subkinds.filter((s) => s.status === 'ready');
    const r = await this.#run(
      'cleanup',
      inited,
      (s, ctx) => (s.ops.cleanup ? s.ops.cleanup(s.shared, ctx) : undefined),
      subkindWho,
      undefined,
    );
    for (const s of inited) s.status = undefined;
    return collect(r);
  }

  #bindCheckpointOps(): void {
    const bound: Bound[] = [];
    for (const dev of this.#devices) {
      if (dev.slot && dev.handle) bound.push({ dev, ops: dev.slot.ops, handle: dev.handle });
    }
    this.#bound = {
      postsuspend: bound.filter((b) => b.ops.postsuspend !== undefined),
      preresume: bound.filter((b) => b.ops.preresume !== undefined),
      commit: bound.filter((b) => b.ops.commit !== undefined),
    };
  }

  /** The one way any op runs over targets: the engine, with this layer's timeouts and listener. */
  #run<T>(
    op: OpName,
    targets: readonly T[],
    call: (t: T, ctx: OpContext) => unknown,
    who: Who<T>,
    signal: AbortSignal | undefined,
    context?: LazyContext,
  ): Promise<PhaseResult> {
    const fallback = this.#options.timeouts?.[op] ?? DEFAULT_TIMEOUTS[op];
    return runPhase({
      op,
      targets,
      call,
      origin: (t) => ({ device: who.device(t), subkind: who.ops(t).name }),
      timeoutOf: (t) => who.ops(t).timeouts?.[op] ?? fallback,
      checkpoint: this.#checkpoint,
      epoch: this.#epoch,
      operation: this.operationId,
      signal,
      onEvent: this.#options.onEvent,
      context,
    });
  }
}

/** How to name a target in events and errors, and which subkind's timeouts apply to it. */
interface Who<T> {
  device(t: T): string | undefined;
  ops(t: T): SubkindOps;
}

/** A device: the subkind that took it, or during matching the one being tried. */
const deviceWho: Who<DeviceSlot> = {
  device: (d) => d.spec.id,
  ops: (d) => (d.slot ?? (d.candidates[d.next] as SubkindSlot)).ops,
};

const subkindWho: Who<SubkindSlot> = {
  device: () => undefined,
  ops: (s) => s.ops,
};

const boundWho: Who<Bound> = {
  device: (b) => b.dev.spec.id,
  ops: (b) => b.ops,
};

function newHandle(d: DeviceSlot, s: SubkindSlot): DeviceHandle {
  return { device: d.spec, shared: s.shared, data: undefined };
}

// One closure per checkpoint op, made once: the hot path allocates nothing per device.
const CALLERS: Record<CheckpointOpName, (b: Bound, ctx: OpContext) => unknown> = {
  postsuspend: (b, ctx) => b.ops.postsuspend!(b.handle, ctx),
  preresume: (b, ctx) => b.ops.preresume!(b.handle, ctx),
  commit: (b, ctx) => b.ops.commit!(b.handle, ctx),
};

function collect(r: PhaseResult): RemusError[] {
  if (r.failed === 0) return [];
  return r.errors.filter((e): e is RemusError => e !== undefined);
}

function deviceError(d: DeviceSlot, initError: RemusError): RemusError {
  const origin: ErrorOrigin = { device: d.spec.id, subkind: initError.subkind, op: 'init' };
  return new RemusError(initError.code, `device ${d.spec.id}: ${initError.message}`, { ...origin, cause: initError });
}

function notSupported(d: DeviceSlot, ops: OpsList): RemusError {
  const tried = d.declined.map((x) => `${x.subkind} (${x.reason})`);
  const kinds = [...new Set(ops.map((o) => o.kind))];
  const why =
    d.candidates.length === 0
      ? `no subkind of kind "${d.spec.kind}" is in the ops list (kinds present: ${kinds.join(', ') || 'none'}); add a plugin that handles "${d.spec.kind}" devices`
      : `every subkind declined it: ${tried.join('; ')}`;
  return new RemusError('DEVICE_NOT_SUPPORTED', `device ${d.spec.id} (kind ${d.spec.kind}) is not supported: ${why}`, {
    device: d.spec.id,
    op: 'match',
    details: { tried: d.declined.map((x) => x.subkind), declined: d.declined },
  });
}

function phaseError(op: string, failures: RemusError[]): RemusError {
  const lines = failures.map((f) => `  - [${f.code}] ${f.message}`);
  return new RemusError('PHASE_FAILED', `${op} failed on ${failures.length} item(s):\n${lines.join('\n')}`, {
    op,
    failures,
  });
}
