// Runs the built `remus` as a user would (a child process), and looks for
// anything a run may leave: namespaces, iptables rules, cgroups, journals.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runScript } from '@remus/core';

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

export function start(args: readonly string[], env: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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
  const waitFor = async (pred: (e: Record<string, unknown>) => boolean, ms = 20_000): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = events(out).find(pred);
      if (hit) return hit;
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`no matching event (exit ${child.exitCode}); stdout:\n${out}\nstderr:\n${err}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, stdout: () => out, stderr: () => err, done, waitFor };
}

/** Runs `remus ARGS` to completion. */
export function remus(args: readonly string[], env: Record<string, string> = {}): Promise<Result> {
  return start(args, env).done;
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

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function writeConfig(dir: string, name: string, config: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2));
  return file;
}

export async function ip(args: readonly string[]): Promise<string> {
  return (await runScript('ip', args, { timeoutMs: 20_000 })).stdout;
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

export function netnsNames(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

export function journals(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
}

/** True while `pid` runs (zombies count as gone). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * A router namespace with a guest-side veth (`vif0` in the router, `eth0`
 * in the guest namespace), as a NIC device for nic-nfqueue.
 */
export async function makeNics(prefix: string): Promise<{ router: string; guest: string; remove: () => Promise<void> }> {
  const router = `${prefix}r`;
  const guest = `${prefix}g`;
  await ip(['netns', 'add', router]);
  await ip(['netns', 'add', guest]);
  await ip(['-n', router, 'link', 'add', 'vif0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', guest]);
  await ip(['-n', router, 'link', 'set', 'vif0', 'up']);
  await ip(['-n', guest, 'link', 'set', 'eth0', 'up']);
  return {
    router,
    guest,
    remove: async () => {
      for (const ns of [router, guest]) {
        const pids = (await ip(['netns', 'pids', ns]).catch(() => '')).split('\n').filter(Boolean);
        for (const p of pids) {
          try {
            process.kill(Number(p), 'SIGKILL');
          } catch {
            // Gone.
          }
        }
        await ip(['netns', 'delete', ns]).catch(() => undefined);
      }
    },
  };
}

/** Ends a `remus` that still runs (SIGKILL) and waits for its exit. */
export async function killRunning(r: Running | undefined): Promise<void> {
  if (r && r.child.exitCode === null) {
    r.child.kill('SIGKILL');
    await r.done;
  }
}
