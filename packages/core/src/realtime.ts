/**
 * Real-time scheduling for the thread that runs the checkpoint loop.
 *
 * Between suspend and commit the loop's thread does a few hundred
 * microseconds of work, and every wake-up it causes can take its CPU from
 * it: thawing the guest wakes the guest's tasks, and releasing an epoch
 * wakes whoever receives it (on one host, the demo's client). Under
 * SCHED_OTHER the scheduler often runs the woken task first, on the loop's
 * CPU, while the loop waits in the middle of a step. Measured in `remus
 * demo` (2 vCPUs, 50 ms interval; sched_switch traces): the client ran
 * ~200 µs inside the commit's verdict `sendmsg`, and the commit step took
 * 0.66-0.77 ms p50; under SCHED_FIFO 0.41-0.43 ms.
 *
 * {@link enterRealtime} puts the process's main thread (the event loop's,
 * where the checkpoint loop runs) under SCHED_FIFO with reset-on-fork: no
 * ordinary task preempts it, and nothing it starts afterwards (threads,
 * `ip`, `tc`, a guest) inherits the policy. The kernel's real-time
 * throttling (`/proc/sys/kernel/sched_rt_runtime_us`, 950 ms of every
 * second by default) keeps a runaway loop from starving the host. Other
 * threads of the process keep their scheduling.
 *
 * Node has no `sched_setscheduler`, so this runs util-linux's `chrt` with an
 * argument vector, once before the loop and once after it (never per
 * checkpoint), and checks the result in `/proc/<pid>/stat`.
 */
import { RemusError, describeCause } from './errors.js';
import { procStat } from './proc.js';
import { runScript } from './script.js';

/** The priority {@link enterRealtime} asks for by default: above every ordinary task, below the kernel's own real-time threads (50 for threaded interrupts, 99 for migration). */
export const DEFAULT_REALTIME_PRIORITY = 10;

/** SCHED_FIFO and SCHED_RR in `/proc/<pid>/stat`'s policy field. */
const SCHED_FIFO = 1;
const SCHED_RR = 2;

export interface RealtimeOptions {
  /** SCHED_FIFO priority, 1-99. Default {@link DEFAULT_REALTIME_PRIORITY}. */
  readonly priority?: number;
  /** Aborting stops the `chrt` call (ABORTED). */
  readonly signal?: AbortSignal;
  /** Time limit for each `chrt` call, ms. Default 5000. */
  readonly timeoutMs?: number;
  /** The `chrt` to run (a path or a name on PATH). Default `chrt`. */
  readonly chrt?: string;
}

/** What {@link enterRealtime} did, and how to undo it. */
export interface RealtimeHandle {
  /** The main thread's policy now: `fifo`, or `rr` when it already ran under SCHED_RR. */
  readonly policy: 'fifo' | 'rr';
  /** Its real-time priority now. */
  readonly priority: number;
  /** True when the thread already ran under a real-time policy: nothing was changed and {@link restore} does nothing. */
  readonly already: boolean;
  /**
   * Puts the main thread back under SCHED_OTHER (what it had before).
   * Idempotent; never throws: a failure is returned as a message (the thread
   * may then stay real-time until the process exits, which ends it).
   */
  restore(): Promise<string | undefined>;
}

/**
 * Puts this process's main thread under SCHED_FIFO at `priority`, with
 * reset-on-fork (see the module comment). Call it from the main thread,
 * right before the checkpoint loop, and {@link RealtimeHandle.restore} after
 * it. When the thread already runs under SCHED_FIFO or SCHED_RR (an operator
 * started it with `chrt`), it is left as it is.
 *
 * Rejects with INVALID_ARGUMENT for a priority outside 1-99, ABORTED when
 * `signal` aborts, and UNSUPPORTED_HOST when the host refuses (no `chrt`;
 * not root and no CAP_SYS_NICE; a cgroup without real-time runtime), with
 * the fix in the message. Nothing is changed when it rejects.
 */
export async function enterRealtime(options: RealtimeOptions = {}): Promise<RealtimeHandle> {
  const priority = options.priority ?? DEFAULT_REALTIME_PRIORITY;
  if (!Number.isInteger(priority) || priority < 1 || priority > 99) {
    throw new RemusError('INVALID_ARGUMENT', `real-time priority ${String(priority)} is not an integer from 1 to 99: use e.g. ${DEFAULT_REALTIME_PRIORITY}`, { details: { priority } });
  }
  const pid = process.pid;
  const before = procStat(pid);
  if (before?.policy === undefined) {
    throw new RemusError('UNSUPPORTED_HOST', `cannot read the scheduling policy of process ${pid} from /proc/${pid}/stat: real-time scheduling needs Linux with /proc mounted`, { details: { pid } });
  }
  if (before.policy === SCHED_FIFO || before.policy === SCHED_RR) {
    return { policy: before.policy === SCHED_FIFO ? 'fifo' : 'rr', priority: before.rtPriority ?? 0, already: true, restore: () => Promise.resolve(undefined) };
  }
  const chrt = options.chrt ?? 'chrt';
  const timeoutMs = options.timeoutMs ?? 5000;
  const backToOther = (): Promise<void> => runChrt(chrt, ['--other', '--pid', '0', String(pid)], undefined, timeoutMs, priority);
  await runChrt(chrt, ['--fifo', '--reset-on-fork', '--pid', String(priority), String(pid)], options.signal, timeoutMs, priority);
  const after = procStat(pid);
  if (after?.policy !== SCHED_FIFO || after.rtPriority !== priority) {
    // chrt said yes but the kernel shows otherwise: put it back and say so.
    await backToOther().catch(() => undefined);
    throw new RemusError('UNSUPPORTED_HOST', `\`${chrt}\` reported success but process ${pid} runs under policy ${after?.policy ?? 'unknown'} priority ${after?.rtPriority ?? 'unknown'}, not SCHED_FIFO ${priority}: check what else changes this process's scheduling`, {
      details: { pid, priority, policy: after?.policy },
    });
  }
  let restored: Promise<string | undefined> | undefined;
  return {
    policy: 'fifo',
    priority,
    already: false,
    restore: () =>
      (restored ??= backToOther().then(
        () => undefined,
        (e: unknown) => `could not put process ${pid} back under SCHED_OTHER: ${describeCause(e) ?? String(e)}`,
      )),
  };
}

/** How a program asks for real-time scheduling of its loop: `auto` tries and goes on without, `on` requires it, `off` never asks. */
export type RealtimeMode = 'auto' | 'on' | 'off';

/** The modes, for validating configs and flags. */
export const REALTIME_MODES: readonly RealtimeMode[] = ['auto', 'on', 'off'];

/** What a program reports about its loop's scheduling (the `scheduling` event of `remus run` and of the agent). */
export interface RealtimeReport {
  readonly realtime: RealtimeMode;
  readonly policy: 'fifo' | 'rr' | 'other';
  readonly priority?: number;
  readonly already?: boolean;
  /** Why the host refused, when `auto` went on at normal priority. */
  readonly refused?: string;
}

/** What {@link applyRealtime} did: the handle when the thread runs real-time, the refusal when `auto` went on without, and the report of either. */
export interface RealtimeOutcome {
  readonly handle?: RealtimeHandle;
  readonly refused?: RemusError;
  readonly report: RealtimeReport;
}

/**
 * `value` as a {@link RealtimeMode}; INVALID_ARGUMENT naming `what` (a flag or a
 * config field) and the modes otherwise.
 */
export function parseRealtimeMode(value: unknown, what: string): RealtimeMode {
  const mode = REALTIME_MODES.find((m) => m === value);
  if (mode !== undefined) return mode;
  throw new RemusError(
    'INVALID_ARGUMENT',
    `${what} ${JSON.stringify(value)} is not one of ${REALTIME_MODES.join(', ')}: auto runs the checkpoint loop under SCHED_FIFO when the host allows it, on requires it, off never asks`,
    { details: { [what]: value } },
  );
}

/**
 * {@link enterRealtime} as `mode` says, for programs that run the checkpoint
 * loop (`remus run`, `remus demo`, the agent): `off` does nothing; `on`
 * rejects as {@link enterRealtime} does; `auto` returns the refusal instead
 * (the caller warns and the loop runs at normal priority), but still rejects
 * with ABORTED when `signal` aborts.
 */
export async function applyRealtime(mode: RealtimeMode, options: RealtimeOptions = {}): Promise<RealtimeOutcome> {
  if (mode === 'off') return { report: { realtime: mode, policy: 'other' } };
  try {
    const h = await enterRealtime(options);
    return { handle: h, report: { realtime: mode, policy: h.policy, priority: h.priority, already: h.already } };
  } catch (e) {
    if (mode === 'on' || !(e instanceof RemusError) || e.code === 'ABORTED' || e.code === 'INVALID_ARGUMENT') throw e;
    return { refused: e, report: { realtime: mode, policy: 'other', refused: e.message } };
  }
}

async function runChrt(chrt: string, args: string[], signal: AbortSignal | undefined, timeoutMs: number, priority: number): Promise<void> {
  try {
    await runScript(chrt, args, { timeoutMs, ...(signal ? { signal } : {}) });
  } catch (e) {
    if (e instanceof RemusError && e.code === 'ABORTED') throw e;
    // runScript keeps a failed spawn's message (ENOENT) as the cause and chrt's stderr in details.
    const r = e instanceof RemusError ? e : undefined;
    const text = `${describeCause(r?.cause) ?? ''} ${String(r?.details?.['stderrTail'] ?? '')}`;
    const why = /ENOENT/.test(text)
      ? `\`${chrt}\` is not installed: install util-linux (it provides chrt)`
      : /not permitted|EPERM/i.test(text)
        ? `the kernel refused (Operation not permitted): run as root or with CAP_SYS_NICE; inside a container or a systemd unit its cgroup also needs real-time runtime (cpu.rt_runtime_us above 0 where the kernel has RT group scheduling)`
        : `\`${chrt} ${args.join(' ')}\` failed: ${describeCause(e) ?? String(e)}`;
    throw new RemusError('UNSUPPORTED_HOST', `cannot run the checkpoint loop under SCHED_FIFO priority ${priority}: ${why}; or turn real-time scheduling off`, { cause: e, details: { priority, chrt } });
  }
}
