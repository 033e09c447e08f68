/**
 * The one reader of `/proc/<pid>/stat` (Linux): which process a pid names
 * (its start time), whether it still runs (a zombie does not), its parent.
 *
 * The line is `pid (comm) state ppid ... starttime ...`; `comm` is the
 * command name as the process set it (at most 15 bytes) and may hold
 * spaces, parentheses, digits and newlines, so the fields after it are
 * found after the LAST `)` of the line (no later field holds one).
 */
import { readFileSync } from 'node:fs';

/** What `/proc/<pid>/stat` says about one process. */
export interface ProcStat {
  /** The pid the line is about (field 1). */
  readonly pid: number;
  /** The command name (field 2) without its parentheses; any bytes but NUL, at most 15 (decoded as UTF-8). */
  readonly comm: string;
  /** The state letter (field 3): R, S, D, T, t, I, ...; `Z` (zombie) and `X`/`x` (dead) mean exited, see {@link processAlive}. */
  readonly state: string;
  /** The parent's pid (field 4); 0 for pid 1 and kernel threads' root. */
  readonly ppid: number;
  /**
   * The start time (field 22): clock ticks after boot, as decimal text so
   * that it compares exactly. With the pid it names one process: a pid
   * reused by a later process has another start time.
   */
  readonly startTime: string;
  /** The real-time priority (field 40): 1-99 under SCHED_FIFO or SCHED_RR, 0 otherwise. Undefined when the line is cut short. */
  readonly rtPriority?: number;
  /** The scheduling policy (field 41): 0 SCHED_OTHER, 1 SCHED_FIFO, 2 SCHED_RR, 3 SCHED_BATCH, 5 SCHED_IDLE, 6 SCHED_DEADLINE. Undefined when the line is cut short. */
  readonly policy?: number;
}

/**
 * Parses the text of a `/proc/<pid>/stat` file. Pure. Returns undefined for
 * text that is not such a line (no `pid (`, no closing `)`, a state that is
 * not one letter, a ppid or start time that is not a number).
 */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf(' (');
  const close = text.lastIndexOf(')');
  if (open < 1 || close < open) return undefined;
  const pid = text.slice(0, open);
  // Fields 3.. after ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime ...
  const rest = text.slice(close + 2).split(' ');
  const [state, ppid] = rest;
  const startTime = rest[19];
  if (!/^\d+$/.test(pid) || state === undefined || !/^[A-Za-z]$/.test(state)) return undefined;
  if (ppid === undefined || !/^\d+$/.test(ppid) || startTime === undefined || !/^\d+$/.test(startTime)) return undefined;
  // Fields 40 and 41 (rt_priority, policy) of the main thread, when present.
  const rt = rest[37];
  const policy = rest[38];
  return {
    pid: Number(pid),
    comm: text.slice(open + 2, close),
    state,
    ppid: Number(ppid),
    startTime,
    ...(rt !== undefined && /^\d+$/.test(rt) && policy !== undefined && /^\d+$/.test(policy) ? { rtPriority: Number(rt), policy: Number(policy) } : {}),
  };
}

/**
 * Reads `/proc/<pid>/stat` (sync: one small read of procfs). Returns
 * undefined when there is no such process (or it is unreadable, or `pid`
 * is not a positive safe integer); a zombie is returned, with state `Z`.
 */
export function procStat(pid: number): ProcStat | undefined {
  if (!Number.isSafeInteger(pid) || pid < 1) return undefined;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return parseProcStat(text);
}

/** True for a state letter of a process that has exited: `Z` (zombie: killed or ended, not yet reaped by its parent) or `X`/`x` (dead). */
function exited(state: string): boolean {
  return state === 'Z' || state === 'X' || state === 'x';
}

/**
 * True when `pid` is a process of this host that has not exited: a zombie
 * (killed, not yet reaped by its parent) counts as gone. Given `startTime`
 * (from {@link liveStartTime} or {@link procStat}), also only when the pid
 * still names that process (a reused pid has another start time). Sync.
 */
export function processAlive(pid: number, startTime?: string): boolean {
  const s = procStat(pid);
  return s !== undefined && !exited(s.state) && (startTime === undefined || s.startTime === startTime);
}

/**
 * The start time of `pid` if it is a process that has not exited;
 * undefined when it is gone or a zombie. Record it with the pid to
 * recognise the same process later ({@link processAlive}). Sync.
 */
export function liveStartTime(pid: number): string | undefined {
  const s = procStat(pid);
  return s === undefined || exited(s.state) ? undefined : s.startTime;
}
