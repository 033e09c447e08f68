// `autoReprotect` in a pair file, on real QEMUs (no guest, -S): after each
// failover the driver of `remus colo start` runs the operator's command
// (fixtures/spare-secondary.mjs: starts a fresh secondary QEMU, prints the
// new pair file) and reprotects the survivor onto it, then watches the new
// pair: two failovers in a row, each followed by protection again, without
// restarting the driver. A command whose pair file does not name the
// survivor as primary is refused: the survivor serves on, the driver stays.
// Every QEMU (the pair's and the spares, read from the fixture's pid file)
// is killed by pid afterwards.
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processAlive, tempDir, waitFor } from '@remus/test-lab';
import { qemuPair, stopQemus } from './colo-env.js';
import { events, killRunning, remus, start, writeConfig, type Running } from './helpers.js';

const SPARE = new URL('./fixtures/spare-secondary.mjs', import.meta.url).pathname;
let dir: string | undefined;
const runs: Running[] = [];

afterEach(async () => {
  for (const r of runs.splice(0)) await killRunning(r);
  await stopQemus();
  if (dir) {
    const pids = join(dir, 'spare.pids');
    for (const pid of existsSync(pids) ? readFileSync(pids, 'utf8').split('\n').filter(Boolean).map(Number) : []) {
      if (!processAlive(pid)) continue;
      process.kill(pid, 'SIGKILL');
      await waitFor(() => !processAlive(pid), 10_000, `spare QEMU ${pid} to end`);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  dir = undefined;
});

/** Starts a pair with autoReprotect through the fixture; `mode` is the fixture's SPARE_MODE. */
async function startPair(mode?: string): Promise<{ run: Running; state: string; pair: Record<string, unknown> }> {
  dir = tempDir('colo-auto').dir;
  const state = join(dir, 'state');
  const { pair } = await qemuPair({ autoReprotect: { command: [process.execPath, SPARE], timeoutMs: 60_000 } });
  const run = start(['colo', 'start', writeConfig(dir, 'web.json', pair), '--json', '--state-dir', state], {
    SPARE_DIR: dir,
    SPARE_PIDS: join(dir, 'spare.pids'),
    ...(mode ? { SPARE_MODE: mode } : {}),
  });
  runs.push(run);
  await run.waitFor((e) => e.type === 'replicating', 60_000);
  return { run, state, pair };
}

const spareInputs = (d: string) =>
  readdirSync(d)
    .filter((n) => n.startsWith('spare-'))
    .map((n) => JSON.parse(readFileSync(join(d, n, 'input.json'), 'utf8')) as { input: { name: string; survivor: { role: string; qmp: string } }; env: Record<string, string> });

describe('remus colo start with autoReprotect (real QEMUs)', () => {
  it('after each failover the command starts a fresh secondary and the survivor is protected again: twice, in one driver', async () => {
    const { run, state, pair } = await startPair();
    const sec = pair.secondary as { qmp: string };

    const f1 = await remus(['colo', 'failover', '--to', 'secondary', '--name', 'web', '--state-dir', state]);
    expect(f1.code, f1.stdout + f1.stderr).toBe(0);
    const r1 = await run.waitFor((e) => e.type === 'reprotected', 90_000);
    expect(r1).toMatchObject({ status: { state: 'replicating', active: 'primary', resync: { bytes: 16 * 1024 * 1024 } } });
    const [in1] = spareInputs(dir!);
    expect(in1).toMatchObject({ input: { name: 'web', survivor: { role: 'secondary', qmp: `unix:${sec.qmp}` } }, env: { pair: 'web', survivor: 'secondary' } });

    const st = await remus(['colo', 'status', '--name', 'web', '--state-dir', state]);
    expect(st.code, st.stdout + st.stderr).toBe(0);
    expect(st.stdout).toMatch(/^state: replicating, serving: primary$/m);
    expect(st.stdout).toMatch(/^reprotected: 16777216 disk bytes mirrored in .*$/m);

    // The new pair is watched in turn: fail over again (to the first spare) and it is protected again by a second one.
    const f2 = await remus(['colo', 'failover', '--to', 'secondary', '--name', 'web', '--state-dir', state]);
    expect(f2.code, f2.stdout + f2.stderr).toBe(0);
    await waitFor(() => events(run.stdout()).filter((e) => e.type === 'reprotected').length === 2, 90_000, 'the second reprotect');
    const inputs = spareInputs(dir!);
    expect(inputs).toHaveLength(2);
    expect(inputs.map((i) => i.input.survivor.role)).toEqual(['secondary', 'secondary']);
    expect(new Set(inputs.map((i) => i.input.survivor.qmp)).size, 'the second survivor is the first spare, not the first survivor').toBe(2);
    expect(events(run.stdout()).filter((e) => e.type === 'auto-reprotect-failed')).toEqual([]);
    // Figures for the issue note: failover done -> protected again (command + mirror + migration), per failover.
    const evs = events(run.stdout());
    const at = (e: Record<string, unknown>) => Date.parse(String(e.time));
    const fos = evs.filter((e) => e.type === 'failover');
    const reps = evs.filter((e) => e.type === 'reprotected');
    reps.forEach((r, i) => {
      const st = r.status as { resync: { bytes: number; mirrorMs: number; pausedMs: number } };
      console.log(`auto-reprotect ${i + 1}: failover event -> reprotected ${at(r) - at(fos[i]!)} ms; mirror ${st.resync.mirrorMs.toFixed(0)} ms for ${st.resync.bytes} bytes; guest paused ${st.resync.pausedMs.toFixed(0)} ms`);
    });

    const stop = await remus(['colo', 'stop', '--name', 'web', '--state-dir', state]);
    expect(stop.code, stop.stdout + stop.stderr).toBe(0);
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(events(r.stdout).at(-1)).toMatchObject({ type: 'end', ok: true, how: 'stopped' });
  });

  it('a pair file that does not name the survivor as primary is refused: the survivor serves on unprotected and the driver stays', async () => {
    const { run, state } = await startPair('wrong-primary');
    const f = await remus(['colo', 'failover', '--to', 'secondary', '--name', 'web', '--state-dir', state]);
    expect(f.code, f.stdout + f.stderr).toBe(0);
    const failed = await run.waitFor((e) => e.type === 'auto-reprotect-failed', 60_000);
    expect(failed).toMatchObject({ error: { code: 'INVALID_ARGUMENT' } });
    expect(String((failed.error as { message: string }).message)).toMatch(/is not the survivor/);
    expect(run.stdout()).not.toMatch(/"type":"reprotected"/);
    const st = await remus(['colo', 'status', '--name', 'web', '--state-dir', state, '--json']);
    expect(st.code, st.stdout + st.stderr).toBe(0);
    expect(events(st.stdout).find((e) => e.type === 'status')).toMatchObject({ status: { state: 'failed-over', active: 'secondary' } });
    expect(run.child.exitCode, 'the driver runs on').toBeNull();
    const stop = await remus(['colo', 'stop', '--name', 'web', '--state-dir', state]);
    expect(stop.code, stop.stdout + stop.stderr).toBe(0);
    expect((await run.done).code).toBe(0);
  });
});
