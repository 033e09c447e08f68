/**
 * Network namespaces the demo makes, and their removal (also by `remus
 * cleanup`). Names are validated before they reach `ip`; every command is an
 * argument vector with a time limit.
 */
import { netnsExists, runScript, validateName } from '@remus/core';

/** True when the named namespace exists (core's one check: `/run/netns/NAME`). */
export { netnsExists };

/** Runs `ip ARGS...` (30 s limit); rejects with SCRIPT_FAILED carrying ip's stderr. */
export async function ip(args: readonly string[], signal?: AbortSignal): Promise<string> {
  return (await runScript('ip', args, { timeoutMs: 30_000, signal })).stdout;
}

/**
 * Deletes a namespace after SIGKILLing every process in it but this one
 * (the demo runs inside its router namespace; the namespace itself goes
 * when its last process ends). Idempotent; returns one line per thing done.
 */
export async function removeNetns(name: string): Promise<string[]> {
  validateName(name, 'network namespace');
  if (!netnsExists(name)) return [];
  const done: string[] = [];
  const pids = (await ip(['netns', 'pids', name]).catch(() => '')).split('\n').filter(Boolean).map(Number);
  for (const pid of pids) {
    // The demo runs inside its router namespace: that one is left to end with this process.
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
      done.push(`killed process ${pid} in network namespace ${name}`);
    } catch {
      // Gone.
    }
  }
  await ip(['netns', 'delete', name]);
  done.push(`deleted network namespace ${name}`);
  return done;
}
