/**
 * Bounded, abortable waits: the one set every package uses. Each wait has a
 * name (`what`) that its TIMEOUT or ABORTED error carries, a time limit, and
 * an optional AbortSignal; none leaves a timer or listener behind.
 */
import type { EventEmitter } from 'node:events';
import { RemusError, isRemusError } from './errors.js';
import type { ErrorOrigin } from './errors.js';
import { validateDuration } from './validate.js';

/**
 * Settles like `p`, unless `signal` fires first: then rejects with
 * `toError(signal.reason)` (default: the reason itself). A late result of `p`
 * is dropped and a late rejection is handled, never unhandled.
 */
export function raceSignal<T>(
  p: Promise<T>,
  signal: AbortSignal,
  toError: (reason: unknown) => unknown = (reason) => reason,
): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(toError(signal.reason));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(toError(signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/**
 * The error for an aborted wait: the signal's reason when it already is a
 * RemusError (a TIMEOUT of an outer deadline stays a TIMEOUT), else ABORTED
 * naming `what`, with the reason as cause.
 */
export function abortError(signal: AbortSignal, what: string, origin: ErrorOrigin = {}): RemusError {
  const reason: unknown = signal.reason;
  if (isRemusError(reason)) return reason;
  return new RemusError('ABORTED', `${what}: aborted`, { ...origin, cause: reason });
}

/** Waits `ms` milliseconds; rejects with {@link abortError} when `signal` fires first. */
export function sleep(ms: number, signal?: AbortSignal, what = 'wait'): Promise<void> {
  validateDuration(ms, `${what}: sleep time`, { min: 0 });
  if (signal?.aborted) return Promise.reject(abortError(signal, what));
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(signal!, what));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface DeadlineOptions {
  /** What is waited for, for messages ("QEMU to exit", "DRBD resource r0 to connect"). */
  readonly what: string;
  /** Time limit in ms (at most {@link MAX_TIMER_MS}). */
  readonly timeoutMs: number;
  /** The caller's signal: aborting it aborts the work. */
  readonly signal?: AbortSignal;
  /** Device, subkind and op for the error. */
  readonly origin?: ErrorOrigin;
}

/**
 * Runs `work` with a signal that fires when `timeoutMs` passes (the work is
 * then rejected with TIMEOUT naming `what` and the limit) or when the caller's
 * signal fires (ABORTED). The work should stop when its signal fires; its late
 * result is dropped either way.
 */
export function withDeadline<T>(work: (signal: AbortSignal) => Promise<T> | T, options: DeadlineOptions): Promise<T> {
  const { what, timeoutMs, signal, origin = {} } = options;
  validateDuration(timeoutMs, `${what}: time limit`, { min: 0 });
  if (signal?.aborted) return Promise.reject(abortError(signal, what, origin));
  const ac = new AbortController();
  const timeout = new RemusError('TIMEOUT', `${what}: no result within ${timeoutMs} ms`, {
    ...origin,
    details: { timeoutMs },
  });
  const timer = setTimeout(() => ac.abort(timeout), timeoutMs);
  const onAbort = (): void => ac.abort(abortError(signal!, what, origin));
  signal?.addEventListener('abort', onAbort, { once: true });
  let p: Promise<T>;
  try {
    p = Promise.resolve(work(ac.signal));
  } catch (e) {
    p = Promise.reject(e);
  }
  return raceSignal(p, ac.signal).finally(() => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  });
}

export interface PollOptions extends DeadlineOptions {
  /** Pause between probes in ms. */
  readonly intervalMs: number;
  /** The last observed state, appended to the TIMEOUT message ("state: Connecting"). */
  readonly describe?: () => string;
}

/**
 * Calls `probe` until it returns a value other than `undefined` or `false`
 * and resolves with it; a probe that throws rejects at once. TIMEOUT (with
 * `describe()`) after `timeoutMs`; ABORTED when the caller's signal fires.
 */
export async function pollUntil<T>(
  probe: (signal: AbortSignal) => T | undefined | false | Promise<T | undefined | false>,
  options: PollOptions,
): Promise<Exclude<T, undefined | false>> {
  const { intervalMs, describe } = options;
  validateDuration(intervalMs, `${options.what}: poll interval`, { min: 0 });
  try {
    return await withDeadline(async (signal) => {
      for (;;) {
        const v = await probe(signal);
        if (v !== undefined && v !== false) return v as Exclude<T, undefined | false>;
        await sleep(intervalMs, signal, options.what);
      }
    }, options);
  } catch (e) {
    if (isRemusError(e, 'TIMEOUT') && describe) {
      let state: string;
      try {
        state = describe();
      } catch (d) {
        state = `(could not describe: ${(d as Error)?.message ?? String(d)})`;
      }
      throw new RemusError(e.code, `${e.message}; last seen: ${state}`, {
        device: e.device,
        subkind: e.subkind,
        op: e.op,
        details: { ...e.details, lastSeen: state },
      });
    }
    throw e;
  }
}

export interface NextEventOptions extends DeadlineOptions {
  /** Only arguments this accepts settle the wait (default: the first emission). */
  readonly filter?: (...args: any[]) => boolean;
  /** Events that reject the wait (e.g. `'error'`, `'close'`); an Error argument becomes the cause. */
  readonly rejectOn?: readonly (string | symbol)[];
}

/** Resolves with the arguments of the next `event` of `emitter` that passes `filter`; bounded and abortable. */
export function nextEvent(emitter: EventEmitter, event: string | symbol, options: NextEventOptions): Promise<unknown[]> {
  const { what, origin = {}, filter, rejectOn = [] } = options;
  return withDeadline(
    (signal) =>
      new Promise<unknown[]>((resolve, reject) => {
        const listeners: [string | symbol, (...args: unknown[]) => void][] = [];
        const done = (): void => {
          for (const [e, l] of listeners) emitter.off(e, l);
          signal.removeEventListener('abort', done);
        };
        const on = (e: string | symbol, l: (...args: unknown[]) => void): void => {
          listeners.push([e, l]);
          emitter.on(e, l);
        };
        on(event, (...args) => {
          let ok: boolean;
          try {
            ok = filter ? filter(...args) : true;
          } catch (err) {
            done();
            reject(err);
            return;
          }
          if (!ok) return;
          done();
          resolve(args);
        });
        for (const r of rejectOn) {
          on(r, (...args) => {
            done();
            const cause = args.find((a) => a instanceof Error);
            reject(
              isRemusError(cause)
                ? cause
                : new RemusError('OP_FAILED', `${what}: ${String(r)}${cause ? `: ${(cause as Error).message}` : ''}`, {
                    ...origin,
                    cause,
                  }),
            );
          });
        }
        signal.addEventListener('abort', done, { once: true });
      }),
    options,
  );
}
