/**
 * The process domain: a Linux process tree in its own freezer cgroup, driven
 * by the checkpoint loop as a {@link DomainAdapter}.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import {
  RemusError,
  describeCause,
  pollUntil,
  sleep,
  newOperationId,
  validateOperationId,
  type DomainAdapter,
  type DomainStepContext,
  type MaybePromise,
} from '@remus/core';
import { BackupLink, BackupServer, type BackupAddress } from './backup.js';
import {
  addFreezeKeeper,
  addToCgroup,
  cgroupOf,
  cgroupPids,
  createCgroup,
  detectFreezer,
  parentPid,
  reapCgroup,
  setFrozen,
  Freezer,
  type CgroupChoice,
  type FreezerHierarchy,
} from './cgroup.js';

/** What the save hook gets: the checkpoint, its signal, and the frozen processes. */
export interface SaveContext extends DomainStepContext {
  /** Pids in the domain's cgroup, all frozen while the hook runs. */
  readonly pids: readonly number[];
}

/** Who acknowledges checkpoints. */
export type AckOption =
  /** Default. A backup server in this process on a private Unix socket: a real round trip, but on the same host. */
  | { readonly type: 'local' }
  /** A backup elsewhere (e.g. `remus backup --listen` on the backup host). */
  | { readonly type: 'remote'; readonly address: BackupAddress }
  /** No backup: every checkpoint is acknowledged at once. Protects nothing; for measuring and tests. */
  | { readonly type: 'immediate' };

/** A resource the domain is about to create, reported before it exists (for a crash journal). */
export type DomainResource =
  | { readonly type: 'cgroup'; readonly path: string }
  | { readonly type: 'process'; readonly pid: number };

export interface ProcessDomainOptions {
  /** Start this command (argument vector, no shell) inside the domain's cgroup. Give `command` or `pid`. */
  readonly command?: readonly string[];
  /** Working directory of `command`. */
  readonly cwd?: string;
  /** Extra environment for `command`. */
  readonly env?: Readonly<Record<string, string>>;
  /** stdio of `command`. Default `inherit`. */
  readonly stdio?: StdioOptions;
  /** Protect this running process and its descendants instead (moved into the cgroup; moved back at stop). */
  readonly pid?: number;
  /** Freezer to use. Default `auto`. */
  readonly cgroup?: CgroupChoice;
  /** Operation id: names the cgroup `remus-<operation>`. Default: a fresh one. */
  readonly operation?: string;
  /** Who acknowledges checkpoints. Default `{ type: 'local' }`. */
  readonly ack?: AckOption;
  /**
   * Produces the checkpoint state sent to the backup, while the processes
   * are frozen. Optional; without it the state is a small JSON record (the
   * checkpoint number and the member pids): nothing of the processes' memory.
   */
  readonly save?: (ctx: SaveContext) => MaybePromise<Uint8Array | string | void>;
  /** Called synchronously before a cgroup or process is created, so a journal can record it first. */
  readonly onResource?: (resource: DomainResource) => void;
  /** Grace between SIGTERM and SIGKILL when stopping a started command, ms. Default 2000. */
  readonly killGraceMs?: number;
}

/** How a started command ended. */
export interface CommandExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/**
 * A process tree under the checkpoint loop. Lifecycle: {@link start} ->
 * loop steps (suspend, save, resume, waitAck) -> {@link stop}. `stop` is
 * idempotent and also undoes a half-finished `start`.
 */
export class ProcessDomain implements DomainAdapter {
  readonly name: string;
  readonly operation: string;
  readonly #options: ProcessDomainOptions;
  #hierarchy: FreezerHierarchy | undefined;
  /** The domain's cgroup once created; undefined before and after. */
  #cgroup: string | undefined;
  /** The cgroup's freezer files, open from start to stop (suspend and resume each cost a write and a read). */
  #freezer: Freezer | undefined;
  #child: ChildProcess | undefined;
  #exit: CommandExit | undefined;
  readonly #exited: Promise<CommandExit>;
  #resolveExit!: (e: CommandExit) => void;
  /** For `pid` mode: the cgroup each moved process came from. */
  readonly #origins = new Map<number, string>();
  #backup: BackupServer | undefined;
  #link: BackupLink | undefined;
  #frozen = false;
  #stopped = false;

  constructor(options: ProcessDomainOptions) {
    const hasCommand = options.command !== undefined;
    const hasPid = options.pid !== undefined;
    if (hasCommand === hasPid) {
      throw new RemusError('INVALID_ARGUMENT', 'process domain: give exactly one of `command` (argument vector to start) or `pid` (process to protect)');
    }
    if (hasCommand) checkCommand(options.command);
    if (hasPid && !(Number.isInteger(options.pid) && (options.pid as number) > 1)) {
      throw new RemusError('INVALID_ARGUMENT', `process domain: pid ${String(options.pid)} must be an integer > 1`);
    }
    if (hasPid) checkNotRemus(options.pid as number);
    this.#options = options;
    this.operation = options.operation === undefined ? newOperationId() : validateOperationId(options.operation);
    this.name = hasCommand ? `process ${(options.command as readonly string[])[0]}` : `process ${options.pid}`;
    this.#exited = new Promise((r) => (this.#resolveExit = r));
  }

  /** The domain's cgroup path (after start). */
  get cgroupPath(): string | undefined {
    return this.#cgroup;
  }

  /** Freezer version in use (after start). */
  get cgroupVersion(): 1 | 2 | undefined {
    return this.#hierarchy?.version;
  }

  /** The pid of the started command, or the protected pid. */
  get pid(): number | undefined {
    return this.#options.pid ?? this.#child?.pid;
  }

  /** The started command's stdout when `stdio` made it a pipe. */
  get stdout(): NodeJS.ReadableStream | undefined {
    return this.#child?.stdout ?? undefined;
  }

  /** Pids now in the domain's cgroup. */
  get pids(): number[] {
    return this.#cgroup ? cgroupPids(this.#cgroup) : [];
  }

  /** Resolves when the started command exits (never for `pid` mode). */
  get exited(): Promise<CommandExit> {
    return this.#exited;
  }

  /** The backup's address (after start, unless ack is `immediate`). */
  get backupAddress(): BackupAddress | undefined {
    return this.#backup?.address ?? (this.#options.ack?.type === 'remote' ? this.#options.ack.address : undefined);
  }

  /**
   * Creates the cgroup, starts the command in it (or moves the process tree
   * into it) and connects to the backup. On failure it undoes what it did and
   * rejects. Bounded by `signal` (default 30 s).
   */
  async start(signal: AbortSignal = AbortSignal.timeout(30_000)): Promise<void> {
    try {
      await this.#start(signal);
    } catch (e) {
      await this.stop().catch(() => undefined);
      throw e;
    }
  }

  async #start(signal: AbortSignal): Promise<void> {
    const h = detectFreezer(this.#options.cgroup ?? 'auto');
    this.#hierarchy = h;
    const path = join(h.root, `remus-${this.operation}`);
    this.#options.onResource?.({ type: 'cgroup', path });
    this.#cgroup = createCgroup(h, `remus-${this.operation}`);
    addFreezeKeeper(this.#cgroup); // v1: keeps each freeze and thaw off the kernel's text patching (see FREEZE_KEEPER)
    this.#freezer = Freezer.open(this.#cgroup);
    if (this.#options.command) await this.#spawn(this.#cgroup, signal);
    else this.#attach(this.#cgroup, this.#options.pid as number);
    const ack = this.#options.ack ?? { type: 'local' };
    if (ack.type === 'immediate') return;
    if (ack.type === 'local') {
      this.#backup = await BackupServer.listen({ path: `\0remus-backup-${this.operation}` });
    }
    this.#link = await BackupLink.connect(this.backupAddress as BackupAddress, signal);
  }

  async #spawn(cgroup: string, signal: AbortSignal): Promise<void> {
    const [file, ...args] = this.#options.command as readonly string[];
    // A fixed script: it moves itself into the cgroup, then execs the command.
    // The command and its arguments reach exec as positional parameters,
    // never as shell text, so children it forks are born in the cgroup.
    const child = spawn('/bin/sh', ['-c', 'echo $$ > "$1" || exit 126; shift; exec "$@"', 'remus-cgexec', join(cgroup, 'cgroup.procs'), file as string, ...args], {
      cwd: this.#options.cwd,
      env: { ...process.env, ...this.#options.env },
      stdio: this.#options.stdio ?? 'inherit',
      detached: true,
    });
    this.#child = child;
    if (child.pid !== undefined) this.#options.onResource?.({ type: 'process', pid: child.pid });
    child.on('exit', (code, sig) => {
      this.#exit = { code, signal: sig };
      this.#resolveExit(this.#exit);
    });
    // The stub could not start at all (no /bin/sh): treat like "command not found".
    child.on('error', () => {
      this.#exit = { code: 127, signal: null };
      this.#resolveExit(this.#exit);
    });
    // Wait until the child is in the cgroup: the first freeze must catch it.
    await pollUntil(
      () => {
        if (this.#exit) throw new RemusError('OP_FAILED', `${this.name} exited (${describeExit(this.#exit)}) before it joined its cgroup`);
        return cgroupPids(cgroup).includes(child.pid ?? -1);
      },
      { what: `${this.name} to join its cgroup`, timeoutMs: 30_000, intervalMs: 1, signal },
    );
  }

  /** Moves `pid` and its descendants into the cgroup, twice, to catch children forked meanwhile. */
  #attach(cgroup: string, pid: number): void {
    const h = this.#hierarchy as FreezerHierarchy;
    if (cgroupOf(pid, h) === undefined) {
      throw new RemusError('INVALID_ARGUMENT', `process domain: process ${pid} does not exist`);
    }
    for (let pass = 0; pass < 2; pass++) {
      const tree = processTree(pid);
      // Re-checked here: remus in the tree would freeze itself.
      if (tree.includes(process.pid)) checkNotRemus(pid);
      for (const p of tree) {
        if (this.#origins.has(p)) continue;
        const origin = cgroupOf(p, h);
        if (origin === undefined) continue;
        this.#origins.set(p, origin);
        addToCgroup(cgroup, p);
      }
    }
  }

  /** Freezes every process of the domain. Fails if the started command has exited. */
  async suspend(ctx: DomainStepContext): Promise<void> {
    if (this.#exit) {
      throw new RemusError('DOMAIN_FAILED', `${this.name} exited (${describeExit(this.#exit)}): nothing left to protect`, {
        details: { ...this.#exit },
      });
    }
    const freezer = this.#needFreezer();
    this.#frozen = true;
    await freezer.set(true, ctx.signal);
  }

  /** Runs the save hook (or makes the default record) and sends the state to the backup. */
  async save(ctx: DomainStepContext): Promise<void> {
    const pids = this.pids;
    const out = this.#options.save ? await this.#options.save({ ...ctx, pids }) : undefined;
    const state =
      out === undefined
        ? Buffer.from(JSON.stringify({ checkpoint: ctx.checkpoint, pids }))
        : typeof out === 'string'
          ? Buffer.from(out)
          : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    this.#link?.send(ctx.checkpoint, state, ctx.epoch);
  }

  /** Thaws the domain. Harmless when it is running. */
  async resume(ctx: DomainStepContext): Promise<void> {
    await this.#needFreezer().set(false, ctx.signal);
    this.#frozen = false;
  }

  /** Resolves once the backup acknowledged `ctx.checkpoint` (at once with ack `immediate`). */
  async waitAck(ctx: DomainStepContext): Promise<void> {
    await this.#link?.waitAck(ctx.checkpoint, ctx.signal);
  }

  /**
   * Thaws the domain and ends it: a started command gets SIGTERM (its
   * process group, then every process left in the cgroup), then SIGKILL after
   * the grace; a protected pid tree is moved back to its original cgroups and
   * keeps running. Removes the cgroup, closes the backup. Idempotent.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#link?.close();
    const closing = this.#backup?.close();
    const cgroup = this.#cgroup;
    const errors: string[] = [];
    if (cgroup) {
      try {
        await (this.#freezer ? this.#freezer.set(false, AbortSignal.timeout(5000)) : setFrozen(cgroup, false, AbortSignal.timeout(5000)));
      } catch (e) {
        errors.push(`thaw: ${describeCause(e)}`);
      }
      this.#freezer?.close();
      this.#freezer = undefined;
      this.#frozen = false;
      if (this.#options.command) await this.#terminate(cgroup);
      else this.#detach(cgroup);
      try {
        await reapCgroup(cgroup);
        this.#cgroup = undefined;
      } catch (e) {
        errors.push(describeCause(e) as string);
      }
    }
    if (this.#child && !this.#exit) {
      const ac = new AbortController();
      await Promise.race([this.#exited, sleep(2000, ac.signal).catch(() => undefined)]);
      ac.abort();
    }
    await closing;
    if (errors.length > 0) throw new RemusError('OP_FAILED', `stopping ${this.name} failed: ${errors.join('; ')}`);
  }

  async #terminate(cgroup: string): Promise<void> {
    const child = this.#child;
    if (child?.pid !== undefined && !this.#exit) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // The group is gone.
      }
    }
    for (const p of cgroupPids(cgroup)) {
      try {
        process.kill(p, 'SIGTERM');
      } catch {
        // Gone.
      }
    }
    const deadline = performance.now() + (this.#options.killGraceMs ?? 2000);
    while (cgroupPids(cgroup).length > 0 && performance.now() < deadline) await sleep(10, undefined, `${this.name} to end`);
    // reapCgroup SIGKILLs whatever is left; then the started process is reaped.
  }

  #detach(cgroup: string): void {
    for (const p of cgroupPids(cgroup)) {
      const origin = this.#origins.get(p) ?? (this.#hierarchy as FreezerHierarchy).root;
      try {
        addToCgroup(origin, p);
      } catch {
        try {
          addToCgroup((this.#hierarchy as FreezerHierarchy).root, p);
        } catch {
          // The process exited.
        }
      }
    }
  }

  /** True between a suspend and the next resume. */
  get frozen(): boolean {
    return this.#frozen;
  }

  #needFreezer(): Freezer {
    if (!this.#freezer) throw new RemusError('STATE', `${this.name} is not started`);
    return this.#freezer;
  }

  #need(): string {
    if (!this.#cgroup) throw new RemusError('STATE', `${this.name} is not started`);
    return this.#cgroup;
  }
}

/** Makes a process domain (see {@link ProcessDomainOptions}); call `start()` before the loop. */
export function processDomain(options: ProcessDomainOptions): ProcessDomain {
  return new ProcessDomain(options);
}

/**
 * Throws INVALID_ARGUMENT (details.reason `pid-is-remus`, before
 * any cgroup is made) when `pid` is this process or one of its ancestors:
 * protecting it would move remus into the cgroup it freezes.
 */
function checkNotRemus(pid: number): void {
  const chain: number[] = [];
  for (let p: number | undefined = process.pid; p !== undefined && p > 0 && chain.length < 4096; p = parentPid(p)) {
    chain.push(p);
    if (p === 1) break;
  }
  if (chain.includes(pid)) {
    const who = pid === process.pid ? 'remus itself' : `an ancestor of remus (chain ${chain.slice(0, chain.indexOf(pid) + 1).join(' <- ')})`;
    throw new RemusError('INVALID_ARGUMENT', `process domain: pid ${pid} is ${who}: protecting it would move remus into the cgroup it freezes; give the pid of the service, not of a shell or supervisor that runs remus`, {
      details: { reason: 'pid-is-remus', pid, remus: process.pid, chain },
    });
  }
}

/** `pid` and all its descendants, from /proc/PID/task/TID/children. */
function processTree(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0) {
    const p = todo.pop() as number;
    out.push(p);
    let tasks: string[] = [];
    try {
      tasks = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').split(' ').filter(Boolean);
    } catch {
      continue;
    }
    todo.push(...tasks.map(Number));
  }
  return out;
}

/** Throws INVALID_ARGUMENT unless `command` is a non-empty argument vector whose program exists. */
function checkCommand(command: unknown): void {
  if (!Array.isArray(command) || command.length === 0 || command.some((a) => typeof a !== 'string')) {
    throw new RemusError('INVALID_ARGUMENT', 'process domain: `command` must be a non-empty array of strings, e.g. ["node", "server.js"]');
  }
  const file = command[0] as string;
  if (file === '') throw new RemusError('INVALID_ARGUMENT', 'process domain: command[0] is empty; name the program to run');
  if (findProgram(file) === undefined) {
    throw new RemusError('INVALID_ARGUMENT', `process domain: program ${JSON.stringify(file)} not found${file.includes('/') ? '' : ' on PATH'}; give its full path`, {
      details: { program: file },
    });
  }
}

/** The executable's path, searching PATH for bare names; undefined if none. */
export function findProgram(file: string): string | undefined {
  const candidates = file.includes('/') ? [file] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, file));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // Next.
    }
  }
  return undefined;
}

function describeExit(e: CommandExit): string {
  return e.signal ? `killed by ${e.signal}` : `exit code ${e.code}`;
}

