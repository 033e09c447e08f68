/**
 * The cgroup freezer, v1 (`freezer.state`) and v2 (`cgroup.freeze`), through
 * plain file writes: no process is spawned, so freezing and thawing fit
 * inside a checkpoint's pause.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, statfsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RemusError, validateName } from '@remus/core';

/** Which freezer to use: `auto` picks what the host has (v2 where /sys/fs/cgroup is cgroup2, else v1, else the hybrid v2 mount). */
export type CgroupChoice = 'auto' | 'v1' | 'v2';

/** A freezer hierarchy on this host. */
export interface FreezerHierarchy {
  readonly version: 1 | 2;
  /** Mount point of the hierarchy (e.g. `/sys/fs/cgroup/freezer`). */
  readonly root: string;
}

const CGROUP2_MAGIC = 0x63677270;
const V1_ROOT = '/sys/fs/cgroup/freezer';
const V2_ROOTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];

function isCgroup2(path: string): boolean {
  try {
    return statfsSync(path).type === CGROUP2_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Finds a freezer on this host. Throws UNSUPPORTED_HOST saying what is
 * missing and how to get it.
 */
export function detectFreezer(choice: CgroupChoice = 'auto'): FreezerHierarchy {
  const v2 = V2_ROOTS.find(isCgroup2);
  const v1 = existsSync(join(V1_ROOT, 'freezer.state')) || existsSync(join(V1_ROOT, 'cgroup.procs')) ? V1_ROOT : undefined;
  const pick = (): FreezerHierarchy | undefined => {
    if (choice === 'v1') return v1 ? { version: 1, root: v1 } : undefined;
    if (choice === 'v2') return v2 ? { version: 2, root: v2 } : undefined;
    if (v2 === '/sys/fs/cgroup') return { version: 2, root: v2 };
    if (v1) return { version: 1, root: v1 };
    return v2 ? { version: 2, root: v2 } : undefined;
  };
  const h = pick();
  if (h) return h;
  throw new RemusError(
    'UNSUPPORTED_HOST',
    `no cgroup ${choice === 'auto' ? '' : `${choice} `}freezer on this host: mount one (v1: \`mount -t cgroup -o freezer cgroup ${V1_ROOT}\`; v2: \`mount -t cgroup2 none /sys/fs/cgroup\`)${choice !== 'auto' ? ' or use cgroup "auto"' : ''}`,
    { details: { choice, v1: v1 ?? null, v2: v2 ?? null } },
  );
}

/** Reads a cgroup's member pids (`cgroup.procs`); a missing cgroup has none. */
export function cgroupPids(path: string): number[] {
  let text: string;
  try {
    text = readFileSync(join(path, 'cgroup.procs'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map(Number);
}

/** Which hierarchy version a cgroup directory belongs to (by its files). */
function versionOf(path: string): 1 | 2 {
  return existsSync(join(path, 'cgroup.freeze')) ? 2 : 1;
}

/** Starts freezing (`true`) or thawing (`false`); returns at once. */
function requestFreeze(path: string, version: 1 | 2, frozen: boolean): void {
  if (version === 1) writeFileSync(join(path, 'freezer.state'), frozen ? 'FROZEN' : 'THAWED');
  else writeFileSync(join(path, 'cgroup.freeze'), frozen ? '1' : '0');
}

/** True once the cgroup reached the wanted state. */
function reached(path: string, version: 1 | 2, frozen: boolean): boolean {
  if (version === 1) {
    return readFileSync(join(path, 'freezer.state'), 'utf8').trim() === (frozen ? 'FROZEN' : 'THAWED');
  }
  const events = readFileSync(join(path, 'cgroup.events'), 'utf8');
  return events.includes(frozen ? 'frozen 1' : 'frozen 0');
}

/**
 * Freezes or thaws the cgroup at `path` and waits until the kernel reports
 * the new state. The wait polls (every event-loop turn for 2 ms, then every
 * 1 ms) and ends with the signal: ABORTED or TIMEOUT, as the signal's reason says.
 */
export async function setFrozen(path: string, frozen: boolean, signal?: AbortSignal): Promise<void> {
  const version = versionOf(path);
  requestFreeze(path, version, frozen);
  const started = performance.now();
  while (!reached(path, version, frozen)) {
    if (signal?.aborted) {
      const timedOut = signal.reason instanceof DOMException && signal.reason.name === 'TimeoutError';
      throw new RemusError(timedOut ? 'TIMEOUT' : 'ABORTED', `cgroup ${path} did not become ${frozen ? 'frozen' : 'thawed'}`, {
        cause: signal.reason,
      });
    }
    // The guest is paused while this waits: poll every event-loop turn for
    // the first 2 ms (freezing usually takes well under that), then every ms.
    if (performance.now() - started < 2) await new Promise<void>((r) => setImmediate(r));
    else await sleep(1);
  }
}

/** Makes the cgroup directory `name` under the hierarchy; returns its path. Fails if it exists. */
export function createCgroup(h: FreezerHierarchy, name: string): string {
  validateName(name, 'cgroup name');
  const path = join(h.root, name);
  try {
    mkdirSync(path);
  } catch (e) {
    throw new RemusError('OP_FAILED', `cannot create cgroup ${path}: ${(e as Error).message}`, { cause: e });
  }
  return path;
}

/** Moves `pid` into the cgroup at `path`. */
export function addToCgroup(path: string, pid: number): void {
  writeFileSync(join(path, 'cgroup.procs'), String(pid));
}

/**
 * The cgroup a process is in within the hierarchy mounted at `root`
 * (from /proc/PID/cgroup), as a path, or undefined if the process is gone.
 */
export function cgroupOf(pid: number, h: FreezerHierarchy): string | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [, controllers, rel] = line.split(':');
    if (rel === undefined) continue;
    const match = h.version === 2 ? line.startsWith('0::') : (controllers ?? '').split(',').includes('freezer');
    if (match) return join(h.root, rel);
  }
  return undefined;
}

/**
 * Gives a cgroup's processes back and removes it: thaws it, moves every
 * member to the parent cgroup (their original cgroups are not known after a
 * crash), removes the directory. The processes keep running. Idempotent.
 * For crash recovery of a domain that protected a running pid.
 */
export async function releaseCgroup(path: string, signal: AbortSignal = AbortSignal.timeout(10_000)): Promise<string[]> {
  if (!existsSync(path)) return [];
  const done: string[] = [];
  await setFrozen(path, false, signal).catch(() => undefined);
  const parent = dirname(path);
  for (const pid of cgroupPids(path)) {
    try {
      addToCgroup(parent, pid);
      done.push(`moved process ${pid} back to cgroup ${parent}`);
    } catch {
      // It exited.
    }
  }
  return removeCgroupDir(path, done, signal);
}

/**
 * Removes a cgroup and every process in it: thaws it, SIGKILLs each member,
 * waits (bounded by `signal`, default 10 s) until it is empty, removes the
 * directory. Idempotent: a missing cgroup is nothing to do. Returns one line
 * per thing done. For crash recovery and for teardown.
 */
export async function reapCgroup(path: string, signal: AbortSignal = AbortSignal.timeout(10_000)): Promise<string[]> {
  if (!existsSync(path)) return [];
  const done: string[] = [];
  const killed = new Set<number>();
  const version = versionOf(path);
  try {
    requestFreeze(path, version, false);
  } catch {
    // Thawing is best effort: a removed cgroup has nothing to thaw.
  }
  for (;;) {
    const pids = cgroupPids(path);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        if (!killed.has(pid)) done.push(`killed process ${pid} in cgroup ${path}`);
        killed.add(pid);
      } catch {
        // Already gone.
      }
    }
    if (signal.aborted) {
      throw new RemusError('TIMEOUT', `cgroup ${path} still has processes ${pids.join(', ')} after SIGKILL`, {
        details: { path, pids },
      });
    }
    await sleep(10);
  }
  return removeCgroupDir(path, done, signal);
}

/**
 * Removes an emptied cgroup directory, retrying while the kernel still
 * releases exiting members (EBUSY), bounded by `signal`. Appends to and
 * returns `done`; a missing directory is nothing to do.
 */
async function removeCgroupDir(path: string, done: string[], signal: AbortSignal): Promise<string[]> {
  for (;;) {
    try {
      rmdirSync(path);
      done.push(`removed cgroup ${path}`);
      return done;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return done;
      if (code !== 'EBUSY' || signal.aborted) {
        throw new RemusError('OP_FAILED', `cannot remove cgroup ${path}: ${(e as Error).message}`, { cause: e });
      }
      await sleep(10);
    }
  }
}
