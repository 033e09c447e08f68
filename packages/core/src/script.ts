/**
 * Runs hotplug-style scripts (Xen's netbuf and DRBD probe scripts) with an
 * argument vector, never a shell string. The script runs in its own process
 * group, so a timeout or an abort kills it and everything it started.
 */
import { execa } from 'execa';
import { RemusError } from './errors.js';

export interface ScriptOptions {
  /** Extra environment (merged over the current one unless `extendEnv` is false). */
  readonly env?: Readonly<Record<string, string>>;
  /** Whether the script inherits this process's environment. Default true. */
  readonly extendEnv?: boolean;
  /** Working directory. */
  readonly cwd?: string;
  /** Time limit in ms; then the whole process group gets SIGTERM, then SIGKILL after `killGraceMs`. Default 30 s. */
  readonly timeoutMs?: number;
  /** Grace between SIGTERM and SIGKILL. Default 2000 ms. */
  readonly killGraceMs?: number;
  /** Aborting kills the process group like a timeout does. */
  readonly signal?: AbortSignal;
  /** Text written to the script's stdin. */
  readonly input?: string;
  /** Exit codes that count as success (returned, not thrown). Default [0]. */
  readonly okExitCodes?: readonly number[];
}

export interface ScriptResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

/** How much of stderr a SCRIPT_FAILED error carries. */
const STDERR_TAIL = 2000;

/**
 * Runs `file` with `args`. Resolves with stdout/stderr when the exit code is
 * in `okExitCodes`; rejects with SCRIPT_FAILED (exit code, signal and the
 * tail of stderr in `details`), SCRIPT_TIMEOUT, or ABORTED. The process group
 * is gone when it settles.
 */
export async function runScript(file: string, args: readonly string[] = [], options: ScriptOptions = {}): Promise<ScriptResult> {
  if (typeof file !== 'string' || file === '') {
    throw new RemusError('INVALID_ARGUMENT', 'script path must be a non-empty string');
  }
  for (const [i, a] of args.entries()) {
    if (typeof a !== 'string') throw new RemusError('INVALID_ARGUMENT', `script ${file}: argument ${i} is not a string`);
  }
  const timeoutMs = options.timeoutMs ?? 30_000;
  const grace = options.killGraceMs ?? 2000;
  const ok = options.okExitCodes ?? [0];
  const started = performance.now();
  if (options.signal?.aborted) {
    throw new RemusError('ABORTED', `script ${file} not started: aborted`, { cause: options.signal.reason });
  }
  const child = execa(file, [...args], {
    env: options.env,
    extendEnv: options.extendEnv ?? true,
    cwd: options.cwd,
    detached: true,
    reject: false,
    stripFinalNewline: false,
    input: options.input ?? '',
    windowsHide: true,
  });
  let why: 'timeout' | 'abort' | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const killGroup = (reason: 'timeout' | 'abort'): void => {
    if (why) return;
    why = reason;
    signalGroup(child.pid, 'SIGTERM');
    killTimer = setTimeout(() => signalGroup(child.pid, 'SIGKILL'), grace);
  };
  const timer = setTimeout(() => killGroup('timeout'), timeoutMs);
  const onAbort = (): void => killGroup('abort');
  options.signal?.addEventListener('abort', onAbort, { once: true });
  let result;
  try {
    result = await child;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
  // Whatever the script left in its group goes with it.
  if (why) signalGroup(child.pid, 'SIGKILL');
  if (killTimer) clearTimeout(killTimer);
  const durationMs = performance.now() - started;
  const stdout = String(result.stdout ?? '');
  const stderr = String(result.stderr ?? '');
  const details = {
    file,
    args: [...args],
    exitCode: result.exitCode,
    signal: result.signal,
    stderrTail: stderr.slice(-STDERR_TAIL),
    durationMs,
  };
  if (why === 'timeout') {
    throw new RemusError('SCRIPT_TIMEOUT', `script ${file} did not finish within ${timeoutMs} ms and was killed`, { details });
  }
  if (why === 'abort') {
    throw new RemusError('ABORTED', `script ${file} was killed: the operation was aborted`, {
      details,
      cause: options.signal?.reason,
    });
  }
  if (result.exitCode === undefined || !ok.includes(result.exitCode)) {
    const how = result.exitCode === undefined ? `was killed by ${result.signal ?? 'a signal'}` : `exited with code ${result.exitCode}`;
    const cause = result.failed && result.exitCode === undefined ? result : undefined;
    const tail = details.stderrTail.trim();
    throw new RemusError('SCRIPT_FAILED', `script ${file} ${how}${tail ? `: ${lastLines(tail, 5)}` : ''}`, {
      details,
      cause: cause ? (result as { originalMessage?: string }).originalMessage ?? result.message : undefined,
    });
  }
  return { exitCode: result.exitCode, stdout, stderr, durationMs };
}

function signalGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, sig);
  } catch {
    // The group is already gone.
  }
}

function lastLines(text: string, n: number): string {
  return text.split('\n').slice(-n).join(' | ');
}
