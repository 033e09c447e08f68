import { readdirSync } from 'node:fs';
import { liveStartTime, procStat, processAlive } from '@remus/core';

/** The process's start time (clock ticks since boot), or undefined when it is gone (or a zombie): core's `liveStartTime`. */
export function startTimeOf(pid: number): string | undefined {
  return liveStartTime(pid);
}

/**
 * Whether `pid` is a live process (and, given `startTime`, the same one):
 * a zombie (killed, not yet reaped by its parent) counts as gone, a reused
 * pid with another start time too. Core's `processAlive`, re-exported.
 */
export { processAlive };

/** Live children of `parent` (default: this process), optionally only those whose command name is `comm`. */
export function childProcesses(comm?: string, parent = process.pid): number[] {
  const found: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const s = procStat(Number(p));
    if (!s || s.state === 'Z' || s.state === 'X' || s.state === 'x') continue;
    if (s.ppid === parent && (comm === undefined || s.comm === comm)) found.push(s.pid);
  }
  return found;
}
