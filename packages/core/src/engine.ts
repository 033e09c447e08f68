/**
 * The multi-device engine: runs one op over many targets concurrently and
 * reports once. Every phase of the device layer (init, match, setup,
 * postsuspend, preresume, commit, teardown, cleanup) goes through
 * {@link runPhase}; there is no other loop over devices.
 */
import { RemusError, formatOrigin, describeCause } from './errors.js';
import type { OpContext, OpName } from './ops.js';

/** How one op call ended. */
export type OpOutcome = 'ok' | 'error' | 'timeout' | 'aborted';

/** Emitted when an op starts and when it ends. */
export interface OpEvent {
  readonly type: 'op-start' | 'op-end';
  /** Device id; undefined for subkind-wide ops (init, cleanup). */
  readonly device: string | undefined;
  readonly subkind: string;
  readonly op: OpName;
  /** Checkpoint number (0 outside checkpoints). */
  readonly checkpoint: number;
  /** op-end only: milliseconds from start to settlement (or to timeout). */
  readonly durationMs?: number;
  /** op-end only. */
  readonly outcome?: OpOutcome;
  /** op-end only, when the outcome is not `ok`. */
  readonly error?: RemusError;
}

/** Receives op events; must not throw (a throw is swallowed). */
export type OpListener = (event: OpEvent) => void;

/** Where a target's op runs: for errors and events. */
export interface TargetOrigin {
  readonly device: string | undefined;
  readonly subkind: string;
}

export interface PhaseSpec<T> {
  readonly op: OpName;
  readonly targets: readonly T[];
  /** Calls the op for one target; may return a value or a promise, or throw. */
  readonly call: (target: T, ctx: OpContext) => unknown;
  readonly origin: (target: T) => TargetOrigin;
  /** Time limit for one target's op, in ms (each op starts when the phase does). */
  readonly timeoutOf: (target: T) => number;
  readonly checkpoint: number;
  /** Fencing epoch, passed to every op in its context (see {@link OpContext.epoch}). Default 0. */
  readonly epoch?: number;
  /** Operation id, passed to every op in its context. */
  readonly operation: string;
  /**
   * A context to use when every target shares one time limit (the layer
   * passes one per checkpoint to its three checkpoint phases: a timeout in
   * any of them fails the checkpoint, so one signal serves all three).
   * Its checkpoint, epoch and operation must be the spec's.
   */
  readonly context?: LazyContext;
  /** Caller's abort: pending ops settle as ABORTED and their signals fire. */
  readonly signal?: AbortSignal | undefined;
  readonly onEvent?: OpListener | undefined;
}

/**
 * Outcome of a phase, one slot per target in target order.
 * `errors[i]` is undefined when target i succeeded; then `values[i]` holds what its op returned.
 */
export interface PhaseResult {
  readonly values: unknown[];
  readonly errors: (RemusError | undefined)[];
  /** Number of targets that failed. */
  readonly failed: number;
}

/** A group of targets sharing one timeout: one timer and one (lazy) AbortController per group. */
interface TimeoutGroup {
  readonly timeoutMs: number;
  readonly ctx: LazyContext;
  readonly members: number[];
}

/**
 * An op's context whose AbortController is made only when the op reads
 * `signal`: ops that never look at it (most checkpoint ops) cost no signal
 * per phase. Aborting before anyone read it makes the signal already aborted
 * when it is read.
 */
const SIGNAL: PropertyDescriptor = {
  get(this: LazyContext): AbortSignal {
    return this.makeSignal();
  },
  enumerable: true,
  configurable: false,
};

export class LazyContext implements OpContext {
  #controller: AbortController | undefined;
  #aborted = false;
  #reason: unknown;

  declare readonly signal: AbortSignal;

  constructor(
    readonly checkpoint: number,
    readonly epoch: number,
    readonly operation: string,
  ) {
    // An own, enumerable accessor: `{ ...ctx }` and Object.assign copy the signal (making it then), as with a plain object.
    Object.defineProperty(this, 'signal', SIGNAL);
  }

  /** The signal, made on first read. */
  makeSignal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** True once {@link abort} was called (whether or not the signal was made). */
  get aborted(): boolean {
    return this.#aborted;
  }

  abort(reason?: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
  }
}

const PENDING = 0;
const SETTLED = 1;
/** Already resolved: `.then` on it runs a callback after the current microtasks. */
const SETTLED_PROMISE: Promise<void> = Promise.resolve();

/**
 * Runs `spec.call` on every target at once and resolves once, after each
 * target's op settled, timed out or was aborted. Never rejects.
 *
 * Invariants: resolves exactly once, also for zero targets, for ops that
 * throw synchronously, and for ops that settle after their timeout (late
 * results are discarded; late rejections are handled, never unhandled).
 * Each op gets an AbortSignal that fires on its timeout or the caller's
 * abort. Timers: one per distinct timeout value, not one per target.
 */
export function runPhase<T>(spec: PhaseSpec<T>): Promise<PhaseResult> {
  const { targets, op, checkpoint, onEvent, signal } = spec;
  const n = targets.length;
  // Nothing to run (a phase over zero devices): settled at once, nothing armed.
  if (n === 0) return Promise.resolve({ values: [], errors: [], failed: 0 });
  const values: unknown[] = new Array(n);
  const errors: (RemusError | undefined)[] = new Array(n);
  // Zero-filled: every target starts PENDING.
  const state = new Uint8Array(n);
  let failed = 0;
  // Preparation token: `remaining` starts one above the target count and the
  // token is released after every op was started, so ops that settle
  // synchronously can never complete the phase early.
  let remaining = n + 1;
  let resolvePhase!: (r: PhaseResult) => void;
  const done = new Promise<PhaseResult>((resolve) => {
    resolvePhase = resolve;
  });
  const groups = makeGroups(spec);
  // The clock is read only when someone needs it: events carry durations, and a second group's timer counts from the start.
  const startedAt = onEvent !== undefined || groups.length > 1 ? performance.now() : -1;
  let timer: NodeJS.Timeout | undefined;
  let nextGroup = 0;

  const finishOne = (): void => {
    if (--remaining !== 0) return;
    if (timer !== undefined) clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    resolvePhase({ values, errors, failed });
  };

  const emitEnd = (i: number, outcome: OpOutcome, error: RemusError | undefined): void => {
    if (!onEvent) return;
    const o = spec.origin(targets[i] as T);
    safeEmit(onEvent, {
      type: 'op-end',
      device: o.device,
      subkind: o.subkind,
      op,
      checkpoint,
      durationMs: performance.now() - startedAt,
      outcome,
      error,
    });
  };

  const succeed = (i: number, value: unknown): void => {
    if (state[i] !== PENDING) return;
    state[i] = SETTLED;
    values[i] = value;
    if (onEvent) emitEnd(i, 'ok', undefined);
    finishOne();
  };

  const fail = (i: number, error: RemusError, outcome: OpOutcome): void => {
    if (state[i] !== PENDING) return;
    state[i] = SETTLED;
    errors[i] = error;
    failed++;
    if (onEvent) emitEnd(i, outcome, error);
    finishOne();
  };

  const failWithCause = (i: number, cause: unknown): void => {
    if (state[i] !== PENDING) return;
    fail(i, wrapOpError(cause, spec.origin(targets[i] as T), op), 'error');
  };

  // Abort by the caller: every pending op settles as ABORTED now.
  function onAbort(): void {
    for (let i = 0; i < n; i++) {
      if (state[i] !== PENDING) continue;
      const o = spec.origin(targets[i] as T);
      fail(
        i,
        new RemusError('ABORTED', `${formatOrigin({ ...o, op })}: aborted by the caller`, {
          ...o,
          op,
          cause: signal?.reason,
        }),
        'aborted',
      );
    }
    for (const g of groups) g.ctx.abort(signal?.reason);
  }

  // Timeouts: groups are sorted by timeout; the timer always waits for the
  // nearest group still ahead, expires its pending members, then re-arms.
  const armTimer = (): void => {
    if (nextGroup >= groups.length) return;
    const g = groups[nextGroup] as TimeoutGroup;
    const elapsed = startedAt < 0 ? 0 : performance.now() - startedAt;
    timer = setTimeout(onTimeout, Math.max(0, g.timeoutMs - elapsed));
    timer.unref?.();
  };
  function onTimeout(): void {
    const g = groups[nextGroup++] as TimeoutGroup;
    const timeoutError = new RemusError('TIMEOUT', `op ${op} timed out after ${g.timeoutMs} ms`, { op });
    g.ctx.abort(timeoutError);
    for (const i of g.members) {
      if (state[i] !== PENDING) continue;
      const o = spec.origin(targets[i] as T);
      fail(
        i,
        new RemusError('TIMEOUT', `${formatOrigin({ ...o, op })}: did not settle within ${g.timeoutMs} ms`, {
          ...o,
          op,
          details: { timeoutMs: g.timeoutMs },
        }),
        'timeout',
      );
    }
    if (remaining > 0) armTimer();
  }

  if (signal?.aborted) {
    // Nothing starts under an aborted signal.
    remaining = n + 1;
    onAbort();
    finishOne();
    return done;
  }
  signal?.addEventListener('abort', onAbort, { once: true });

  for (const g of groups) {
    for (const i of g.members) {
      if (state[i] !== PENDING) continue; // aborted while starting
      const target = targets[i] as T;
      if (onEvent) {
        const o = spec.origin(target);
        safeEmit(onEvent, { type: 'op-start', device: o.device, subkind: o.subkind, op, checkpoint });
      }
      let result: unknown;
      try {
        result = spec.call(target, g.ctx);
      } catch (e) {
        failWithCause(i, e);
        continue;
      }
      if (isThenable(result)) {
        result.then(
          (v: unknown) => succeed(i, v),
          (e: unknown) => failWithCause(i, e),
        );
      } else {
        succeed(i, result);
      }
    }
  }
  // Arm the timer only for ops still pending after the current microtasks:
  // ops that settle at once (most checkpoint ops) cost no timer. (A reaction
  // on a settled promise, not queueMicrotask: Node wraps each queueMicrotask
  // callback in an AsyncResource, a third of a phase's own cost with 8 devices.)
  if (remaining > 1) {
    void SETTLED_PROMISE.then(() => {
      if (remaining > 0 && timer === undefined && nextGroup === 0) armTimer();
    });
  }
  finishOne(); // release the preparation token
  return done;
}

function makeGroups<T>(spec: PhaseSpec<T>): TimeoutGroup[] {
  const { targets, checkpoint, operation } = spec;
  const epoch = spec.epoch ?? 0;
  const n = targets.length;
  if (n === 0) return [];
  // The common case: every target has the same limit, one group, no map.
  const first = spec.timeoutOf(targets[0] as T);
  const members: number[] = [0];
  let i = 1;
  for (; i < n; i++) {
    if (spec.timeoutOf(targets[i] as T) !== first) break;
    members.push(i);
  }
  if (i === n) return [{ timeoutMs: first, ctx: spec.context ?? new LazyContext(checkpoint, epoch, operation), members }];
  const firstGroup: TimeoutGroup = { timeoutMs: first, ctx: new LazyContext(checkpoint, epoch, operation), members };
  const byTimeout = new Map<number, TimeoutGroup>([[first, firstGroup]]);
  for (; i < n; i++) {
    const t = spec.timeoutOf(targets[i] as T);
    let g = byTimeout.get(t);
    if (g === undefined) {
      g = { timeoutMs: t, ctx: new LazyContext(checkpoint, epoch, operation), members: [] };
      byTimeout.set(t, g);
    }
    g.members.push(i);
  }
  return [...byTimeout.values()].sort((a, b) => a.timeoutMs - b.timeoutMs);
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function';
}

function safeEmit(listener: OpListener, event: OpEvent): void {
  try {
    listener(event);
  } catch {
    // A listener's fault must not change the phase's outcome.
  }
}

/**
 * Stamps device, subkind and op onto whatever an op threw. A RemusError keeps
 * its code (a plugin may say SCRIPT_FAILED or UNSUPPORTED_HOST); anything else
 * becomes OP_FAILED. The original is always the `cause`.
 */
export function wrapOpError(cause: unknown, origin: TargetOrigin, op: OpName): RemusError {
  const where = formatOrigin({ ...origin, op });
  if (cause instanceof RemusError) {
    return new RemusError(cause.code, `${where}: ${cause.message}`, {
      device: origin.device ?? cause.device,
      subkind: origin.subkind,
      op,
      cause,
      details: cause.details,
    });
  }
  return new RemusError('OP_FAILED', `${where}: ${describeCause(cause) ?? 'failed'}`, {
    device: origin.device,
    subkind: origin.subkind,
    op,
    cause,
  });
}
