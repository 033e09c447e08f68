/**
 * The checkpoint figures of a COLO pair, from the primary's QMP events:
 * MIGRATION (status `colo`) says COLO runs; then each STOP ... RESUME is one
 * checkpoint, its pause measured on QEMU's own timestamps.
 */
import type { QmpEvent } from '@remus/qmp';

/** Wall clock in ms since the epoch, at sub-ms resolution. */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

function eventMs(e: QmpEvent): number {
  return e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
}

function percentile(sorted: readonly number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** One completed checkpoint. */
export interface CheckpointRecord {
  readonly index: number;
  readonly pauseMs: number;
  /** Came sooner than the delay: forced by colo-compare on divergent output. */
  readonly onDemand: boolean;
}

/**
 * Invariants: `inColo` only goes from false to true; `#stopAt` is set only
 * between a STOP seen in COLO and its RESUME; `#pauses` has one entry per
 * checkpoint, in order.
 */
export class CheckpointFigures {
  /** The primary reported COLO mode (by event, or by the start's query-migrate). */
  inColo = false;
  /** When start() began and when the first checkpoint ended (ms since the epoch). */
  startedAt: number | undefined;
  #firstCheckpointAt: number | undefined;
  #stopAt: number | undefined;
  #lastCheckpointEnd: number | undefined;
  readonly #pauses: number[] = [];
  #onDemand = 0;
  /** The checkpoint delay, ms: a checkpoint starting well before it ran out was forced. */
  readonly #delayMs: number;

  constructor(delayMs: number) {
    this.#delayMs = delayMs;
  }

  /** Takes one event of the primary; returns the checkpoint it completed, if any. */
  onEvent(e: QmpEvent): CheckpointRecord | undefined {
    switch (e.event) {
      case 'MIGRATION':
        if ((e.data as { status?: string }).status === 'colo') this.inColo = true;
        return undefined;
      case 'STOP':
        if (this.inColo) this.#stopAt = eventMs(e);
        return undefined;
      case 'RESUME': {
        if (!this.inColo || this.#stopAt === undefined) return undefined;
        const end = eventMs(e);
        const pauseMs = end - this.#stopAt;
        const onDemand = this.#lastCheckpointEnd !== undefined && this.#stopAt - this.#lastCheckpointEnd < this.#delayMs * 0.8;
        this.#stopAt = undefined;
        this.#lastCheckpointEnd = end;
        this.#pauses.push(pauseMs);
        if (onDemand) this.#onDemand++;
        this.#firstCheckpointAt ??= now();
        return { index: this.#pauses.length, pauseMs, onDemand };
      }
      default:
        return undefined;
    }
  }

  /** The figures part of the pair's status. */
  summary(): {
    checkpoints: number;
    onDemandCheckpoints: number;
    timeToFirstCheckpointMs: number | undefined;
    pauseMs: { p50: number | undefined; p99: number | undefined; max: number | undefined; count: number };
  } {
    const sorted = [...this.#pauses].sort((a, b) => a - b);
    return {
      checkpoints: this.#pauses.length,
      onDemandCheckpoints: this.#onDemand,
      timeToFirstCheckpointMs:
        this.#firstCheckpointAt !== undefined && this.startedAt !== undefined ? this.#firstCheckpointAt - this.startedAt : undefined,
      pauseMs: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1), count: sorted.length },
    };
  }
}
