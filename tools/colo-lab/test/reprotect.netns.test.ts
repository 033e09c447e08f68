/**
 * Reprotect end to end, as root, on the one-host lab (real QEMUs, the
 * busybox guest, a client namespace): the primary is killed, the secondary
 * serves; a reprotect whose fresh secondary is killed during the disk
 * mirror fails and leaves the survivor serving; a second reprotect onto
 * another fresh secondary resumes checkpoints; the new primary (the old
 * secondary) is killed and the reprotected side answers. The guest's
 * counter lives on the replicated disk: it must be continuous through
 * both failovers, and only one tap is ever on the clients' bridge.
 * Then the other way: the secondary dies, the primary serves alone, is
 * stopped (its proxy torn down) and reprotected onto a fresh secondary on
 * the dead side's tap; the survivor is then killed and the fresh side,
 * whose disk came from the mirror, answers with the next count.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectQmp } from '@remus/qmp';
import { pollUntil } from '@remus/core';
import { processAlive, type ColoDriverEvent, type ColoPair } from '@remus/colo';
import { ColoLab, PRIMARY_TAP, SECONDARY_TAP, SHIM_BANNER, bridgePorts, readShimStats, labPrimaryVm, labSecondaryVm, reapStaleLabs, reprotectInLab, startFreshSecondary, type CounterAnswer, type LabVm } from '../src/index.js';

let lab: ColoLab | undefined;
const fresh: LabVm[] = [];
let pair2: ColoPair | undefined;

beforeAll(async () => {
  await reapStaleLabs();
});

afterEach(async () => {
  await pair2?.close().catch(() => {});
  pair2 = undefined;
  // The fresh QEMUs use a tap in the lab's namespace: gone before the lab removes it.
  for (const v of fresh.splice(0)) await v.qemu.kill();
  const l = lab;
  lab = undefined;
  await l?.close();
});

async function ask(l: ColoLab, timeoutMs = 20_000): Promise<CounterAnswer> {
  try {
    return await l.request(timeoutMs);
  } catch (e) {
    throw new Error(`request failed: ${String(e)}\n${await l.diagnose()}`);
  }
}

/** Requests until one answers (each bounded), with the time from `since`. */
async function firstAnswer(l: ColoLab, since: number, boundMs: number): Promise<{ answer: CounterAnswer; ms: number }> {
  let last: unknown;
  while (performance.now() - since < boundMs) {
    try {
      const answer = await l.request(1000);
      return { answer, ms: performance.now() - since };
    } catch (e) {
      last = e;
    }
  }
  throw new Error(`no answer within ${boundMs} ms: ${String(last)}\n${l.logs()}`);
}

/** The QEMU taps on the clients' bridge (the serving sides). */
async function taps(l: ColoLab): Promise<string[]> {
  return (await bridgePorts(l.net)).filter((p) => p === PRIMARY_TAP || p === SECONDARY_TAP);
}

async function coloMode(qmp: string): Promise<string | undefined> {
  const c = await connectQmp(qmp, { timeoutMs: 5000 });
  try {
    return (await c.execute<{ mode?: string }>('query-colo-status')).mode;
  } finally {
    await c.close();
  }
}

/** Waits for three checkpoints of the reprotected pair and checks the whole 16 MiB disk was mirrored; its status. */
async function checkpointing(p2: ColoPair): Promise<ReturnType<ColoPair['status']>> {
  await pollUntil(() => p2.status().checkpoints >= 3, { what: 'three checkpoints of the reprotected pair', timeoutMs: 30_000, intervalMs: 100 });
  const st = p2.status();
  expect(st.resync?.bytes).toBe(16 * 1024 * 1024);
  return st;
}

/**
 * SIGKILLs the reprotected pair's primary `pid`: its secondary takes over and
 * answers `count`, then `count + 1`; only `servingTap` is on the bridge.
 */
async function survivorDies(l: ColoLab, p2: ColoPair, pid: number, count: number, servingTap: string): Promise<{ answer: CounterAnswer; ms: number }> {
  const killedAt = performance.now();
  process.kill(pid, 'SIGKILL');
  const first = await firstAnswer(l, killedAt, 60_000);
  expect(first.answer.count).toBe(count);
  await p2.waitForState(['failed-over'], 10_000);
  expect(p2.status()).toMatchObject({ state: 'failed-over', active: 'secondary' });
  expect(await taps(l)).toEqual([servingTap]);
  expect((await ask(l)).count).toBe(count + 1);
  return first;
}

/** A lab whose pair replicates and has answered counts 1, 2, 3. */
async function replicatingLab(tag: string): Promise<ColoLab> {
  lab = await ColoLab.create({ prefix: `colo-t${process.pid % 100000}-${tag}`, checkpointDelayMs: 2000 });
  const l = lab;
  try {
    await l.start(150_000);
  } catch (e) {
    throw new Error(`the COLO pair did not start: ${String(e)}\n${l.logs()}`);
  }
  for (let i = 1; i <= 3; i++) expect((await ask(l)).count).toBe(i);
  return l;
}

describe('COLO reprotect (real QEMUs, netns)', () => {
  it('after a failover, reprotect onto a fresh secondary resumes checkpoints and survives the new primary being killed; the counter is continuous, one side serves at a time, and a reprotect killed midway leaves the survivor serving', async () => {
    const l = await replicatingLab('re');

    // 1. The primary dies: the secondary serves.
    const kill1 = performance.now();
    process.kill(l.primary.pid, 'SIGKILL');
    const first = await firstAnswer(l, kill1, 60_000);
    expect(first.answer.count).toBe(4);
    const f1 = l.pair.status().failover!;
    expect(l.pair.status()).toMatchObject({ state: 'failed-over', active: 'secondary' });
    expect(await taps(l)).toEqual([SECONDARY_TAP]);
    await l.pair.close(); // detach: the survivor's QMP is free for the new pair
    const survivor = labSecondaryVm(l, SECONDARY_TAP);

    // 2. A reprotect whose fresh secondary is killed during the mirror fails; the survivor serves on, unprotected.
    const c1 = await startFreshSecondary(l, 'c1', PRIMARY_TAP);
    fresh.push(c1);
    const err = await reprotectInLab(l, survivor, c1, {
      onEvent: (e) => {
        if (e.type === 'step' && e.step === 'blockdev-mirror (sync full)') process.kill(c1.qemu.pid, 'SIGKILL');
      },
      run: { timeoutMs: 60_000, mirrorTimeoutMs: 60_000 },
    }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/^colo reprotect failed: .*; the survivor serves on, unprotected; the new secondary \(pid \d+\) was killed$/);
    expect(processAlive(c1.qemu.pid)).toBe(false);
    expect((await ask(l)).count, 'the survivor serves after the failed reprotect').toBe(5);
    expect(await coloMode(survivor.qmp)).toBe('none');
    expect(await taps(l)).toEqual([SECONDARY_TAP]);

    // 3. Reprotect onto another fresh secondary: checkpoints resume.
    const c2 = await startFreshSecondary(l, 'c2', PRIMARY_TAP);
    fresh.push(c2);
    const events: ColoDriverEvent[] = [];
    let firstCheckpointAt: number | undefined;
    const t0 = performance.now();
    pair2 = await reprotectInLab(l, survivor, c2, {
      onEvent: (e) => {
        events.push(e);
        if (e.type === 'checkpoint') firstCheckpointAt ??= performance.now();
      },
      run: { timeoutMs: 120_000, mirrorTimeoutMs: 60_000 } });
    const reprotectMs = performance.now() - t0;
    const p2 = pair2;
    expect(p2.status().state).toBe('replicating');
    expect(await taps(l), 'the survivor alone serves while protected').toEqual([SECONDARY_TAP]);
    expect((await ask(l)).count).toBe(6);
    expect((await ask(l)).count).toBe(7);
    const st2 = await checkpointing(p2);
    const cpAt = events.find((e) => e.type === 'checkpoint');
    expect(cpAt, 'colo-compare checkpoints counted').toBeDefined();

    // 4. The new primary (the old secondary) dies: the reprotected side serves, the counter continues.
    const second = await survivorDies(l, p2, l.secondary.pid, 8, PRIMARY_TAP);
    expect(processAlive(l.secondary.pid)).toBe(false);
    expect(await l.echo('after the second failover\n')).toBe('after the second failover\n');

    if (l.accel === 'tcg') {
      // The fresh secondaries run under the same test-only TCG workaround as the lab's pair.
      expect(readFileSync(join(c2.dir, 'qemu.log'), 'utf8')).toContain(SHIM_BANNER);
      expect(readShimStats(join(c2.dir, 'shim.stats'))?.tbFlushes, 'the workaround ran on the reprotected secondary').toBeGreaterThan(0);
    }
    const f2 = p2.status().failover!;
    console.log(
      `colo reprotect figures: failover 1 (primary killed) driver ${(f1.doneAt - f1.detectedAt).toFixed(0)} ms, first answer ${first.ms.toFixed(0)} ms after the kill; ` +
        `reprotect() ${reprotectMs.toFixed(0)} ms (mirror ${st2.resync!.mirrorMs.toFixed(0)} ms, ${st2.resync!.bytes} bytes, guest paused ${st2.resync!.pausedMs.toFixed(0)} ms), ` +
        `reprotect() call to first checkpoint ${(firstCheckpointAt! - t0).toFixed(0)} ms, failover 1 done to first checkpoint ${(performance.timeOrigin + firstCheckpointAt! - f1.doneAt).toFixed(0)} ms (incl. the failed attempt and c2's start), ` +
        `checkpoints after reprotect ${st2.checkpoints} (pause p50 ${st2.pauseMs.p50?.toFixed(0)} ms); ` +
        `failover 2 (new primary killed) driver ${(f2.doneAt - f2.detectedAt).toFixed(0)} ms, first answer ${second.ms.toFixed(0)} ms after the kill`,
    );
  });
  it('the survivor was the primary: the secondary dies, the primary serves alone, is reprotected onto a fresh secondary, and that secondary (its disk from the mirror) serves the next count when the survivor dies', async () => {
    const l = await replicatingLab('rp');

    // 1. The secondary dies: the primary goes on alone (the watchdog's failover to the primary).
    const kill1 = performance.now();
    process.kill(l.secondary.pid, 'SIGKILL');
    await l.pair.waitForState(['failed-over'], 30_000);
    expect(l.pair.status()).toMatchObject({ state: 'failed-over', active: 'primary' });
    const first = await firstAnswer(l, kill1, 60_000);
    expect(first.answer.count).toBe(4);
    expect(await taps(l)).toEqual([PRIMARY_TAP]);
    const f1 = l.pair.status().failover!;
    // stop(): the survivor's proxy (its chardevs, kept by the failover) is torn down, so the new pair can add its own.
    await l.pair.stop();
    const survivor = labPrimaryVm(l, PRIMARY_TAP);
    expect((await ask(l)).count, 'the primary serves alone after stop()').toBe(5);

    // 2. Reprotect onto a fresh secondary on the dead side's tap.
    const c1 = await startFreshSecondary(l, 'p1', SECONDARY_TAP);
    fresh.push(c1);
    const t0 = performance.now();
    let firstCheckpointAt: number | undefined;
    pair2 = await reprotectInLab(l, survivor, c1, {
      onEvent: (e) => {
        if (e.type === 'checkpoint') firstCheckpointAt ??= performance.now();
      },
      run: { timeoutMs: 120_000, mirrorTimeoutMs: 60_000 },
    });
    const reprotectMs = performance.now() - t0;
    const p2 = pair2;
    expect(p2.status().state).toBe('replicating');
    expect(await taps(l), 'the survivor alone serves while protected').toEqual([PRIMARY_TAP]);
    expect((await ask(l)).count).toBe(6);
    const st2 = await checkpointing(p2);

    // 3. The survivor dies: the fresh secondary serves the next count from the mirrored and replicated disk.
    const second = await survivorDies(l, p2, l.primary.pid, 7, SECONDARY_TAP);
    const f2 = p2.status().failover!;
    console.log(
      `colo reprotect of a primary survivor: failover 1 (secondary killed) driver ${(f1.doneAt - f1.detectedAt).toFixed(0)} ms, first answer ${first.ms.toFixed(0)} ms after the kill; ` +
        `reprotect() ${reprotectMs.toFixed(0)} ms (mirror ${st2.resync!.mirrorMs.toFixed(0)} ms, ${st2.resync!.bytes} bytes, guest paused ${st2.resync!.pausedMs.toFixed(0)} ms), ` +
        `call to first checkpoint ${firstCheckpointAt === undefined ? '-' : (firstCheckpointAt - t0).toFixed(0)} ms; failover 2 (survivor killed) driver ${(f2.doneAt - f2.detectedAt).toFixed(0)} ms, first answer ${second.ms.toFixed(0)} ms after the kill`,
    );
  });
});
