/**
 * The watchdog of a COLO pair: QEMU has no heartbeat of its own (when the
 * secondary dies and nobody fails the primary over, colo-compare holds every
 * reply forever), so the driver probes both sides and reports a side that
 * is gone (pid), hung (QMP silent) or whose peer's COLO ended with an error.
 */
import { processAlive, sleep } from '@remus/core';
import { isQmpRefusal, type QmpClient } from '@remus/qmp';
import type { ColoRole } from './params.js';

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

/** The default watchdog bounds. */
export const DEFAULT_WATCHDOG = { intervalMs: 200, probeTimeoutMs: 1500, misses: 3 } as const;

/** The longest a hung peer goes unnoticed with these watchdog options, ms. */
export function watchdogBoundMs(options: ColoWatchdogOptions = {}): number {
  const w = { ...DEFAULT_WATCHDOG, ...options };
  return (w.intervalMs + w.probeTimeoutMs) * w.misses + w.intervalMs;
}

/** True when `pid` is a process of this host that has not exited (a zombie counts as gone): core's `processAlive`, re-exported. */
export { processAlive };

/** One side as the watchdog sees it. */
export interface WatchedSide {
  readonly role: ColoRole;
  /** Pid of its QEMU on this host, if known. */
  readonly pid: number | undefined;
  /** The connection probes go through (the events monitor when there is one). */
  readonly probe: QmpClient;
}

/** A running watchdog; `stop()` ends it at once (a probe in flight is abandoned) and is idempotent. */
export interface Watchdog {
  stop(): void;
}

/**
 * Probes every side each `intervalMs` (pid first, then `query-colo-status`
 * within `probeTimeoutMs`) until stopped. Calls `onFailure(role, why)` for
 * a side that is gone or missed `misses` probes in a row, and for the peer
 * of a side whose COLO ended with an error. A refusal from QEMU counts as
 * an answer (alive). `onFailure` must not throw.
 */
export function startWatchdog(sides: readonly WatchedSide[], options: ColoWatchdogOptions, onFailure: (failed: ColoRole, why: string) => void): Watchdog {
  const w = { ...DEFAULT_WATCHDOG, ...options };
  const ac = new AbortController();
  const misses = new Map<ColoRole, number>();
  const probe = async (side: WatchedSide): Promise<void> => {
    if (side.pid !== undefined && !processAlive(side.pid)) return onFailure(side.role, `process ${side.pid} is gone`);
    try {
      const st = await side.probe.execute<{ mode?: string; reason?: string }>('query-colo-status', undefined, { timeoutMs: w.probeTimeoutMs, signal: ac.signal });
      misses.set(side.role, 0);
      if (st.mode === 'none' && st.reason === 'error') {
        onFailure(side.role === 'primary' ? 'secondary' : 'primary', `query-colo-status on the ${side.role}: COLO ended with an error`);
      }
    } catch (e) {
      if (ac.signal.aborted) return;
      if (isQmpRefusal(e)) return void misses.set(side.role, 0); // QEMU answered (with an error): alive
      const n = (misses.get(side.role) ?? 0) + 1;
      misses.set(side.role, n);
      if (n >= w.misses) onFailure(side.role, `QMP silent for ${w.misses} probes of ${w.probeTimeoutMs} ms`);
    }
  };
  void (async () => {
    try {
      for (;;) {
        await sleep(w.intervalMs, ac.signal, 'colo watchdog');
        await Promise.all(sides.map(probe));
      }
    } catch {
      // stopped
    }
  })();
  return { stop: () => ac.abort() };
}
