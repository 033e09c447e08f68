/**
 * Reprotect: after a failover the survivor runs unprotected; this makes it
 * the primary of a new pair with a fresh secondary (on the other host or a
 * replacement), without stopping the service for more than the first
 * migration. QEMU's "resume replication" (docs/COLO-FT.txt): the new
 * secondary is set up (NBD export, proxy), the survivor's disks are
 * mirrored into it while the guest runs, then the survivor is stopped, the
 * mirrors cancelled (complete without pivot), the survivor's COLO devices
 * added (a former secondary's proxy filters go before its kept
 * filter-rewriter), x-colo set and the VM migrated; COLO's first checkpoint
 * runs it again.
 *
 * It is {@link ColoPair.connect} plus {@link ColoPair.start} with `resync`
 * (the same start plan with the resync steps, resync.ts), and on failure
 * the new secondary is killed: the survivor serves on, unprotected, as
 * before the call.
 */
import { RemusError, isRemusError } from '@remus/core';
import { ColoPair, type ColoPairOptions, type ColoSide, type ColoStatus } from './driver.js';
import { KILL_CONFIRM_MS, killAndConfirm } from './fence.js';

export interface ColoReprotectOptions extends Omit<ColoPairOptions, 'primary' | 'secondary'> {
  /**
   * The side that serves now (after a failover), which becomes the primary:
   * its QMP sockets, pid, and its devices with the **primary** params of
   * COLO_DEVICE_PARAMS (its proxy's listening addresses, its disk's quorum
   * and the new secondary's NBD server and export).
   */
  readonly survivor: ColoSide;
  /**
   * The new secondary: a QEMU started with the COLO secondary command line
   * (`-incoming` at `migrationUri`, the replication drive over fresh
   * active/hidden images on a disk of the same size), with its secondary
   * devices. Its disk's content does not matter: it is overwritten.
   */
  readonly secondary: ColoSide;
}

export interface ColoReprotectRunOptions {
  /** Bound for the mirrors to be ready, ms (default 600000). */
  readonly mirrorTimeoutMs?: number;
  /** Bound from the migration to both sides in COLO, ms (default 120000). */
  readonly timeoutMs?: number;
  /** Bound for both QMP sockets to answer, ms (default 30000). */
  readonly connectTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * Reprotects `survivor` onto `secondary`. Resolves with the new pair,
 * replicating (watchdog on unless disabled; `status().resync` has the
 * bytes mirrored and the pause); the caller owns it (failover, stop,
 * close). Refuses (STATE, nothing changed) a survivor that is not running
 * or still in COLO. On failure (a step, a timeout, the new secondary's
 * death) it rejects with the step's error, after putting the survivor back
 * as it was (running, unprotected: no proxy, replication child, mirror or
 * NBD client left) and SIGKILLing the new secondary by pid (if given);
 * the message says so.
 */
export async function reprotect(opts: ColoReprotectOptions, run: ColoReprotectRunOptions = {}): Promise<ColoPair> {
  const { survivor, secondary, ...rest } = opts;
  const signal = run.signal ? { signal: run.signal } : {};
  let pair: ColoPair | undefined;
  try {
    pair = await ColoPair.connect({ ...rest, primary: survivor, secondary }, run.connectTimeoutMs ?? 30_000, run.signal);
    const c = pair.qmp('primary');
    const [st, colo] = await Promise.all([c.execute<{ running: boolean; status: string }>('query-status', undefined, signal), c.execute<{ mode: string }>('query-colo-status', undefined, signal)]);
    if (!st.running) throw new RemusError('STATE', `colo reprotect: the survivor is not running (status ${st.status}): nothing to protect`);
    if (colo.mode !== 'none') throw new RemusError('STATE', `colo reprotect: the survivor is still in COLO (mode ${colo.mode}): fail over first`);
    await pair.start({ resync: { timeoutMs: run.mirrorTimeoutMs ?? 600_000 }, ...(run.timeoutMs !== undefined ? { timeoutMs: run.timeoutMs } : {}), ...signal });
    return pair;
  } catch (e) {
    await pair?.close().catch(() => {});
    let killed = '';
    if (secondary.pid !== undefined) {
      const gone = await killAndConfirm(secondary.pid, { timeoutMs: KILL_CONFIRM_MS }).then(
        () => true,
        () => false,
      );
      killed = gone ? `; the new secondary (pid ${secondary.pid}) was killed` : `; the new secondary (pid ${secondary.pid}) did not die within ${KILL_CONFIRM_MS} ms of SIGKILL`;
    }
    const why = e instanceof Error ? e.message : String(e);
    const message = `colo reprotect failed: ${why}; the survivor serves on, unprotected${killed}`;
    if (isRemusError(e)) {
      throw new RemusError(e.code, message, { op: e.op, failures: e.failures, details: { ...e.details, reprotect: true }, cause: e });
    }
    throw new RemusError('OP_FAILED', message, { details: { reprotect: true }, cause: e });
  }
}

export interface ColoAutoReprotectOptions {
  /**
   * Called after the watched pair failed over (and was closed): starts a
   * fresh secondary and returns the reprotect's options (the survivor is
   * `failover.survivor` of the old pair, now the new primary), or
   * `undefined` to end the watch. Its errors end the watch (`onError`).
   */
  readonly next: (failover: NonNullable<ColoStatus['failover']>, signal: AbortSignal) => Promise<ColoReprotectOptions | undefined>;
  /** Bounds of each reprotect. */
  readonly run?: Omit<ColoReprotectRunOptions, 'signal'>;
  /** Each new pair, once it replicates (it becomes the watched pair; the caller closes the last one). */
  readonly onPair?: (pair: ColoPair) => void;
  /** Why the watch ended early: `next` or a reprotect failed (the survivor serves on, unprotected). */
  readonly onError?: (e: unknown) => void;
  /** Each wait for a failover is bounded by this and then renewed, ms. Default 60000. */
  readonly recheckMs?: number;
}

/** A running {@link autoReprotect} watch. */
export interface ColoAutoReprotect {
  /** The pair watched now (the last one reprotected). */
  current(): ColoPair;
  /** Resolves when the watch ended (stopped, the pair failed or stopped, `next` said no, or an error went to `onError`). */
  readonly done: Promise<void>;
  /** Ends the watch (aborts a reprotect in progress, which then puts the survivor back); leaves the current pair as it is. */
  stop(): Promise<void>;
}

/**
 * Automatic reprotect: whenever the watched pair fails over, stops it (see
 * {@link ColoPair.stop}: a primary survivor's leftover proxy chardevs go),
 * asks `next` for a fresh secondary and {@link reprotect}s the survivor onto
 * it; the new pair is watched in turn. Ends when the pair fails or stops
 * (also when `stop()` ends replication with its failover to the primary),
 * when `next` returns undefined, on the first error (`onError`; the survivor
 * serves on, unprotected) or on `stop()`.
 */
export function autoReprotect(pair: ColoPair, o: ColoAutoReprotectOptions): ColoAutoReprotect {
  const abort = new AbortController();
  let current = pair;
  const done = (async () => {
    while (!abort.signal.aborted) {
      let state: string;
      try {
        state = await current.waitForState(['failed-over', 'failed', 'stopped'], o.recheckMs ?? 60_000, abort.signal);
      } catch (e) {
        if (isRemusError(e, 'TIMEOUT')) continue;
        return; // aborted
      }
      const failover = current.status().failover;
      // A stop's own failover to the primary is the planned end, not a failure: the watch ends.
      if (state !== 'failed-over' || !failover || failover.byStop) return;
      try {
        // stop(), not close(): after a failover to the primary it tears down what that
        // failover kept on the survivor (the proxy's chardevs, still bound to their
        // addresses and socket paths), which the new pair may want again; after a
        // failover to the secondary it tears nothing down (the rewriter must stay).
        await current.stop();
        const opts = await o.next(failover, abort.signal);
        if (!opts) return;
        current = await reprotect(opts, { ...o.run, signal: abort.signal });
      } catch (e) {
        if (!abort.signal.aborted) o.onError?.(e);
        return;
      }
      o.onPair?.(current);
    }
  })();
  return {
    current: () => current,
    done,
    async stop() {
      abort.abort();
      await done;
    },
  };
}
