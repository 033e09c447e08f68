// `remus colo start` as a user runs it (a spawned remus), on two real QEMUs
// without a guest (-S; the guest lab in tools/colo-lab covers traffic), with
// a real fence: a bridge and two taps in a network namespace this file
// creates (needs root). Then `status`, `failover` and `stop` from other remus
// processes through the control socket; and SIGTERM, which detaches and
// leaves the pair replicating (the status fallback then sees COLO on both).
// Every QEMU is killed by pid; the namespace and temp dirs are removed.
import { existsSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runScript } from '@remus/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { qemuPair, stopQemus } from './colo-env.js';
import { createNamespace, processAlive, sh, tempDir, waitFor } from '@remus/test-lab';
import { events, journals, killRunning, remus, start, writeConfig, type Running } from './helpers.js';

let fenceNs: { readonly name: string; destroy(): void } | undefined;
let NS: string;
let dir: string;
let state: string;
let running: Running | undefined;

beforeEach(async () => {
  dir = tempDir('colo-pair').dir;
  state = join(dir, 'state');
  fenceNs = createNamespace('rmcli');
  NS = fenceNs.name;
  sh('ip', ['-n', NS, 'link', 'add', 'br0', 'type', 'bridge']);
  for (const tap of ['tap-p', 'tap-s']) sh('ip', ['-n', NS, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  sh('ip', ['-n', NS, 'link', 'set', 'tap-p', 'master', 'br0']);
});

afterEach(async () => {
  await killRunning(running);
  running = undefined;
  await stopQemus();
  fenceNs?.destroy();
  fenceNs = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** Waits (bounded) until the output of `run` matches `re`. */
async function waitLine(run: Running, re: RegExp, ms: number): Promise<void> {
  await waitFor(
    () => {
      if (run.child.exitCode !== null && !re.test(run.stdout())) throw new Error(`no line ${re} (remus exited); stdout:\n${run.stdout()}\nstderr:\n${run.stderr()}`);
      return re.test(run.stdout());
    },
    ms,
    `a line ${re}`,
    () => `stdout:\n${run.stdout()}\nstderr:\n${run.stderr()}`,
  );
}

async function bridgePorts(): Promise<string[]> {
  const r = await runScript('ip', ['-n', NS, '-o', 'link', 'show', 'master', 'br0'], { timeoutMs: 10_000 });
  return [...r.stdout.matchAll(/^\d+:\s+([^:@\s]+)/gm)].map((m) => m[1]!);
}

async function startPair(extra: string[] = ['--json']): Promise<{ pri: { pid: number }; sec: { pid: number }; file: string }> {
  const { pri, sec, pair } = await qemuPair({ fence: { netns: NS, bridge: 'br0', primaryTap: 'tap-p', secondaryTap: 'tap-s' } });
  const file = writeConfig(dir, 'web.json', pair);
  running = start(['colo', 'start', file, '--state-dir', state, ...extra]);
  if (extra.includes('--json')) await running.waitFor((e) => e.type === 'replicating', 90_000);
  else await waitLine(running, /^replicating; watchdog on/m, 90_000);
  return { pri, sec, file };
}

describe('remus colo on a real QEMU pair (netns fence)', () => {
  it('start streams steps and serves the control socket; failover --to secondary fences the primary; stop ends the driver', async () => {
    const { pri, sec } = await startPair();
    const run = running!;
    const evs = events(run.stdout());
    expect(evs[0]).toMatchObject({ type: 'start', name: 'web', fence: true, watchdogBoundMs: 5300, control: join(state, 'colo-web.sock') });
    const steps = evs.filter((e) => e.type === 'step').map((e) => `${String(e.side)}: ${String(e.step)}`);
    expect(steps.slice(0, 3)).toEqual(['secondary: set up devices (@remus/colo)', 'primary: set up devices (@remus/colo)', 'secondary: proxy connected']);
    expect(steps).toContain('primary: migrate');
    expect(evs.filter((e) => e.type === 'state').map((e) => e.state)).toEqual(['starting', 'replicating']);
    expect(journals(state), 'the journal goes once replication runs').toEqual([]);

    // status through the driver (the only pair in the state dir: no file needed)
    const st = await remus(['colo', 'status', '--json', '--state-dir', state]);
    expect(st.code).toBe(0);
    expect(events(st.stdout)[0]).toMatchObject({ type: 'status', driver: true, ok: true, name: 'web', pid: run.child.pid, status: { state: 'replicating', active: 'primary' } });
    const human = await remus(['colo', 'status', '--name', 'web', '--state-dir', state]);
    expect(human.stdout).toMatch(/^state: replicating, serving: primary$/m);

    // a second driver for the same pair is refused before it touches anything
    const again = await remus(['colo', 'start', join(dir, 'web.json'), '--state-dir', state]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/\[STATE\] a remus colo driver for pair web already runs/);

    const f = await remus(['colo', 'failover', '--to', 'secondary', '--state-dir', state]);
    expect(f.stderr).toBe('');
    expect(f.code).toBe(0);
    expect(f.stdout).toMatch(/^secondary: x-colo-lost-heartbeat \(\d+\.\d\d ms\)$/m);
    expect(f.stdout).toMatch(/^failover to the secondary done in \d+\.\d\d ms \(manual failover to the secondary \(remus colo failover\)\)$/m);
    expect(f.stdout).toMatch(/^state: failed-over, serving: secondary$/m);
    expect(f.stdout).toMatch(/^kept on the secondary: colo\.\w+\.nic0\.rew0$/m);
    expect(f.stdout).toMatch(/^failover done in \d+\.\d\d ms$/m);
    expect(processAlive(pri.pid), 'the primary was fenced (SIGKILL by pid)').toBe(false);
    expect(await bridgePorts(), 'only the secondary is on the bridge').toEqual(['tap-s']);
    await run.waitFor((e) => e.type === 'failover' && e.survivor === 'secondary', 5000);
    await run.waitFor((e) => e.type === 'request' && e.command === 'failover', 5000);
    const back = await remus(['colo', 'failover', '--to', 'primary', '--state-dir', state]);
    expect(back.code).toBe(1);
    expect(back.stderr).toMatch(/failover failed: \[STATE\] pair web already failed over to the secondary/);
    expect(statSync(join(state, 'colo-web.sock')).mode & 0o777, 'the control socket is for its owner only').toBe(0o600);

    const stop = await remus(['colo', 'stop', '--json', '--state-dir', state]);
    expect(stop.code).toBe(0);
    expect(events(stop.stdout).at(-1)).toMatchObject({ type: 'end', ok: true, status: { state: 'failed-over', active: 'secondary' } });
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(events(r.stdout).at(-1)).toMatchObject({ type: 'end', ok: true, how: 'stopped', clean: true });
    expect(existsSync(join(state, 'colo-web.sock')), 'the control socket is removed').toBe(false);
    expect(processAlive(sec.pid), 'the promoted secondary serves on').toBe(true);
  });

  it('SIGTERM detaches with a warning and leaves the pair replicating, as the status fallback shows', async () => {
    const { pri, sec, file } = await startPair();
    const run = running!;
    run.child.kill('SIGTERM');
    const r = await run.done;
    expect(r.code).toBe(0);
    const evs = events(r.stdout);
    expect(evs.find((e) => e.type === 'detached')).toMatchObject({ signal: 'SIGTERM', unwatched: true });
    expect(evs.at(-1)).toMatchObject({ type: 'end', ok: true, how: 'detached', status: { state: 'stopped' } });
    expect(processAlive(pri.pid) && processAlive(sec.pid)).toBe(true);
    expect(await bridgePorts()).toEqual(['tap-p']);
    const st = await remus(['colo', 'status', file, '--state-dir', state]);
    expect(st.code).toBe(0);
    expect(st.stdout).toMatch(/^primary .*: COLO mode primary, migration colo, VM running$/m);
    expect(st.stdout).toMatch(/^secondary .*: COLO mode secondary, migration colo, VM running$/m);
  });

  it('shows the watchdog at work in lines: SIGKILL of the secondary, failover to the primary; --stop-on-exit stops on SIGINT', async () => {
    const { pri, sec } = await startPair(['--stop-on-exit']);
    const run = running!;
    expect(run.stdout()).toMatch(/^secondary: set up devices \(@remus\/colo\) \(\d+\.\d\d ms\)$/m);
    expect(run.stdout()).toMatch(/^state: replicating$/m);
    process.kill(sec.pid, 'SIGKILL');
    await waitLine(run, /^failover to the primary done in \d+\.\d\d ms \(.+\)$/m, 20_000);
    expect(run.stdout()).toMatch(/^WATCHDOG: the secondary failed: /m);
    expect(await bridgePorts()).toEqual(['tap-p']);
    const st = await remus(['colo', 'status', '--state-dir', state]);
    expect(st.stdout).toMatch(/^state: failed-over, serving: primary$/m);
    expect(st.stdout).toMatch(/^failover: to the primary \(/m);
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^SIGINT: stopping the pair \(--stop-on-exit\)$/m);
    expect(r.stdout).toMatch(/^stopped$/m);
    expect(processAlive(pri.pid), 'the primary serves on').toBe(true);
  });
});
