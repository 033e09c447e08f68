/**
 * Run figures (checkpoint rate, pause percentiles, held and released output)
 * and how they are shown: a live line on a terminal, periodic lines when the
 * output is not a terminal, or a JSON event stream (`--json`, one object per
 * line).
 */
import type { Writable } from 'node:stream';
import type { CheckpointFigures } from '@remus/core';

/** The q-quantile (0..1) of `values` by nearest rank; NaN when empty. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

/** Device figures summed over devices, per key (e.g. `held`, `released`). */
export type DeviceTotals = Record<string, number>;

/** The device counters that add up over devices (others, like a queue number, do not). */
export const COUNTERS = ['held', 'released', 'dropped', 'heldBytes', 'releasedBytes'] as const;

/** Sums each counter of {@link COUNTERS} over every device that reports it. */
export function sumStats(list: readonly { stats: Readonly<Record<string, number>> }[]): DeviceTotals {
  const out: DeviceTotals = {};
  for (const { stats } of list) {
    for (const k of COUNTERS) {
      const v = stats[k];
      if (typeof v === 'number') out[k] = (out[k] ?? 0) + v;
    }
  }
  return out;
}

/** The figures of a run so far. */
export interface RunSummary {
  readonly checkpoints: number;
  /** Checkpoints per second over the run. */
  readonly rate: number;
  readonly pauseP50Ms: number;
  readonly pauseP99Ms: number;
  readonly commitLatencyP50Ms: number;
  readonly commitLatencyP99Ms: number;
  readonly durationMs: number;
  readonly devices: DeviceTotals;
}

/** Collects checkpoint figures. Keeps every pause (8 bytes each: about 1 MB per hour at 40/s). */
export class RunFigures {
  readonly #pauses: number[] = [];
  readonly #commits: number[] = [];
  readonly #started = performance.now();
  #devices: DeviceTotals = {};
  #last: CheckpointFigures | undefined;

  /** Records a committed checkpoint and the device totals after it. */
  add(f: CheckpointFigures, devices: DeviceTotals): void {
    this.#pauses.push(f.pauseMs);
    this.#commits.push(f.commitLatencyMs);
    this.#devices = devices;
    this.#last = f;
  }

  /** The last committed checkpoint's figures. */
  get last(): CheckpointFigures | undefined {
    return this.#last;
  }

  /** The figures so far (percentiles over every checkpoint). */
  summary(): RunSummary {
    const durationMs = performance.now() - this.#started;
    return {
      checkpoints: this.#pauses.length,
      rate: this.#last?.rate ?? 0,
      pauseP50Ms: percentile(this.#pauses, 0.5),
      pauseP99Ms: percentile(this.#pauses, 0.99),
      commitLatencyP50Ms: percentile(this.#commits, 0.5),
      commitLatencyP99Ms: percentile(this.#commits, 0.99),
      durationMs,
      devices: { ...this.#devices },
    };
  }
}

/** Output mode: live terminal line, plain periodic lines, JSON events, or nothing. */
export type ViewMode = 'tty' | 'lines' | 'json' | 'quiet';

/** Shows a run's progress on `out` in the chosen mode. */
export class ProgressView {
  readonly mode: ViewMode;
  readonly #out: Writable;
  /** The figures shown (the run adds to them). */
  readonly figures: RunFigures;
  #timer: NodeJS.Timeout | undefined;
  #lineShown = false;

  constructor(mode: ViewMode, out: Writable, figures: RunFigures) {
    this.mode = mode;
    this.#out = out;
    this.figures = figures;
  }

  /** Starts the periodic display (terminal: 4 times a second; lines: every 5 s). */
  start(): void {
    if (this.mode === 'tty') this.#timer = setInterval(() => this.#draw(), 250);
    if (this.mode === 'lines') this.#timer = setInterval(() => this.#out.write(`${statusLine(this.figures.summary())}\n`), 5000);
    this.#timer?.unref();
  }

  /** Writes a JSON event (json mode only). */
  event(type: string, body: Record<string, unknown> = {}): void {
    if (this.mode !== 'json') return;
    this.#out.write(`${JSON.stringify({ type, time: new Date().toISOString(), ...body })}\n`);
  }

  /** A human message (not in json or quiet mode). */
  say(text: string): void {
    if (this.mode === 'json' || this.mode === 'quiet') return;
    this.#clearLine();
    this.#out.write(`${text}\n`);
  }

  /** After each committed checkpoint: the figures, the device totals and each device's own stats. */
  checkpoint(f: CheckpointFigures, devices: DeviceTotals, perDevice: readonly unknown[] = []): void {
    this.event('checkpoint', { ...f, devices, perDevice });
  }

  /** Stops the periodic display and clears the live line. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#clearLine();
  }

  #draw(): void {
    this.#out.write(`\r\x1b[2K${statusLine(this.figures.summary())}`);
    this.#lineShown = true;
  }

  #clearLine(): void {
    if (this.#lineShown) this.#out.write('\r\x1b[2K');
    this.#lineShown = false;
  }
}

/** `checkpoints 120  rate 39.8/s  pause p50 1.20 ms p99 3.40 ms  held 12 released 11` */
export function statusLine(s: RunSummary): string {
  const dev = (['held', 'released', 'dropped'] as const)
    .filter((k) => s.devices[k] !== undefined)
    .map((k) => `${k} ${s.devices[k]}`)
    .join(' ');
  return `checkpoints ${s.checkpoints}  rate ${s.rate.toFixed(1)}/s  pause p50 ${ms(s.pauseP50Ms)} p99 ${ms(s.pauseP99Ms)}  commit p50 ${ms(s.commitLatencyP50Ms)}${dev ? `  ${dev}` : ''}`;
}

/** `1.23 ms`, or `-` when there is no value. */
export function ms(v: number): string {
  return Number.isNaN(v) ? '-' : `${v.toFixed(2)} ms`;
}
