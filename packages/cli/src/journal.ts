/**
 * The run journal: one JSON file per run in the state directory, written
 * before the run creates anything and updated (atomically, synchronously)
 * before each further resource is created. If the run dies, even by SIGKILL,
 * `remus cleanup` reads it and removes what the run left.
 *
 * State directory: `--state-dir`, else `$REMUS_STATE_DIR`, else `/run/remus`.
 */
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { RemusError, liveStartTime, validateName, validateOperationId, type DeviceSpec } from '@remus/core';

export const DEFAULT_STATE_DIR = '/run/remus';

/** The state directory from a flag, the environment, or the default. */
export function stateDir(flag?: string): string {
  return flag ?? process.env.REMUS_STATE_DIR ?? DEFAULT_STATE_DIR;
}

/**
 * Filesystems a state directory must not be on (statfs magic numbers):
 * proc, sysfs, cgroup v1/v2, debugfs, tracefs, securityfs, devpts, bpf,
 * configfs, pstore, efivarfs, selinuxfs, fusectl, binfmt_misc, mqueue,
 * hugetlbfs, nsfs.
 */
const PSEUDO_FS: ReadonlyMap<number, string> = new Map([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0x1cd1, 'devpts'],
  [0xcafe4a11, 'bpf'],
  [0x62656570, 'configfs'],
  [0x6165676c, 'pstore'],
  [0xde5e81e4, 'efivarfs'],
  [0xf97cff8c, 'selinuxfs'],
  [0x65735543, 'fusectl'],
  [0x42494e4d, 'binfmt_misc'],
  [0x19800202, 'mqueue'],
  [0x958458f6, 'hugetlbfs'],
  [0x6e736673, 'nsfs'],
]);
/** Path prefixes refused even where statfs cannot tell (a path not yet made). */
const PSEUDO_PATHS = ['/proc', '/sys', '/dev'];

/**
 * Checks a state directory before remus reads or writes in it; with
 * `create`, makes it (mode 0700) when missing. Refused (INVALID_ARGUMENT,
 * naming the fix): a path on a pseudo filesystem (/proc, /sys, cgroupfs...),
 * a symbolic link, something that is not a directory, a directory not owned
 * by this user or writable by group or others. Returns false when it does
 * not exist (and `create` is false).
 */
export function checkStateDir(dir: string, create: boolean): boolean {
  const abs = resolve(dir);
  const bad = (why: string, fix: string): never => {
    throw new RemusError('INVALID_ARGUMENT', `state directory ${abs} ${why}; fix: ${fix}`, { details: { stateDir: abs } });
  };
  const fix = 'give --state-dir (or REMUS_STATE_DIR) a directory on a real filesystem, e.g. /run/remus';
  if (PSEUDO_PATHS.some((p) => abs === p || abs.startsWith(`${p}/`))) bad(`is under ${PSEUDO_PATHS.find((p) => abs === p || abs.startsWith(`${p}/`))}, a pseudo filesystem`, fix);
  // The nearest existing ancestor tells the filesystem of a directory yet to be made.
  let probe = abs;
  for (;;) {
    let st;
    try {
      st = lstatSync(probe);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(probe) === probe) throw e;
      probe = dirname(probe);
      continue;
    }
    if (probe === abs) {
      if (st.isSymbolicLink()) bad('is a symbolic link', 'give the directory it points to, after checking who controls it');
      if (!st.isDirectory()) bad('is not a directory', fix);
    }
    break;
  }
  const fsType = PSEUDO_FS.get(Number(statfsSync(probe).type));
  if (fsType !== undefined) bad(`is on a ${fsType} filesystem`, fix);
  if (probe !== abs) {
    if (!create) return false;
    mkdirSync(abs, { recursive: true, mode: 0o700 });
  }
  const st = lstatSync(abs);
  if (st.isSymbolicLink() || !st.isDirectory()) bad('is not a directory', fix);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) bad(`is owned by uid ${st.uid}, not by this user (uid ${uid})`, `chown ${uid} ${abs}, or use another directory`);
  if ((st.mode & 0o022) !== 0) bad(`is writable by ${st.mode & 0o002 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o777).toString(8)})`, `chmod go-w ${abs}`);
  return true;
}

/** A plugin as the run used it: enough to rebuild its subkinds for `reap`. */
export interface JournalPlugin {
  readonly package: string;
  /** Directory it was resolved from. */
  readonly from: string;
  /** The package's directory (symlinks resolved) and version as loaded: cleanup loads it from `from` again only if both still hold. */
  readonly dir?: string;
  readonly version?: string;
  readonly subkinds: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

/** A process the run started, with its start time (to tell it from a later process with the same pid). */
export interface JournalProcess {
  readonly pid: number;
  readonly start: string | undefined;
  readonly what: string;
}

export interface JournalData {
  readonly format: 1;
  /** Operation id (every op's ctx.operation, the tag on kernel objects). */
  readonly operation: string;
  /** The remus process running it, and its start time from /proc. */
  readonly pid: number;
  readonly pidStart: string | undefined;
  readonly command: string;
  readonly startedAt: string;
  readonly plugins: JournalPlugin[];
  readonly devices: DeviceSpec[];
  /**
   * How the domain's processes were obtained: `command` (started by the run:
   * cleanup kills them) or `pid` (protected running processes: cleanup gives
   * them back alive). Absent: `command`.
   */
  readonly domainMode?: 'command' | 'pid';
  /** Cgroup directories created (recorded before creation). */
  readonly cgroups: string[];
  /** Network namespaces created (recorded before creation). */
  readonly netns: string[];
  /** Processes started outside any recorded cgroup. */
  readonly processes: JournalProcess[];
}

/** Start time of a process (field 22 of /proc/PID/stat), or undefined if it is gone or a zombie (core's `liveStartTime`). */
export function processStart(pid: number): string | undefined {
  return liveStartTime(pid);
}

/**
 * True when the process recorded as (pid, start) may still run: a live pid
 * with that start time, or a live pid when no start time was recorded (so
 * such a run is left alone rather than cleaned under it).
 */
export function stillRunning(pid: number, start: string | undefined): boolean {
  const now = processStart(pid);
  return now !== undefined && (start === undefined || now === start);
}

/**
 * True only when `pid` runs and is provably the process recorded: its start
 * time is known and equal. What cleanup may signal.
 */
export function sameProcess(pid: number, start: string | undefined): boolean {
  return start !== undefined && processStart(pid) === start;
}

/** A live run's journal. Every mutation is on disk when the call returns. */
export class Journal {
  readonly path: string;
  readonly #data: JournalData;

  private constructor(path: string, data: JournalData) {
    this.path = path;
    this.#data = data;
  }

  /**
   * Creates the journal of a new run (creating the state directory if needed).
   * `owner`: the process whose life is the run's (`remus cleanup` leaves the
   * run alone while it lives); this one, unless the run is a child doing the
   * work of the command the user started (`remus demo` inside its router
   * namespace).
   */
  static create(
    dir: string,
    operation: string,
    command: string,
    plugins: JournalPlugin[],
    devices: readonly DeviceSpec[],
    domainMode: 'command' | 'pid' = 'command',
    owner: number = process.pid,
  ): Journal {
    checkStateDir(dir, true);
    const j = new Journal(join(dir, `${operation}.json`), {
      format: 1,
      operation,
      pid: owner,
      pidStart: processStart(owner),
      command,
      startedAt: new Date().toISOString(),
      plugins,
      devices: [...devices],
      domainMode,
      cgroups: [],
      netns: [],
      processes: [],
    });
    j.#write();
    return j;
  }

  get data(): JournalData {
    return this.#data;
  }

  addCgroup(path: string): void {
    this.#data.cgroups.push(path);
    this.#write();
  }

  addNetns(name: string): void {
    this.#data.netns.push(name);
    this.#write();
  }

  addProcess(pid: number, what: string): void {
    this.#data.processes.push({ pid, start: processStart(pid), what });
    this.#write();
  }

  /** Deletes the journal: the run ended and left nothing. */
  remove(): void {
    rmSync(this.path, { force: true });
  }

  #write(): void {
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(this.#data, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}

/** A journal found on disk. */
export interface FoundJournal {
  readonly path: string;
  readonly data: JournalData | undefined;
  /** Why it could not be read or was refused, if so. */
  readonly error?: string;
}

/** The largest journal read (a run's journal is a few KiB). */
export const MAX_JOURNAL_BYTES = 1 << 20;

/**
 * Every journal in `dir` (none if the directory does not exist). The
 * directory is checked first ({@link checkStateDir}: INVALID_ARGUMENT for a
 * pseudo filesystem, a file, a symlink, a foreign or group/world-writable
 * directory). Each journal must be a regular file (not a symlink) owned by
 * this user and writable by no one else, at most {@link MAX_JOURNAL_BYTES},
 * and parse with {@link parseJournal}; one that does not is reported with
 * `error` and no data, and the others are still returned.
 */
export function listJournals(dir: string): FoundJournal[] {
  if (!checkStateDir(dir, false)) return [];
  const names = readdirSync(dir).filter((n) => n.endsWith('.json')).sort();
  return names.map((n) => {
    const path = join(dir, n);
    try {
      return { path, data: parseJournal(readJournalFile(path)) };
    } catch (e) {
      return { path, data: undefined, error: (e as Error).message };
    }
  });
}

/** Reads a journal file without following a symlink; refuses a foreign, shared-writable, odd or oversized file. */
function readJournalFile(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new Error('is a symbolic link (remus writes journals as regular files)');
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error('is not a regular file');
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid) throw new Error(`is owned by uid ${st.uid}, not by this user (uid ${uid}): remus did not write it`);
    if ((st.mode & 0o022) !== 0) throw new Error(`is writable by others (mode ${(st.mode & 0o777).toString(8)}): remus writes journals 0600`);
    if (st.size > MAX_JOURNAL_BYTES) throw new Error(`is ${st.size} bytes, more than a journal can be (${MAX_JOURNAL_BYTES})`);
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < st.size) {
      const n = readSync(fd, buf, off, st.size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * Parses and checks a journal's text: every field of {@link JournalData}
 * with its type (names and ids validated as the run validated them). Throws
 * an Error saying which field is wrong; never returns partial data.
 */
export function parseJournal(text: string): JournalData {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`is not JSON (${(e as Error).message})`);
  }
  const bad = (field: string, why: string): never => {
    throw new Error(`field ${field} ${why}`);
  };
  if (!isRecord(raw)) throw new Error('is not a remus journal (not an object)');
  if (raw.format !== 1) bad('format', 'is not 1 (not a remus journal of this version)');
  try {
    validateOperationId(raw.operation);
  } catch (e) {
    bad('operation', (e as Error).message);
  }
  const pid = (v: unknown, field: string): number => (Number.isSafeInteger(v) && (v as number) > 1 && (v as number) <= 0x400000 ? (v as number) : bad(field, `${short(v)} is not a process id`));
  const start = (v: unknown, field: string): string | undefined => (v === undefined || v === null ? undefined : typeof v === 'string' && /^\d{1,20}$/.test(v) ? v : bad(field, `${short(v)} is not a process start time`));
  const str = (v: unknown, field: string): string => (typeof v === 'string' && v.length <= 4096 ? v : bad(field, 'is not a string'));
  const list = (v: unknown, field: string): unknown[] => (Array.isArray(v) && v.length <= 10_000 ? v : bad(field, 'is not a list'));
  const runPid = pid(raw.pid, 'pid');
  const pidStart = start(raw.pidStart, 'pidStart');
  const command = str(raw.command, 'command');
  const startedAt = str(raw.startedAt, 'startedAt');
  const plugins = list(raw.plugins, 'plugins').map((p, i): JournalPlugin => {
    if (!isRecord(p)) return bad(`plugins[${i}]`, 'is not an object');
    const name = str(p.package, `plugins[${i}].package`);
    if (!/^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i.test(name)) bad(`plugins[${i}].package`, `${short(name)} is not a package name`);
    if (!isRecord(p.subkinds) || Object.values(p.subkinds).some((o) => !isRecord(o))) bad(`plugins[${i}].subkinds`, 'is not an object of subkind options');
    return {
      package: name,
      from: str(p.from, `plugins[${i}].from`),
      ...(p.dir !== undefined ? { dir: str(p.dir, `plugins[${i}].dir`) } : {}),
      ...(p.version !== undefined ? { version: str(p.version, `plugins[${i}].version`) } : {}),
      subkinds: p.subkinds as JournalPlugin['subkinds'],
    };
  });
  // Ids may repeat: a colo start journals both sides' devices, each side with its own nic0.
  const devices = list(raw.devices, 'devices').map((d, i): DeviceSpec => {
    if (!isRecord(d)) return bad(`devices[${i}]`, 'is not an object');
    if (typeof d.id !== 'string' || d.id === '') bad(`devices[${i}].id`, 'is not a non-empty string');
    if (typeof d.kind !== 'string' || d.kind === '') bad(`devices[${i}].kind`, 'is not a non-empty string');
    if (d.params !== undefined && !isRecord(d.params)) bad(`devices[${i}].params`, 'is not an object');
    return d as unknown as DeviceSpec;
  });
  if (raw.domainMode !== undefined && raw.domainMode !== 'command' && raw.domainMode !== 'pid') bad('domainMode', `${short(raw.domainMode)} is not "command" or "pid"`);
  const cgroups = list(raw.cgroups, 'cgroups').map((c, i) => str(c, `cgroups[${i}]`));
  const netns = list(raw.netns, 'netns').map((n, i) => {
    try {
      return validateName(n, 'network namespace');
    } catch (e) {
      return bad(`netns[${i}]`, (e as Error).message);
    }
  });
  const processes = list(raw.processes, 'processes').map((p, i): JournalProcess => {
    if (!isRecord(p)) return bad(`processes[${i}]`, 'is not an object');
    return { pid: pid(p.pid, `processes[${i}].pid`), start: start(p.start, `processes[${i}].start`), what: str(p.what ?? 'process', `processes[${i}].what`) };
  });
  return {
    format: 1,
    operation: raw.operation as string,
    pid: runPid,
    pidStart,
    command,
    startedAt,
    plugins,
    devices,
    ...(raw.domainMode !== undefined ? { domainMode: raw.domainMode as 'command' | 'pid' } : {}),
    cgroups,
    netns,
    processes,
  };
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

function short(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
