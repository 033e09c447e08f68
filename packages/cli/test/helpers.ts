// Runs the built `remus` as a user would (a child process), and looks for
// anything a run may leave: iptables rules, cgroups, journals. Namespaces,
// process liveness, temp dirs and bounded waits come from @remus/test-lab.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runScript } from '@remus/core';
import { waitFor } from '@remus/test-lab';

export const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));

export interface Result {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A running `remus` with its output collected. */
export interface Running {
  readonly child: ChildProcess;
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly done: Promise<Result>;
  /** Resolves once stdout has a JSON event matching `pred` (rejects after `ms`). */
  waitFor: (pred: (e: Record<string, unknown>) => boolean, ms?: number) => Promise<Record<string, unknown>>;
}

/** Starts `remus ARGS` with `env` over this process's environment (an undefined value removes the variable), in `cwd` if given. */
export function start(args: readonly string[], env: Record<string, string | undefined> = {}, cwd?: string): Running {
  const merged = { ...process.env, ...env };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  const child = spawn(process.execPath, [BIN, ...args], { env: merged, stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) });
  let out = '';
  let err = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
  // Resolves at exit: after a SIGKILL, processes the run started may still hold
  // its stdout/stderr open, so 'close' is awaited only briefly.
  const done = new Promise<Result>((resolve) =>
    child.on('exit', (code, signal) => {
      const finish = (): void => resolve({ code, signal, stdout: out, stderr: err });
      const t = setTimeout(finish, 500);
      child.on('close', () => {
        clearTimeout(t);
        finish();
      });
    }),
  );
  const waitForEvent = async (pred: (e: Record<string, unknown>) => boolean, ms = 20_000): Promise<Record<string, unknown>> => {
    let hit: Record<string, unknown> | undefined;
    await waitFor(
      () => {
        hit = events(out).find(pred);
        if (!hit && child.exitCode !== null) throw new Error(`no matching event (exit ${child.exitCode}); stdout:\n${out}\nstderr:\n${err}`);
        return hit !== undefined;
      },
      ms,
      'a matching event from remus',
      () => `stdout:\n${out}\nstderr:\n${err}`,
    );
    return hit as Record<string, unknown>;
  };
  return { child, stdout: () => out, stderr: () => err, done, waitFor: waitForEvent };
}

/** Runs `remus ARGS` to completion. */
export function remus(args: readonly string[], env: Record<string, string | undefined> = {}, cwd?: string): Promise<Result> {
  return start(args, env, cwd).done;
}

/** The JSON events of a --json output (non-JSON lines skipped). */
export function events(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
}

export function writeConfig(dir: string, name: string, config: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2));
  return file;
}

/** iptables rules (all tables, both families) in a namespace that mention `needle`. */
export async function rulesMentioning(netns: string, needle: string): Promise<string[]> {
  const out: string[] = [];
  for (const tool of ['iptables-save', 'ip6tables-save']) {
    const r = await runScript('ip', ['netns', 'exec', netns, tool], { timeoutMs: 20_000 });
    out.push(...r.stdout.split('\n').filter((l) => l.includes(needle)));
  }
  return out;
}

/** Host iptables rules mentioning `remus`. */
export async function hostRemusRules(): Promise<string[]> {
  const r = await runScript('iptables-save', [], { timeoutMs: 20_000 });
  return r.stdout.split('\n').filter((l) => l.includes('remus'));
}

/** Cgroups of an operation in every freezer hierarchy. */
export function cgroupsOf(operation: string): string[] {
  return ['/sys/fs/cgroup/freezer', '/sys/fs/cgroup/unified']
    .map((root) => join(root, `remus-${operation}`))
    .filter((p) => existsSync(p));
}

export function journals(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
}

/** Ends a `remus` that still runs (SIGKILL) and waits for its exit. */
export async function killRunning(r: Running | undefined): Promise<void> {
  if (r && r.child.exitCode === null && r.child.signalCode === null) {
    r.child.kill('SIGKILL');
    await r.done;
  }
}
