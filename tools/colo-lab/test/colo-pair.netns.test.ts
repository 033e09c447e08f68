/**
 * End to end, as root: two real QEMUs (a COLO pair) and the busybox guest in
 * network namespaces this file creates; a client in its own namespace.
 * One scenario at a time (each boots a pair); every QEMU is killed by pid and
 * every namespace and file removed in afterEach, pass or fail.
 *
 * Under software emulation the pair needs the test-only shim
 * (shim/colo-tcg-shim.c); these tests check that it announced itself and
 * that it still intervened, and fail loudly when it no longer applies. With
 * KVM they check that no shim was loaded.
 */
import { join } from 'node:path';
import { connectQmp } from '@remus/qmp';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { watchdogBoundMs } from '@remus/colo';
import { ColoLab, SECONDARY_TAP, PRIMARY_TAP, bridgePorts, reapStaleLabs, type CounterAnswer } from '../src/index.js';

let lab: ColoLab | undefined;
let seq = 0;

// Labs of earlier runs that were killed before they could clean up.
beforeAll(async () => {
  await reapStaleLabs();
});

afterEach(async () => {
  const l = lab;
  lab = undefined;
  await l?.close();
});

async function startLab(): Promise<ColoLab> {
  lab = await ColoLab.create({ prefix: `colo-t${process.pid % 100000}-${seq++}`, checkpointDelayMs: 2000 });
  try {
    await lab.start(150_000);
  } catch (e) {
    throw new Error(`the COLO pair did not start: ${String(e)}\n${lab.logs()}`);
  }
  return lab;
}

/** Per accelerator: how many scenarios ran, and how often the shim's bug (a) path stepped in on a primary. */
const workaround = { tcgScenarios: 0, kvmScenarios: 0, unownedWaits: 0 };

/**
 * The shim must have been loaded (TCG) or absent (KVM). Bug (b)'s fix runs at
 * every resume, so it is checked per scenario; bug (a) is a timing-dependent
 * race that a short scenario may not hit, so its counter is summed over the
 * file and checked by the last test.
 */
function checkWorkaround(l: ColoLab): void {
  if (l.accel === 'kvm') {
    workaround.kvmScenarios++;
    expect(l.shimStats, 'no workaround is loaded with KVM').toBeUndefined();
    expect(l.shimAnnounced()).toEqual({ primary: false, secondary: false });
    return;
  }
  expect(l.shimAnnounced(), 'the TCG workaround shim announces itself in both QEMU logs').toEqual({ primary: true, secondary: true });
  const s = l.shim();
  if (!s.primary || !s.secondary) throw new Error(`the TCG shim wrote no counters: ${JSON.stringify(s)}`);
  workaround.tcgScenarios++;
  workaround.unownedWaits += s.primary.unownedWaits;
  // Each unowned wait kicks the vCPU (bug (a)'s lost wake-up); read while checkpoints go on, so a wait may be half-counted.
  expect(Math.abs(s.primary.kicks - s.primary.unownedWaits), JSON.stringify(s.primary)).toBeLessThanOrEqual(1);
  if (s.primary.tlbFlushes === 0 || s.secondary.tbFlushes === 0) {
    throw new Error(`THE TCG WORKAROUND NO LONGER APPLIES: no vCPU resume was seen (bug (b) fix never ran): ${JSON.stringify(s)}`);
  }
}

/** One request; on failure the error carries the pair's status and the QEMU logs and consoles. */
async function ask(l: ColoLab, timeoutMs = 20_000): Promise<CounterAnswer> {
  try {
    return await l.request(timeoutMs);
  } catch (e) {
    throw new Error(`request failed: ${String(e)}\n${await l.diagnose(4000)}`);
  }
}

/** Requests until one answers (each bounded), returning it and the time it took from `since`. */
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
  throw new Error(`no answer within ${boundMs} ms of the kill: ${String(last)}\n${l.logs()}`);
}

describe('COLO pair (two real QEMUs, netns)', () => {
  it('serves through the primary while checkpoints run; after SIGKILL of the primary the secondary answers with its state continuous', async () => {
    const l = await startLab();
    const answers: CounterAnswer[] = [];
    for (let i = 0; i < 6; i++) answers.push(await ask(l));
    expect(answers.map((a) => a.count)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await l.echo('ping colo\n')).toBe('ping colo\n');
    // Let periodic checkpoints run too.
    const before = l.pair.status().checkpoints;
    await new Promise((r) => setTimeout(r, 4500));
    const st = l.pair.status();
    expect(st.state).toBe('replicating');
    expect(st.checkpoints).toBeGreaterThan(before);
    expect(st.onDemandCheckpoints, 'divergent answers force checkpoints').toBeGreaterThan(0);
    checkWorkaround(l);

    const killedAt = performance.now();
    process.kill(l.primary.pid, 'SIGKILL');
    const { answer, ms } = await firstAnswer(l, killedAt, 60_000);
    expect(answer.count, 'the counter continues from the last answered value').toBe(7);
    expect(l.pair.status().state).toBe('failed-over');
    expect(l.pair.status().active).toBe('secondary');
    expect(l.primary.gone).toBe(true);
    expect(await bridgePorts(l.net), 'only the survivor is on the clients network').not.toContain(PRIMARY_TAP);
    expect(await bridgePorts(l.net)).toContain(SECONDARY_TAP);
    expect((await ask(l)).count).toBe(8);
    expect(await l.echo('after failover\n')).toBe('after failover\n');
    const f = l.pair.status();
    console.log(
      `colo figures (primary killed): first checkpoint ${f.timeToFirstCheckpointMs?.toFixed(0)} ms after start, ` +
        `pause p50 ${f.pauseMs.p50?.toFixed(0)} ms p99 ${f.pauseMs.p99?.toFixed(0)} ms over ${f.checkpoints} checkpoints (${f.onDemandCheckpoints} on demand), ` +
        `failover done ${(f.failover!.doneAt - f.failover!.detectedAt).toFixed(0)} ms after detection, first answer ${ms.toFixed(0)} ms after the kill`,
    );
  });

  it('after SIGKILL of the secondary the primary keeps serving and no client hangs', async () => {
    const l = await startLab();
    for (let i = 1; i <= 3; i++) expect((await ask(l)).count).toBe(i);
    checkWorkaround(l);

    const killedAt = performance.now();
    process.kill(l.secondary.pid, 'SIGKILL');
    // Clients in flight at the kill: each must get its answer within its bound.
    const inFlight = await Promise.allSettled([ask(l, 15_000), ask(l, 15_000), l.echo('in flight\n', 15_000)]);
    const { ms } = await firstAnswer(l, killedAt, 60_000);
    for (const r of inFlight) expect(r.status, `a client hung or failed: ${r.status === 'rejected' ? String(r.reason) : ''}`).toBe('fulfilled');
    const counts = inFlight.slice(0, 2).map((r) => (r as PromiseFulfilledResult<CounterAnswer>).value.count).sort();
    expect(counts).toEqual([4, 5]);
    expect(l.pair.status().state).toBe('failed-over');
    expect(l.pair.status().active).toBe('primary');
    expect(l.secondary.gone).toBe(true);
    expect(await bridgePorts(l.net)).toContain(PRIMARY_TAP);
    expect(await bridgePorts(l.net)).not.toContain(SECONDARY_TAP);
    expect((await ask(l)).count).toBe(7);
    const f = l.pair.status();
    // stop(): the primary's leftover COLO devices go, the primary serves on.
    await l.pair.stop();
    const q = await connectQmp(join(l.dir, 'primary-events.qmp'));
    try {
      const objects = await q.execute<{ name: string }[]>('qom-list', { path: '/objects' });
      const chardevs = await q.execute<{ label: string }[]>('query-chardev');
      expect([...objects.map((o) => o.name), ...chardevs.map((c) => c.label)].filter((n) => n.startsWith('colo.'))).toEqual([]);
      expect(await q.execute('query-status')).toMatchObject({ running: true });
    } finally {
      await q.close();
    }
    expect((await ask(l)).count).toBe(8);
    console.log(
      `colo figures (secondary killed): first checkpoint ${f.timeToFirstCheckpointMs?.toFixed(0)} ms after start, ` +
        `pause p50 ${f.pauseMs.p50?.toFixed(0)} ms p99 ${f.pauseMs.p99?.toFixed(0)} ms over ${f.checkpoints} checkpoints, ` +
        `failover done ${(f.failover!.doneAt - f.failover!.detectedAt).toFixed(0)} ms after detection, an answer ${ms.toFixed(0)} ms after the kill`,
    );
  });

  it('a hung secondary (SIGSTOP) is noticed within the watchdog bound, fenced, and the primary serves on', async () => {
    const l = await startLab();
    for (let i = 1; i <= 2; i++) expect((await ask(l)).count).toBe(i);
    const stoppedAt = performance.timeOrigin + performance.now();
    process.kill(l.secondary.pid, 'SIGSTOP');
    const answer = await ask(l, 30_000);
    expect(answer.count).toBe(3);
    const st = l.pair.status();
    expect(st.state).toBe('failed-over');
    expect(st.active).toBe('primary');
    expect(st.failover?.why).toMatch(/QMP silent/);
    const bound = watchdogBoundMs();
    // The bound plus scheduling slack on a loaded 2-core machine.
    expect(st.failover!.detectedAt - stoppedAt, 'detection within the stated bound').toBeLessThan(bound + 1500);
    expect(l.secondary.gone, 'the hung secondary was fenced (SIGKILL by pid)').toBe(true);
    expect((await ask(l)).count).toBe(4);
    console.log(`colo figures (secondary hung): detected ${(st.failover!.detectedAt - stoppedAt).toFixed(0)} ms after SIGSTOP (bound ${bound} ms)`);
  });

  it('a manual failover to the secondary fences the live primary first; then the secondary serves alone', async () => {
    const l = await startLab();
    for (let i = 1; i <= 2; i++) expect((await ask(l)).count).toBe(i);
    const t0 = performance.now();
    await l.pair.failover('secondary', 'operator');
    const ms = performance.now() - t0;
    expect(l.primary.gone, 'the old primary was killed before the secondary was connected').toBe(true);
    expect(await bridgePorts(l.net)).toEqual(expect.arrayContaining([SECONDARY_TAP]));
    expect(await bridgePorts(l.net)).not.toContain(PRIMARY_TAP);
    expect(l.pair.status()).toMatchObject({ state: 'failed-over', active: 'secondary', failover: { survivor: 'secondary', why: 'operator' } });
    expect((await firstAnswer(l, performance.now(), 30_000)).answer.count).toBe(3);
    // A second failover request is the same failover, not a new one.
    await l.pair.failover('primary');
    expect(l.pair.status().active).toBe('secondary');
    // Driver rule: stop() does not tear a promoted secondary down; its filter-rewriter (the one id kept) stays for the open connections.
    const kept = l.pair.status().failover!.kept;
    expect(kept).toEqual([expect.stringMatching(/^colo\..*\.rew0$/)]);
    await l.pair.stop();
    const q = await connectQmp(join(l.dir, 'secondary-events.qmp'));
    try {
      const objects = (await q.execute<{ name: string }[]>('qom-list', { path: '/objects' })).map((o) => o.name);
      const chardevs = (await q.execute<{ label: string }[]>('query-chardev')).map((c) => c.label);
      expect([...objects, ...chardevs].filter((n) => n.startsWith('colo.'))).toEqual([...kept]);
    } finally {
      await q.close();
    }
    expect((await ask(l)).count).toBe(4);
    console.log(`colo figures (manual failover to the secondary): ${ms.toFixed(0)} ms`);
  });

  it('a hung primary (SIGSTOP) is noticed within the watchdog bound, fenced, and the secondary serves with the state continuous', async () => {
    const l = await startLab();
    for (let i = 1; i <= 2; i++) expect((await ask(l)).count).toBe(i);
    const stoppedAt = performance.timeOrigin + performance.now();
    process.kill(l.primary.pid, 'SIGSTOP');
    const { answer } = await firstAnswer(l, performance.now(), 60_000);
    expect(answer.count).toBe(3);
    const st = l.pair.status();
    expect(st).toMatchObject({ state: 'failed-over', active: 'secondary' });
    expect(st.failover?.why).toMatch(/QMP silent/);
    expect(st.failover!.detectedAt - stoppedAt, 'detection within the stated bound').toBeLessThan(watchdogBoundMs() + 1500);
    expect(l.primary.gone, 'the hung primary was fenced (SIGKILL by pid) before the secondary served').toBe(true);
    expect(await bridgePorts(l.net)).not.toContain(PRIMARY_TAP);
    console.log(`colo figures (primary hung): detected ${(st.failover!.detectedAt - stoppedAt).toFixed(0)} ms after SIGSTOP (bound ${watchdogBoundMs()} ms)`);
  });
  it('the TCG workaround still applies: over all scenarios the primary hit QEMU bug (a) and the shim stepped in', () => {
    // The two scenarios that call checkWorkaround ran it (with KVM: checked that none was loaded).
    expect(workaround.tcgScenarios + workaround.kvmScenarios).toBe(2);
    if (workaround.tcgScenarios === 0) return;
    if (workaround.unownedWaits === 0) {
      throw new Error(
        `THE TCG WORKAROUND NO LONGER APPLIES: ${workaround.tcgScenarios} scenarios ran checkpoints but the primary never waited on a mutex it does not hold (QEMU bug (a) of colo.md). ` +
          'QEMU has changed: re-check whether the shim is still needed and update shim/colo-tcg-shim.c and colo.md.',
      );
    }
    expect(workaround.unownedWaits).toBeGreaterThan(0);
  });
});
