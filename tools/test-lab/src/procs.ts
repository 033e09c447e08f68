import { readdirSync, readFileSync } from 'node:fs';

/** The fields of /proc/<pid>/stat after the command name (state first), or undefined when the process is gone. */
function statFields(pid: number): { comm: string; fields: string[] } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const close = stat.lastIndexOf(')');
  return { comm: stat.slice(stat.indexOf('(') + 1, close), fields: stat.slice(close + 2).split(' ') };
}

/** The process's start time (clock ticks since boot), or undefined when it is gone. */
export function startTimeOf(pid: number): string | undefined {
  return statFields(pid)?.fields[19];
}

/**
 * Whether `pid` is a live process (and, given `startTime`, the same one):
 * a zombie (killed, not yet reaped by its parent) counts as gone, a reused
 * pid with another start time too.
 */
export function processAlive(pid: number, startTime?: string): boolean {
  const s = statFields(pid);
  if (!s || s.fields[0] === 'Z' || s.fields[0] === 'X') return false;
  return startTime === undefined || s.fields[19] === startTime;
}

/** Live children of `parent` (default: this process), optionally only those whose command name is `comm`. */
export function childProcesses(comm?: string, parent = process.pid): number[] {
  const found: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const s = statFields(Number(p));
    if (!s || s.fields[0] === 'Z') continue;
    if (Number(s.fields[1]) === parent && (comm === undefined || s.comm === comm)) found.push(Number(p));
  }
  return found;
}
