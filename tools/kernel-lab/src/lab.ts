/** The public API: runInLab, startLab, assertLabReady, expectLabPass. */
import { existsSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve, sep } from 'node:path';
import { RemusError } from '@remus/core';
import { Guest, QEMU, findOnPath, shellQuote, type BootFailure, type GuestJob } from './guest.js';
import { labCacheDir, repoRoot, stampPath, type LabStamp } from './paths.js';
import { INIT_HASH, readLabStamp } from './setup.js';

/**
 * How a lab run ended. Only 'pass' is success.
 * - 'pass': the body exited 0.
 * - 'fail': the body exited non-zero (`exitCode` says how).
 * - 'crash': the guest died, powered off or rebooted without reporting (or died during boot).
 * - 'timeout': the boot or the body exceeded its bound; the guest was killed.
 */
export type LabOutcome = 'pass' | 'fail' | 'crash' | 'timeout';

/** One body to run in the lab. Exactly one of `script` and `node`. */
export interface LabRunOptions {
  /** Bash script text, run by the host's bash as root in the guest. */
  script?: string;
  /** A compiled JavaScript program on the host (absolute path), run by the host's node in the guest. */
  node?: { file: string; args?: string[] };
  /** Extra environment for the body; names match `[A-Za-z_][A-Za-z0-9_]*`. */
  env?: Record<string, string>;
  /** Working directory in the guest (absolute). Default: the repo checkout root. */
  cwd?: string;
  /** Bound on the body, ms. Default 120 000. Exceeded: outcome 'timeout' and the guest is killed. */
  timeoutMs?: number;
  /** Bound on the boot, ms, when this run needs one. Default 120 000. */
  bootTimeoutMs?: number;
  /** Extra host folders visible in the guest at the same path (read-only). */
  shares?: string[];
}

/** What a lab run gives back. */
export interface LabResult {
  outcome: LabOutcome;
  /** The body's exit status; set for 'pass' and 'fail' only. */
  exitCode?: number;
  /** The body's stdout and stderr, interleaved as written; may be partial after 'crash' or 'timeout'. */
  output: string;
  /** The tail of the guest's kernel console. */
  console: string;
  /** Wall time of the run in ms, including a boot if the run needed one. */
  durationMs: number;
}

/** Options of a shared-boot session. */
export interface LabSessionOptions {
  /** Bound on each boot, ms. Default 120 000. */
  bootTimeoutMs?: number;
  /** Host folders visible in the guest at the same path for every run (besides the checkout). */
  shares?: string[];
}

/** Several runs in one boot. Runs are serialised; after a 'crash' or 'timeout' the next run boots a new guest. */
export interface LabSession {
  /** Runs one body; never rejects for the body's sake (only for invalid options). */
  run(options: LabRunOptions): Promise<LabResult>;
  /** Kills the guest and removes its temp folder. Idempotent; call it in afterAll. */
  close(): Promise<void>;
  /** The current QEMU pid, undefined when no guest is running. */
  readonly pid: number | undefined;
}

const DEFAULT_BOOT_TIMEOUT_MS = 120_000;
const DEFAULT_RUN_TIMEOUT_MS = 120_000;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Throws a RemusError saying what to do unless the lab can run here:
 * UNSUPPORTED_HOST (not root, QEMU missing), STATE (not set up). Resolves
 * with the setup's stamp.
 */
export async function assertLabReady(): Promise<LabStamp> {
  if (process.getuid?.() !== 0) {
    throw new RemusError('UNSUPPORTED_HOST', 'the kernel lab needs root (QEMU, 9p export of /); run the lab tests as root');
  }
  if (findOnPath(QEMU) === undefined) {
    throw new RemusError('UNSUPPORTED_HOST', `the kernel lab needs QEMU: ${QEMU} is not on PATH; run \`pnpm lab:setup\``);
  }
  const stamp = await readLabStamp();
  if (stamp === undefined) {
    throw new RemusError(
      'STATE',
      `the kernel lab is not set up (${stampPath(labCacheDir())} missing, stale, or its files are gone); run \`pnpm lab:setup\``,
    );
  }
  if (stamp.initHash !== INIT_HASH) {
    throw new RemusError('STATE', 'the kernel lab initramfs is out of date (this version of @remus/kernel-lab changed /init); run `pnpm lab:setup`');
  }
  return stamp;
}

function checkDir(path: string, what: string): string {
  if (typeof path !== 'string' || !isAbsolute(path) || /[\n\0]/.test(path)) {
    throw new RemusError('INVALID_ARGUMENT', `kernel lab: ${what} must be an absolute path without newlines: ${String(path)}`);
  }
  return resolve(path);
}

/** Checks `options` and turns them into a job (binds not yet reduced to the new ones). */
function prepareJob(options: LabRunOptions, sessionShares: readonly string[]): GuestJob {
  if ((options.script === undefined) === (options.node === undefined)) {
    throw new RemusError('INVALID_ARGUMENT', 'kernel lab: give exactly one of `script` and `node`');
  }
  const binds = [repoRoot(), ...sessionShares, ...(options.shares ?? []).map((s) => checkDir(s, 'a share'))];
  let body: string;
  if (options.node !== undefined) {
    const file = checkDir(options.node.file, 'node.file');
    if (!/\.(m|c)?js$/.test(file) || !existsSync(file)) {
      throw new RemusError('INVALID_ARGUMENT', `kernel lab: node.file must be an existing compiled .js/.mjs/.cjs file: ${file}`);
    }
    const args = options.node.args ?? [];
    if (!args.every((a) => typeof a === 'string')) throw new RemusError('INVALID_ARGUMENT', 'kernel lab: node.args must be strings');
    binds.push(dirname(file));
    body = `exec node ${[file, ...args].map(shellQuote).join(' ')}\n`;
  } else {
    if (typeof options.script !== 'string') throw new RemusError('INVALID_ARGUMENT', 'kernel lab: script must be a string');
    body = options.script;
  }
  const env: Record<string, string> = { REMUS_LAB: '1' };
  for (const [k, v] of Object.entries(options.env ?? {})) {
    if (!ENV_NAME.test(k) || typeof v !== 'string') {
      throw new RemusError('INVALID_ARGUMENT', `kernel lab: bad environment entry ${JSON.stringify(k)}`);
    }
    env[k] = v;
  }
  for (const b of binds) {
    if (!existsSync(b) || !statSync(b).isDirectory()) throw new RemusError('INVALID_ARGUMENT', `kernel lab: share ${b} is not a folder on the host`);
  }
  const cwd = options.cwd === undefined ? repoRoot() : checkDir(options.cwd, 'cwd');
  for (const t of [options.timeoutMs, options.bootTimeoutMs]) {
    if (t !== undefined && !(Number.isFinite(t) && t > 0)) throw new RemusError('INVALID_ARGUMENT', 'kernel lab: timeouts must be positive numbers of ms');
  }
  return { binds, cwd, env, body };
}

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

class Session implements LabSession {
  private guest: Guest | undefined;
  /** Host folders already bound in the current guest (a bind covers its subfolders). */
  private bound: string[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly stamp: LabStamp,
    private readonly options: LabSessionOptions,
  ) {}

  get pid(): number | undefined {
    return this.guest?.pid;
  }

  /** Boots a guest unless one is running; returns the failure if the boot failed. */
  async ensureGuest(bootTimeoutMs?: number): Promise<BootFailure | undefined> {
    if (this.guest !== undefined && !this.guest.dead) return undefined;
    await this.guest?.dispose();
    this.guest = undefined;
    this.bound = [];
    const booted = await Guest.boot(this.stamp, bootTimeoutMs ?? this.options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS);
    if (!(booted instanceof Guest)) return booted;
    this.guest = booted;
    return undefined;
  }

  run(options: LabRunOptions): Promise<LabResult> {
    const result = this.queue.then(() => this.runNow(options));
    this.queue = result.catch(() => {});
    return result;
  }

  private async runNow(options: LabRunOptions): Promise<LabResult> {
    if (this.closed) throw new RemusError('STATE', 'kernel lab: run() after close()');
    const job = prepareJob(options, this.options.shares ?? []);
    const started = Date.now();
    const bootFailure = await this.ensureGuest(options.bootTimeoutMs);
    if (bootFailure !== undefined || this.guest === undefined) {
      return {
        outcome: bootFailure?.outcome ?? 'crash',
        output: `[remus-lab] ${bootFailure?.message ?? 'no guest'}`,
        console: bootFailure?.console ?? '',
        durationMs: Date.now() - started,
      };
    }
    const guest = this.guest;
    const fresh: string[] = [];
    for (const b of job.binds) {
      if (![...this.bound, ...fresh].some((d) => isUnder(b, d))) fresh.push(b);
    }
    this.bound.push(...fresh);
    const r = await guest.run({ ...job, binds: fresh }, options.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS);
    const durationMs = Date.now() - started;
    if (r.outcome === 'pass' || r.outcome === 'fail') {
      return { outcome: r.outcome, exitCode: r.exitCode, output: r.output, console: guest.consoleTail(), durationMs };
    }
    await guest.dispose();
    this.guest = undefined;
    const why =
      r.outcome === 'timeout'
        ? `[remus-lab] the body did not finish within ${options.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS} ms; the guest was killed`
        : `[remus-lab] the guest ended without reporting: ${guest.exitDescription()}`;
    return { outcome: r.outcome, output: `${r.output}${r.output.endsWith('\n') || r.output === '' ? '' : '\n'}${why}`, console: guest.consoleTail(), durationMs };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    const guest = this.guest;
    this.guest = undefined;
    if (guest === undefined) return;
    await guest.quit();
    await guest.dispose();
  }
}

/**
 * Boots a guest now and returns a session whose runs share it. Rejects with
 * RemusError TIMEOUT (boot too slow) or OP_FAILED (guest died while booting),
 * the message ending with the console tail; or the errors of {@link assertLabReady}.
 */
export async function startLab(options: LabSessionOptions = {}): Promise<LabSession> {
  const stamp = await assertLabReady();
  for (const s of options.shares ?? []) checkDir(s, 'a share');
  const session = new Session(stamp, options);
  const failure = await session.ensureGuest();
  if (failure !== undefined) {
    throw new RemusError(
      failure.outcome === 'timeout' ? 'TIMEOUT' : 'OP_FAILED',
      `kernel lab: ${failure.message} (boot timeout ${options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS} ms); console tail:\n${failure.console}`,
      { details: { console: failure.console } },
    );
  }
  return session;
}

/** Boots a guest, runs one body, and removes the guest. See {@link LabResult} for the outcomes. */
export async function runInLab(options: LabRunOptions): Promise<LabResult> {
  const stamp = await assertLabReady();
  const session = new Session(stamp, {});
  try {
    return await session.run(options);
  } finally {
    await session.close();
  }
}

/** A readable report of a result: outcome, exit code, output and console tail. */
export function formatLabResult(result: LabResult): string {
  const code = result.exitCode === undefined ? '' : ` (exit code ${result.exitCode})`;
  return [
    `kernel lab run: ${result.outcome}${code} after ${result.durationMs} ms`,
    '--- output ---',
    result.output.trimEnd(),
    '--- console tail ---',
    result.console.slice(-4000).trimEnd(),
  ].join('\n');
}

/** Throws an Error with {@link formatLabResult} unless the outcome is 'pass'. Works in any test runner. */
export function expectLabPass(result: LabResult): void {
  if (result.outcome !== 'pass') throw new Error(formatLabResult(result));
}
