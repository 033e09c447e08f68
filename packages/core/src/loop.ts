/**
 * The Remus checkpoint loop (after Xen's libxl_remus.c):
 * suspend -> postsuspend -> save -> preresume -> resume -> ack -> commit ->
 * wait the interval -> again. The domain is the caller's, behind
 * {@link DomainAdapter}; the devices are a set-up {@link CheckpointDevices}.
 *
 * Under an {@link Arbiter} the loop is fenced: right before each commit it
 * reads `arbiter.role()` (memory, no I/O) and releases the epoch's output
 * only while the role is held, under the epoch the run started with, before
 * the role's deadline. Otherwise it fails closed with ROLE_LOST: the output
 * stays held (teardown drops it), and the domain is suspended and left
 * suspended for the caller to stop (it must not run again unfenced: a
 * deposed primary comes back only as a new backup after a full resync).
 */
import { LazyContext } from './engine.js';
import { validateCount, validateDuration } from './validate.js';
import { RemusError, describeCause } from './errors.js';
import type { CheckpointDevices } from './devices.js';
import { roleLapse, type Arbiter, type EpochStore } from './arbiter.js';
import type { MaybePromise } from './ops.js';

/** Context of one domain step. */
export interface DomainStepContext {
  /** Fires when a step's time limit runs out or the loop is aborted. Made when first read; the steps of one checkpoint share it (a step timeout fails the checkpoint). */
  readonly signal: AbortSignal;
  /** The checkpoint number (1 for the first). */
  readonly checkpoint: number;
  /**
   * Fencing epoch of the run (the arbiter's role epoch; 0 without an
   * arbiter). `save` tags the state it sends with it and `waitAck` accepts
   * only acknowledgements of it, so a backup can refuse a deposed primary.
   */
  readonly epoch: number;
}

/**
 * The protected domain, as the loop drives it. Provided by the caller (a VM
 * manager, the process domain of `@remus/domain-process`, a test fake).
 * All steps may be sync or async and get a bounded signal.
 */
export interface DomainAdapter {
  /** Name for messages. */
  readonly name: string;
  /** Stops the domain so its state is consistent (vCPUs paused, processes frozen). */
  suspend(ctx: DomainStepContext): MaybePromise<void>;
  /** Saves/sends the checkpoint state of the suspended domain to the backup. */
  save(ctx: DomainStepContext): MaybePromise<void>;
  /** Lets the domain run again. Also called by the `resume` failure policy; must tolerate a running domain. */
  resume(ctx: DomainStepContext): MaybePromise<void>;
  /** Resolves when the backup acknowledged checkpoint `ctx.checkpoint`. */
  waitAck(ctx: DomainStepContext): MaybePromise<void>;
}

/** The steps of one checkpoint, in order. */
export const CHECKPOINT_STEPS = ['suspend', 'postsuspend', 'save', 'preresume', 'resume', 'ack', 'commit'] as const;
export type CheckpointStep = (typeof CHECKPOINT_STEPS)[number];

/** Figures of one committed checkpoint. */
export interface CheckpointFigures {
  readonly checkpoint: number;
  /** Wall clock (ms since epoch, sub-millisecond) when the domain was suspended. */
  readonly suspendedAt: number;
  /** Wall clock (ms since epoch, sub-millisecond) when the backup's acknowledgement arrived. */
  readonly ackedAt: number;
  /** Wall clock (ms since epoch, sub-millisecond) when commit finished: the epoch's output is released. */
  readonly committedAt: number;
  /** Suspend start to resume end: how long the guest was paused. */
  readonly pauseMs: number;
  /** From the end of postsuspend (epoch closed) to the end of commit (its output released). */
  readonly commitLatencyMs: number;
  /** Duration of each step. */
  readonly steps: Readonly<Record<CheckpointStep, number>>;
  /** Checkpoints per second since the loop started. */
  readonly rate: number;
}

/** What to do with the domain when a checkpoint fails. */
export type FailurePolicy =
  /** Resume the domain on the primary (xl: "Backup failed? resuming domain at primary"). */
  | 'resume'
  /** Leave it suspended (e.g. the backup takes over). */
  | 'leave-suspended';

export interface CheckpointLoopOptions {
  /** Devices after a successful `setup()`. The loop tears them down when it ends. */
  readonly devices: CheckpointDevices;
  readonly domain: DomainAdapter;
  /** Interval between checkpoints in ms. Default 200 (Xen). */
  readonly intervalMs?: number;
  /** `after-commit` (Xen: the interval counts from commit) or `fixed-rate` (from each suspend). Default after-commit. */
  readonly schedule?: 'after-commit' | 'fixed-rate';
  /** Stop after this many checkpoints. Default: unbounded. */
  readonly maxCheckpoints?: number;
  /** Graceful stop: the current checkpoint finishes, then teardown. */
  readonly stop?: AbortSignal;
  /** Hard abort: running steps are aborted, the checkpoint fails, then teardown. */
  readonly signal?: AbortSignal;
  /** Domain on failure. Default `resume`. */
  readonly onFailure?: FailurePolicy;
  /** Time limit of each domain step in ms. Default 30 000. */
  readonly domainTimeoutMs?: number;
  /** Called after each committed checkpoint. Must not throw (a throw is ignored). */
  readonly onCheckpoint?: (figures: CheckpointFigures) => void;
  /**
   * Fences the loop (see the file header). The role must be held when the
   * loop starts (call `acquire` first); its epoch becomes the run's epoch
   * (`ctx.epoch` of every domain step and op). Before each commit the loop
   * calls `role()` once; a lapse fails the loop with ROLE_LOST. With an
   * arbiter `onFailure` defaults to, and must be, `leave-suspended`: a
   * domain resumed after a failure would run with no output gate.
   */
  readonly arbiter?: Arbiter;
  /**
   * This host's persisted highest epoch. With an arbiter, the loop admits
   * the run's epoch before its first checkpoint (EPOCH_STALE below the
   * highest: nothing runs; a higher one is written to disk first).
   */
  readonly epochs?: EpochStore;
}

export interface LoopResult {
  readonly checkpoints: number;
  readonly stoppedBy: 'request' | 'limit';
  readonly durationMs: number;
}

/**
 * Runs checkpoints until stopped, a limit is reached, or a step fails. Always
 * tears the devices down before it settles. Rejects with CHECKPOINT_FAILED
 * naming the checkpoint and step (`details.checkpoint`, `details.step`), the
 * step's error as `cause`, and any teardown errors in `failures`.
 */
export async function runCheckpointLoop(options: CheckpointLoopOptions): Promise<LoopResult> {
  const { devices, domain } = options;
  const intervalMs = options.intervalMs ?? 200;
  const fixedRate = (options.schedule ?? 'after-commit') === 'fixed-rate';
  const max = options.maxCheckpoints ?? Infinity;
  const domainTimeout = options.domainTimeoutMs ?? 30_000;
  validateDuration(intervalMs, 'intervalMs (ms between checkpoints)');
  validateDuration(domainTimeout, 'domainTimeoutMs (time limit of each domain step)', { min: 1 });
  if (max !== Infinity) validateCount(max, 'maxCheckpoints', { min: 0 });
  if (devices.state !== 'ready') {
    throw new RemusError('STATE', `the checkpoint loop needs devices after a successful setup(); they are ${devices.state}`);
  }
  const arbiter = options.arbiter;
  const onFailure: FailurePolicy = options.onFailure ?? (arbiter ? 'leave-suspended' : 'resume');
  let epoch = 0;
  if (arbiter) {
    if (onFailure === 'resume') {
      throw new RemusError('INVALID_ARGUMENT', `onFailure "resume" is not allowed under an arbiter (${arbiter.name}): a domain resumed after a failure runs with no output gate; use "leave-suspended"`);
    }
    const role = arbiter.role();
    if (!role.held) {
      throw new RemusError('ROLE_LOST', `the checkpoint loop needs the primary role of ${arbiter.name}, which this host does not hold: call acquire() first`, {
        details: { role: { ...role } },
      });
    }
    epoch = role.epoch;
    options.epochs?.admit(epoch, `epoch of ${arbiter.name}`);
    devices.bindEpoch(epoch);
  }
  const loopStart = performance.now();
  let done = 0;
  let failure: RemusError | undefined;
  let suspended = false;

  // Domain steps: one watchdog timer for the whole loop (armed at a step's
  // start when none is pending; when it fires it times out the current step
  // if its limit passed, else re-arms for the rest), and one abort listener
  // on the caller's signal; each step's signal is made only if the adapter
  // reads it. No timer, controller or listener is created per step.
  let current:
    | { step: 'suspend' | 'save' | 'resume' | 'ack'; checkpoint: number; startedAt: number; lazy: LazyContext; fail: (e: RemusError) => void }
    | undefined;
  const stepName = (step: string, checkpoint: number): string => `${domain.name} ${step} (checkpoint ${checkpoint})`;
  let watchdog: NodeJS.Timeout | undefined;
  let stepCtx: LazyContext | undefined;
  const armWatchdog = (ms: number): void => {
    watchdog = setTimeout(onWatchdog, ms);
    watchdog.unref?.();
  };
  function onWatchdog(): void {
    watchdog = undefined;
    const c = current;
    if (!c) return; // fired between steps (a long interval): the next step arms it again
    const left = c.startedAt + domainTimeout - performance.now();
    if (left > 0) {
      armWatchdog(Math.ceil(left));
      return;
    }
    const e = new RemusError('TIMEOUT', `${stepName(c.step, c.checkpoint)} did not finish in time (${domainTimeout} ms)`, { op: c.step });
    c.lazy.abort(e);
    c.fail(e);
  }
  const onLoopAbort = (): void => {
    const c = current;
    if (!c) return;
    const e = new RemusError('ABORTED', `${stepName(c.step, c.checkpoint)} was aborted`, { op: c.step, cause: options.signal?.reason });
    c.lazy.abort(e);
    c.fail(e);
  };
  options.signal?.addEventListener('abort', onLoopAbort, { once: true });
  const domainStep = (step: 'suspend' | 'save' | 'resume' | 'ack', checkpoint: number, startedAt = performance.now()): Promise<void> => {
    if (options.signal?.aborted) {
      return Promise.reject(new RemusError('ABORTED', `${stepName(step, checkpoint)} was aborted`, { op: step, cause: options.signal.reason }));
    }
    // One context per checkpoint for its domain steps (a step's timeout fails the whole checkpoint anyway); a fresh one after an abort.
    if (stepCtx === undefined || stepCtx.checkpoint !== checkpoint || stepCtx.aborted) stepCtx = new LazyContext(checkpoint, epoch, '');
    const lazy = stepCtx;
    if (watchdog === undefined) armWatchdog(domainTimeout);
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (f: () => void): void => {
        if (settled) return;
        settled = true;
        if (current === me) current = undefined;
        f();
      };
      const me = { step, checkpoint, startedAt, lazy, fail: (e: RemusError) => settle(() => reject(e)) };
      current = me;
      const ctx: DomainStepContext = lazy;
      let p: unknown;
      try {
        p = step === 'ack' ? domain.waitAck(ctx) : domain[step](ctx);
      } catch (e) {
        settle(() => reject(e));
        return;
      }
      Promise.resolve(p).then(
        () => settle(resolve),
        (e: unknown) => settle(() => reject(e)),
      );
    });
  };
  const stopDomainSteps = (): void => {
    if (watchdog !== undefined) clearTimeout(watchdog);
    options.signal?.removeEventListener('abort', onLoopAbort);
  };

  let step: CheckpointStep = 'suspend';
  const yields = { last: performance.now() };
  let nextStart = performance.now();
  try {
    while (done < max && !options.stop?.aborted) {
      const checkpoint = done + 1;
      // Steps run back to back: each step's end is the next one's start (one clock read per step).
      const tSuspend = performance.now();
      // A failed suspend may have half-suspended the domain: the failure policy resumes it too.
      suspended = true;
      step = 'suspend';
      await domainStep('suspend', checkpoint, tSuspend);
      const suspendedEnd = performance.now();
      step = 'postsuspend';
      await devices.postsuspend();
      const epochClosed = performance.now();
      step = 'save';
      await domainStep('save', checkpoint, epochClosed);
      const saved = performance.now();
      step = 'preresume';
      await devices.preresume();
      const preresumed = performance.now();
      step = 'resume';
      await domainStep('resume', checkpoint, preresumed);
      const resumed = performance.now();
      suspended = false;
      step = 'ack';
      await domainStep('ack', checkpoint, resumed);
      const acked = performance.now();
      step = 'commit';
      // The fence: checked in the same synchronous stretch that starts every commit op.
      if (arbiter) fence(arbiter, epoch, checkpoint);
      await devices.commit();
      const committed = performance.now();
      done = checkpoint;
      if (options.onCheckpoint) {
        emit(options.onCheckpoint, {
          checkpoint,
          suspendedAt: wallClock(tSuspend),
          ackedAt: wallClock(acked),
          committedAt: wallClock(committed),
          pauseMs: resumed - tSuspend,
          commitLatencyMs: committed - epochClosed,
          steps: {
            suspend: suspendedEnd - tSuspend,
            postsuspend: epochClosed - suspendedEnd,
            save: saved - epochClosed,
            preresume: preresumed - saved,
            resume: resumed - preresumed,
            ack: acked - resumed,
            commit: committed - acked,
          },
          rate: done / ((committed - loopStart) / 1000),
        });
      }
      if (done >= max || options.stop?.aborted) break;
      const now = performance.now();
      nextStart = fixedRate ? Math.max(nextStart + intervalMs, now) : now + intervalMs;
      // Back-to-back checkpoints skip the wait (an async call) until a yield is due.
      if (nextStart > now || now - yields.last >= YIELD_MS) await wait(nextStart - now, options.stop, options.signal, yields);
      else if (options.signal?.aborted) throw new RemusError('ABORTED', 'the checkpoint loop was aborted', { cause: options.signal.reason });
    }
  } catch (e) {
    failure = roleLost(e)
      ? new RemusError('ROLE_LOST', `checkpoint ${done + 1}: output not released: ${e.message}`, {
          op: 'commit',
          cause: e,
          details: { ...e.details, checkpoint: done + 1, step, committed: done },
        })
      : new RemusError('CHECKPOINT_FAILED', `checkpoint ${done + 1} failed at step ${step}: ${describeCause(e)}`, {
          op: step,
          cause: e,
          details: { checkpoint: done + 1, step, committed: done },
        });
  }
  const teardownFailures: RemusError[] = [];
  if (failure?.code === 'ROLE_LOST') {
    // The domain runs (it was resumed before the ack): freeze it before the devices go, so nothing leaves unfenced.
    try {
      await domainStep('suspend', done + 1);
    } catch (e) {
      teardownFailures.push(new RemusError('DOMAIN_FAILED', `suspending ${domain.name} after the role was lost failed: ${describeCause(e)}; stop it now`, { op: 'suspend', cause: e }));
    }
  } else if (failure && suspended && onFailure === 'resume') {
    try {
      await domainStep('resume', done + 1);
    } catch (e) {
      teardownFailures.push(new RemusError('DOMAIN_FAILED', `resuming ${domain.name} after the failure failed: ${describeCause(e)}`, { op: 'resume', cause: e }));
    }
  }
  stopDomainSteps();
  try {
    await devices.teardown();
  } catch (e) {
    teardownFailures.push(...(e instanceof RemusError && e.failures.length > 0 ? e.failures : [e as RemusError]));
  }
  if (failure) {
    throw new RemusError(failure.code, failure.message, {
      op: failure.op,
      cause: failure.cause,
      details: { ...failure.details, policy: failure.code === 'ROLE_LOST' ? 'suspend' : onFailure },
      failures: teardownFailures,
    });
  }
  if (teardownFailures.length > 0) {
    throw new RemusError('PHASE_FAILED', `teardown after the loop failed on ${teardownFailures.length} item(s)`, {
      op: 'teardown',
      failures: teardownFailures,
    });
  }
  return { checkpoints: done, stoppedBy: done >= max ? 'limit' : 'request', durationMs: performance.now() - loopStart };
}

/** The role lapse a fence found (carried from {@link fence} to the loop's catch). */
class RoleLapse extends RemusError {}

function roleLost(e: unknown): e is RoleLapse {
  return e instanceof RoleLapse;
}

/** Throws a {@link RoleLapse} unless output of `epoch` may be released now. Synchronous, memory only. */
function fence(arbiter: Arbiter, epoch: number, checkpoint: number): void {
  const now = performance.now();
  let role;
  try {
    role = arbiter.role();
  } catch (e) {
    throw new RoleLapse('ROLE_LOST', `arbiter ${arbiter.name}: role() threw (${describeCause(e)})`, { cause: e, details: { epoch, checkpoint } });
  }
  const lapse = roleLapse(role, epoch, now);
  if (lapse === undefined) return;
  throw new RoleLapse('ROLE_LOST', `arbiter ${arbiter.name}: ${lapse}`, {
    details: { epoch, checkpoint, role: { held: role.held, epoch: role.epoch, deadline: role.deadline }, now },
  });
}

/** Waits `ms`, returning early (without error) on a graceful stop; a hard abort rejects. */
/** Longest stretch of back-to-back checkpoints without a yield to the event loop. */
const YIELD_MS = 1;

async function wait(ms: number, stop: AbortSignal | undefined, abort: AbortSignal | undefined, yields: { last: number }): Promise<void> {
  if (ms <= 0) {
    // Still yield to the event loop at least every YIELD_MS, so stop requests,
    // signals and timers are seen at any rate (a yield costs about 3 us: not
    // one per checkpoint when checkpoints take microseconds).
    if (performance.now() - yields.last >= YIELD_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      yields.last = performance.now();
    }
    if (abort?.aborted) throw new RemusError('ABORTED', 'the checkpoint loop was aborted', { cause: abort.reason });
    return;
  }
  // A listener on each signal, taken back when the wait ends: not
  // AbortSignal.any, whose composite Node 20 keeps in both signals for as
  // long as they live (about 100 bytes per checkpoint, never freed).
  if (!stop?.aborted && !abort?.aborted) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        stop?.removeEventListener('abort', done);
        abort?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      stop?.addEventListener('abort', done, { once: true });
      abort?.addEventListener('abort', done, { once: true });
    });
  }
  if (abort?.aborted) throw new RemusError('ABORTED', 'the checkpoint loop was aborted', { cause: abort.reason });
}

/** A performance.now() reading as wall-clock ms since the epoch, keeping sub-millisecond precision. */
function wallClock(t: number): number {
  return performance.timeOrigin + t;
}

function emit(f: (x: CheckpointFigures) => void, x: CheckpointFigures): void {
  try {
    f(x);
  } catch {
    // A listener's fault does not stop the loop.
  }
}
