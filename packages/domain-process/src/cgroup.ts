/**
 * The cgroup freezer, v1 (`freezer.state`) and v2 (`cgroup.freeze`), through
 * plain file writes: no process is spawned, so freezing and thawing fit
 * inside a checkpoint's pause.
 */
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, realpathSync, rmdirSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join, normalize } from 'node:path';
import { RemusError, abortError, liveStartTime, procStat, sleep, validateName } from '@remus/core';
import { ProcessErrors } from './errors.js';

/** Which freezer to use: `auto` picks what the host has (v2 where /sys/fs/cgroup is cgroup2, else v1, else the hybrid v2 mount). */
export type CgroupChoice = 'auto' | 'v1' | 'v2';

/** A freezer hierarchy on this host. */
export interface FreezerHierarchy {
  readonly version: 1 | 2;
  /** Mount point of the hierarchy (e.g. `/sys/fs/cgroup/freezer`). */
  readonly root: string;
}

const CGROUP2_MAGIC = 0x63677270;
const CGROUP1_MAGIC = 0x27e0eb;
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

/** The cell {@link nap} waits on (nobody ever notifies it). */
const NAP_CELL = new Int32Array(new SharedArrayBuffer(4));
/** Sleeps about `ms` (sub-millisecond) blocking this thread, so the CPU goes to whoever waits for it. */
function nap(ms: number): void {
  Atomics.wait(NAP_CELL, 0, 0, ms);
}
/** How long {@link setFrozen} checks with naps before it waits asynchronously, ms. */
const NAP_PHASE_MS = 2;
/** The nap between two checks in that phase, ms. */
const NAP_MS = 0.05;

/**
 * Freezes or thaws the cgroup at `path` and waits until the kernel reports
 * the new state: {@link Freezer.set} on freezer files opened for this call.
 */
export async function setFrozen(path: string, frozen: boolean, signal?: AbortSignal): Promise<void> {
  const f = Freezer.open(path);
  try {
    await f.set(frozen, signal);
  } finally {
    f.close();
  }
}

/**
 * The freezer files of one operation cgroup, opened once: each
 * {@link set} then costs one write and one read per check, not an open,
 * write and close plus an open, read and close (on the 2-vCPU VM of
 * issue 18, a freeze of one process 0.09 ms against 0.24 ms, a thaw 0.017 ms
 * against 0.055 ms). A process domain keeps one for its life; {@link setFrozen}
 * opens one per call. Only these files stay open: `cgroup.procs` is read
 * afresh each time (on v1 an open file keeps serving its first pid list).
 */
export class Freezer {
  readonly #path: string;
  readonly #version: 1 | 2;
  /** freezer.state (v1) or cgroup.freeze (v2), read-write. */
  #control: number;
  /** What {@link reached} reads: freezer.state (v1, the control file) or cgroup.events (v2). */
  #status: number;
  readonly #buf = Buffer.alloc(256);

  private constructor(path: string, version: 1 | 2, control: number, status: number) {
    this.#path = path;
    this.#version = version;
    this.#control = control;
    this.#status = status;
  }

  /** Opens the freezer files of the cgroup at `path` (an operation cgroup: CGROUP_NOT_OURS otherwise). */
  static open(path: string): Freezer {
    assertOperationCgroupForm(path);
    const version = versionOf(path);
    const control = openSync(join(path, version === 1 ? 'freezer.state' : 'cgroup.freeze'), 'r+');
    let status = control;
    if (version === 2) {
      try {
        status = openSync(join(path, 'cgroup.events'), 'r');
      } catch (e) {
        closeSync(control);
        throw e;
      }
    }
    return new Freezer(path, version, control, status);
  }

  /**
   * Freezes or thaws and waits until the kernel reports the new state, and
   * ends with the signal: ABORTED or TIMEOUT, as the signal's reason says.
   * The guest is paused while this waits, and freezing usually takes well
   * under 1 ms: for the first 2 ms it checks every 0.05 ms with a blocking
   * nap in between (the event loop waits at most that long), then every 1 ms
   * asynchronously.
   *
   * Naps, not a busy check every event-loop turn: freezing needs each task
   * of the cgroup to run once, and a task the kernel placed on this
   * process's CPU (it wakes a task near its waker: a process that reads the
   * guest's packets, as nic-nfqueue's in-process buffer does, shares the
   * guest's CPU) got it only when the scheduler preempted the busy check.
   * Measured with `remus demo` inside its router namespace: suspend p50
   * 1.7 ms busy, 0.55 ms with naps.
   */
  async set(frozen: boolean, signal?: AbortSignal): Promise<void> {
    this.request(frozen);
    const started = performance.now();
    while (!this.reached(frozen)) {
      if (signal?.aborted) {
        const timedOut = signal.reason instanceof DOMException && signal.reason.name === 'TimeoutError';
        const reason = abortError(signal, `cgroup ${this.#path} to become ${frozen ? 'frozen' : 'thawed'}`);
        throw new RemusError(timedOut ? 'TIMEOUT' : reason.code, `cgroup ${this.#path} did not become ${frozen ? 'frozen' : 'thawed'}`, {
          cause: signal.reason,
        });
      }
      if (performance.now() - started < NAP_PHASE_MS) nap(NAP_MS);
      else await sleep(1, signal, `cgroup ${this.#path} to become ${frozen ? 'frozen' : 'thawed'}`).catch(() => undefined);
    }
  }

  /** Starts freezing (`true`) or thawing (`false`); returns at once. */
  request(frozen: boolean): void {
    if (this.#control < 0) throw new RemusError('STATE', `the freezer of cgroup ${this.#path} is closed`);
    const word = this.#version === 1 ? (frozen ? V1_FROZEN : V1_THAWED) : frozen ? V2_FROZEN : V2_THAWED;
    writeSync(this.#control, word, 0, word.length, 0);
  }

  /** True once the cgroup reached the wanted state (read at offset 0: the kernel renders the file afresh). */
  reached(frozen: boolean): boolean {
    const n = readSync(this.#status, this.#buf, 0, this.#buf.length, 0);
    const text = this.#buf.toString('latin1', 0, n);
    if (this.#version === 1) return text.trim() === (frozen ? 'FROZEN' : 'THAWED');
    return text.includes(frozen ? 'frozen 1' : 'frozen 0');
  }

  /** Closes the files. Idempotent; {@link set} fails afterwards. */
  close(): void {
    if (this.#control < 0) return;
    if (this.#status !== this.#control) closeSync(this.#status);
    closeSync(this.#control);
    this.#control = -1;
    this.#status = -1;
  }
}

const V1_FROZEN = Buffer.from('FROZEN');
const V1_THAWED = Buffer.from('THAWED');
const V2_FROZEN = Buffer.from('1');
const V2_THAWED = Buffer.from('0');

/**
 * Name of the freeze keeper: an empty child of an operation cgroup, kept
 * FROZEN (cgroup v1 only) for the operation's life. On v1 the kernel turns a
 * static key on when the first cgroup of the host starts freezing and off
 * when the last one thaws, and each flip patches kernel text on every CPU:
 * 6-7 ms (p99 15-28 ms) on a 2-vCPU VM, on every freeze AND every thaw of a
 * lone cgroup. With the keeper frozen the key stays on, and freezing or
 * thawing one process takes 0.03-0.15 ms. It holds no process; removing the
 * operation cgroup removes it first.
 */
const FREEZE_KEEPER = 'freeze-keeper';

/**
 * Makes the freeze keeper (see FREEZE_KEEPER) inside the v1 cgroup at
 * `path` and freezes it. Nothing for v2 (its freezer has no such key). Best
 * effort: a failure only costs speed, so it returns false instead of throwing.
 */
export function addFreezeKeeper(path: string): boolean {
  if (versionOf(path) !== 1) return false;
  const keeper = join(path, FREEZE_KEEPER);
  try {
    mkdirSync(keeper);
    writeFileSync(join(keeper, 'freezer.state'), 'FROZEN');
    return true;
  } catch {
    try {
      rmdirSync(keeper);
    } catch {
      // Not made.
    }
    return false;
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
 * For crash recovery of a domain that protected a running pid. Refuses
 * (`process/CGROUP_NOT_OURS`, nothing touched) any path that is not exactly
 * `<freezer root>/remus-<operation>`; see {@link checkOperationCgroup}.
 */
export async function releaseCgroup(path: string, signal: AbortSignal = AbortSignal.timeout(10_000)): Promise<string[]> {
  if (!existsSync(path) && isOperationCgroupForm(path)) return [];
  checkOperationCgroup(path);
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
 * Removes a cgroup and every process in it. Each round freezes the cgroup,
 * reads its members and each one's start time while frozen (a frozen member
 * cannot exit by itself, so its pid cannot be reused meanwhile), SIGKILLs
 * each member whose pid still has that start time and is still in the
 * cgroup, and thaws so the kills land; a pid whose start time cannot be read
 * is not killed. Then it removes the directory. Bounded by `signal` (default
 * 10 s). Idempotent: a missing cgroup is nothing to do. Returns one line per
 * thing done. Refuses (`process/CGROUP_NOT_OURS`, nothing touched) any path
 * that is not exactly `<freezer root>/remus-<operation>`.
 */
export async function reapCgroup(path: string, signal: AbortSignal = AbortSignal.timeout(10_000)): Promise<string[]> {
  if (!existsSync(path) && isOperationCgroupForm(path)) return [];
  checkOperationCgroup(path);
  const done: string[] = [];
  const killed = new Set<number>();
  for (;;) {
    let freezer: Freezer | undefined;
    try {
      try {
        freezer = Freezer.open(path);
        freezer.request(true);
      } catch {
        // Removed meanwhile: nothing to freeze.
      }
      // Frozen or not, the start-time check below is what makes each kill safe.
      for (let i = 0; i < 50 && !safeReached(freezer, true); i++) await sleep(1, signal, `cgroup ${path} to freeze`).catch(() => undefined);
      const members: [number, string][] = [];
      for (const pid of cgroupPids(path)) {
        const start = processStartTime(pid);
        if (start !== undefined && inCgroup(pid, path)) members.push([pid, start]);
      }
      for (const [pid, start] of members) {
        if (processStartTime(pid) !== start) continue;
        try {
          process.kill(pid, 'SIGKILL');
          if (!killed.has(pid)) done.push(`killed process ${pid} in cgroup ${path}`);
          killed.add(pid);
        } catch {
          // Already gone.
        }
      }
      try {
        freezer?.request(false);
      } catch {
        // Removed meanwhile.
      }
    } finally {
      freezer?.close();
    }
    const left = cgroupPids(path);
    if (left.length === 0) break;
    if (signal.aborted) {
      throw new RemusError('TIMEOUT', `cgroup ${path} still has processes ${left.join(', ')} after SIGKILL`, {
        details: { path, pids: left },
      });
    }
    await sleep(10, signal, `cgroup ${path} to empty`).catch(() => undefined);
  }
  return removeCgroupDir(path, done, signal);
}

/** What {@link cleanupOperationCgroup} is asked to do. */
export interface OperationCgroupCleanup {
  /** The operation id of the run (from its journal). */
  readonly operation: string;
  /** The cgroup path the journal names: it must be exactly `<freezer root>/remus-<operation>`. */
  readonly path: string;
  /** `reap`: kill its members (the run started them); `release`: thaw and move them to the parent alive (a protected pid). */
  readonly mode: 'reap' | 'release';
  /** Bound; default 10 s. */
  readonly signal?: AbortSignal;
}

/**
 * The strict cleanup of a dead run's cgroup, for `remus cleanup`: checks the
 * journal's path against the operation ({@link checkOperationCgroup}: exactly
 * `<freezer root>/remus-<operation>`, a real directory on a cgroup
 * filesystem, no symlink) before anything is touched, then reaps or releases
 * it. Returns one line per thing done ([] when it is already gone). Throws
 * INVALID_ARGUMENT for bad arguments, `process/CGROUP_NOT_OURS` for a path of
 * another form.
 */
export async function cleanupOperationCgroup(o: OperationCgroupCleanup): Promise<string[]> {
  if (typeof o !== 'object' || o === null) throw new RemusError('INVALID_ARGUMENT', 'cleanupOperationCgroup: give { operation, path, mode }');
  if (o.mode !== 'reap' && o.mode !== 'release') {
    throw new RemusError('INVALID_ARGUMENT', `cleanupOperationCgroup: mode ${JSON.stringify(o.mode)} must be "reap" or "release"`);
  }
  if (!isOperationCgroupForm(o.path, o.operation)) checkOperationCgroup(o.path, o.operation);
  if (!existsSync(o.path)) return [];
  checkOperationCgroup(o.path, o.operation);
  const signal = o.signal ?? AbortSignal.timeout(10_000);
  return o.mode === 'reap' ? reapCgroup(o.path, signal) : releaseCgroup(o.path, signal);
}

/** The freezer roots this host has (mount points of a cgroup filesystem), where `remus-<operation>` cgroups live. */
export function freezerRoots(): string[] {
  return [V1_ROOT, ...V2_ROOTS].filter((r) => {
    try {
      const t = statfsSync(r).type;
      return t === CGROUP1_MAGIC || t === CGROUP2_MAGIC;
    } catch {
      return false;
    }
  });
}

const OPERATION_CGROUP = /^remus-([A-Za-z0-9_-]{1,32})$/;

/** The string form alone: `<one of the known roots>/remus-<operation id>`, normalised. No file system access. */
function isOperationCgroupForm(path: unknown, operation?: string): path is string {
  if (typeof path !== 'string' || path.includes('\0') || normalize(path) !== path) return false;
  const m = OPERATION_CGROUP.exec(basename(path));
  if (!m || (operation !== undefined && m[1] !== operation)) return false;
  const root = dirname(path);
  return root === V1_ROOT || V2_ROOTS.includes(root);
}

function assertOperationCgroupForm(path: string): void {
  if (!isOperationCgroupForm(path)) {
    throw new RemusError(ProcessErrors.CGROUP_NOT_OURS, `refusing cgroup ${JSON.stringify(path)}: remus only touches cgroups named exactly <freezer root>/remus-<operation> (roots: ${[V1_ROOT, ...V2_ROOTS].join(', ')})`, {
      details: { path },
    });
  }
}

/**
 * Throws `process/CGROUP_NOT_OURS` (nothing touched) unless `path` is
 * exactly `<freezer root>/remus-<operation>` (`operation` when given), the
 * root a cgroup mount of this host, and the path a real directory on a
 * cgroup filesystem with no symlink on the way. A missing directory passes
 * only the form check.
 */
export function checkOperationCgroup(path: string, operation?: string): void {
  const refuse = (why: string): RemusError =>
    new RemusError(ProcessErrors.CGROUP_NOT_OURS, `refusing cgroup ${JSON.stringify(path)}: ${why}; remus only touches cgroups named exactly <freezer root>/remus-<operation>`, {
      details: { path, operation: operation ?? null },
    });
  if (typeof path !== 'string' || path.includes('\0') || !path.startsWith('/') || normalize(path) !== path) throw refuse('not a normalised absolute path');
  const m = OPERATION_CGROUP.exec(basename(path));
  if (!m) throw refuse('its name is not remus-<operation id>');
  if (operation !== undefined && m[1] !== operation) throw refuse(`it is not the cgroup of operation ${JSON.stringify(operation)}`);
  const root = dirname(path);
  if (!freezerRoots().includes(root)) throw refuse(`its parent is not a freezer root of this host (${freezerRoots().join(', ') || 'none mounted'})`);
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (st.isSymbolicLink() || !st.isDirectory()) throw refuse('not a directory (or a symlink)');
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    return;
  }
  if (real !== path) throw refuse(`it resolves to ${real}`);
  const t = statfsSync(path).type;
  if (t !== CGROUP1_MAGIC && t !== CGROUP2_MAGIC) throw refuse('not on a cgroup file system');
}

/**
 * A process's start time (clock ticks since boot, field 22 of
 * /proc/PID/stat, read by core's `liveStartTime`), as text; undefined when the process is gone, a zombie, or
 * the file cannot be read. Together with the pid it names one process.
 */
export function processStartTime(pid: number): string | undefined {
  return liveStartTime(pid);
}

/** The parent pid of `pid` (field 4 of /proc/PID/stat), undefined when unreadable. */
export function parentPid(pid: number): number | undefined {
  return procStat(pid)?.ppid;
}

/** True when /proc says `pid` is in the cgroup at `path` (in that path's hierarchy). */
function inCgroup(pid: number, path: string): boolean {
  const root = dirname(path);
  const h: FreezerHierarchy = { version: root === V1_ROOT ? 1 : 2, root };
  return cgroupOf(pid, h) === path;
}

function safeReached(freezer: Freezer | undefined, frozen: boolean): boolean {
  if (freezer === undefined) return true;
  try {
    return freezer.reached(frozen);
  } catch {
    return true;
  }
}

/**
 * Removes an emptied cgroup directory, retrying while the kernel still
 * releases exiting members (EBUSY), bounded by `signal`. Appends to and
 * returns `done`; a missing directory is nothing to do.
 */
async function removeCgroupDir(path: string, done: string[], signal: AbortSignal): Promise<string[]> {
  for (;;) {
    // The freeze keeper first (empty; rmdir refuses a cgroup with a child).
    try {
      rmdirSync(join(path, FREEZE_KEEPER));
    } catch {
      // None (v2, or made by an older remus), or already gone; rmdir below says if it is in the way.
    }
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
      await sleep(10, signal, `cgroup ${path} to be removable`).catch(() => undefined);
    }
  }
}
