/**
 * Runs an external program (criu, ip, iptables, arping) from an argument
 * vector, never a shell string, bounded by a time limit and a signal. CRIU is
 * a program started per checkpoint: that is inherent to CRIU (a dump is a
 * process that seizes the tree); device ops of other plugins stay spawn-free.
 */
import { spawn } from 'node:child_process';
import { RemusError, abortError } from '@remus/core';
import { findProgram } from '@remus/domain-process';

/** How a program ended; `output` is the tail (last 8 KiB) of stdout+stderr. */
export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
}

export interface RunOptions {
  /** Bound on the run, ms. The program gets SIGKILL when it runs out. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Run it in this network namespace (`nsenter --net=/run/netns/NAME`; mounts stay as they are). */
  readonly netns?: string;
  /** What it is doing, for the timeout message. */
  readonly what: string;
}

const TAIL_BYTES = 8192;

/** Resolves with how `argv` ended (a non-zero exit is not an error); rejects on timeout/abort/spawn failure. */
export function runProgram(argv: readonly string[], o: RunOptions): Promise<RunResult> {
  const full = o.netns === undefined ? argv : ['nsenter', `--net=/run/netns/${o.netns}`, '--', ...argv];
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) return reject(abortError(o.signal, o.what));
    const child = spawn(full[0] as string, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const take = (b: Buffer): void => {
      tail = (tail + b.toString('utf8')).slice(-TAIL_BYTES);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    let failure: RemusError | undefined;
    const kill = (e: RemusError): void => {
      failure ??= e;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => kill(new RemusError('TIMEOUT', `${o.what}: no result within ${o.timeoutMs} ms (killed)`)), o.timeoutMs);
    const onAbort = (): void => kill(abortError(o.signal as AbortSignal, o.what));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const done = (): void => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
    };
    child.on('error', (e) => {
      done();
      reject(new RemusError('OP_FAILED', `${o.what}: cannot start ${full[0]}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      done();
      if (failure) reject(failure);
      else resolve({ code, signal: sig, output: tail });
    });
  });
}

/** The criu program to run: `path` if given, else `criu` on PATH (with /usr/sbin and /sbin added); undefined if missing. */
export function locateCriu(path?: string): string | undefined {
  if (path !== undefined) return findProgram(path);
  return findProgram('criu') ?? findProgram('/usr/sbin/criu') ?? findProgram('/sbin/criu');
}

/** Last `n` lines of a text, for messages. */
export function lastLines(text: string, n = 6): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}
