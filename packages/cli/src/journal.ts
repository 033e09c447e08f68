/**
 * The run journal: one JSON file per run in the state directory, written
 * before the run creates anything and updated (atomically, synchronously)
 * before each further resource is created. If the run dies, even by SIGKILL,
 * `remus cleanup` reads it and removes what the run left.
 *
 * State directory: `--state-dir`, else `$REMUS_STATE_DIR`, else `/run/remus`.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DeviceSpec } from '@remus/core';

export const DEFAULT_STATE_DIR = '/run/remus';

/** The state directory from a flag, the environment, or the default. */
export function stateDir(flag?: string): string {
  return flag ?? process.env.REMUS_STATE_DIR ?? DEFAULT_STATE_DIR;
}

/** A plugin as the run used it: enough to rebuild its subkinds for `reap`. */
export interface JournalPlugin {
  readonly package: string;
  /** Directory it was resolved from. */
  readonly from: string;
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

/** Start time of a process (field 22 of /proc/PID/stat), or undefined if it is gone. */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

/** True when the process recorded as (pid, start) still runs. */
export function stillRunning(pid: number, start: string | undefined): boolean {
  const now = processStart(pid);
  return now !== undefined && (start === undefined || now === start);
}

/** A live run's journal. Every mutation is on disk when the call returns. */
export class Journal {
  readonly path: string;
  readonly #data: JournalData;

  private constructor(path: string, data: JournalData) {
    this.path = path;
    this.#data = data;
  }

  /** Creates the journal of a new run (creating the state directory if needed). */
  static create(dir: string, operation: string, command: string, plugins: JournalPlugin[], devices: readonly DeviceSpec[], domainMode: 'command' | 'pid' = 'command'): Journal {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const j = new Journal(join(dir, `${operation}.json`), {
      format: 1,
      operation,
      pid: process.pid,
      pidStart: processStart(process.pid),
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
  /** Why it could not be read, if so. */
  readonly error?: string;
}

/** Every journal in `dir` (none if the directory does not exist). */
export function listJournals(dir: string): FoundJournal[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  return names.map((n) => {
    const path = join(dir, n);
    try {
      const data = JSON.parse(readFileSync(path, 'utf8')) as JournalData;
      if (data.format !== 1 || typeof data.operation !== 'string') throw new Error('not a remus journal (format 1)');
      return { path, data };
    } catch (e) {
      return { path, data: undefined, error: (e as Error).message };
    }
  });
}
