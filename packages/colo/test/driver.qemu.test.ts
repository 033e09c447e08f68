/**
 * The COLO driver (ColoPair) on real QEMUs without a guest: a primary
 * started with -S and a secondary waiting with -incoming reach COLO mode
 * through the driver (set-up of both ops lists, x-colo migration); the
 * checkpoint delay is long, so no checkpoint beyond the first runs while a
 * test looks (software emulation's COLO bugs need a checkpoint to bite; the
 * guest lab in tools/colo-lab covers checkpoints under load). Faults are
 * real (SIGKILL, SIGSTOP of a QEMU) or injected through a QMP proxy
 * (COLO_EXIT, QUORUM_REPORT_BAD, a refused command).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createCheckpointDevices } from '@remus/core';
import { connectQmp } from '@remus/qmp';
import { coloSecondaryOps } from '../src/index.js';
import { ColoPair, RESUME_GRACE_MS, coloFailoverOnPrimary, coloFailoverOnSecondary, coloIds, processAlive, watchdogBoundMs, type ColoDriverEvent, type ColoPairOptions, type ColoRole } from '../src/index.js';
import { diff, freePorts, pairDevices, snapshot, startPrimary, startProxy, startSecondary, stopAll, type TestQemu } from './env.js';

afterEach(stopAll);

interface Pair {
  pri: TestQemu;
  sec: TestQemu;
  opts: ColoPairOptions;
  events: ColoDriverEvent[];
}

async function qemuPair(extra: Partial<ColoPairOptions> = {}): Promise<Pair> {
  const [mirror, compare, nbd, migration] = await freePorts(4);
  const [sec, pri] = await Promise.all([startSecondary({ incoming: `tcp:127.0.0.1:${migration}` }), startPrimary()]);
  const devices = pairDevices(pri.dir, { mirror: mirror!, compare: compare!, nbd: nbd! });
  const events: ColoDriverEvent[] = [];
  const opts: ColoPairOptions = {
    primary: { qmp: pri.qmp[0], pid: pri.pid, devices: devices.primary },
    secondary: { qmp: sec.qmp[0], pid: sec.pid, devices: devices.secondary },
    migrationUri: `tcp:127.0.0.1:${migration}`,
    checkpointDelayMs: 600_000,
    operationId: 'drv',
    onEvent: (e) => events.push(e),
    ...extra,
  };
  return { pri, sec, opts, events };
}

/** Names starting with `colo.` among a QEMU's objects, chardevs and exports, plus `colo-...-rep` block nodes: what the subkinds added. */
async function coloThings(q: TestQemu): Promise<string[]> {
  const s = await snapshot(q);
  return [...s.objects, ...s.chardevs, ...s.exports.map((e) => e.split(':')[0]!), ...s.nodes].filter((n) => /^colo[.-]/.test(n)).sort();
}

const ids = coloIds('drv', 'nic0');
const diskIds = coloIds('drv', 'disk0');

async function colo(q: TestQemu): Promise<string | undefined> {
  return (await q.inspect.execute<{ mode?: string }>('query-colo-status')).mode;
}

/** Waits (bounded) until `pid` is gone. */
async function gone(pid: number, ms = 10_000): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until; ) {
    if (!processAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

describe('ColoPair on real QEMUs (no guest)', () => {
  it('start() sets both sides up (secondary first) with exactly the ids coloIds names, and resolves in COLO mode; stop() keeps the primary, as it was', async () => {
    const p = await qemuPair();
    const priBefore = await snapshot(p.pri);
    const pair = await ColoPair.connect(p.opts, 20_000);
    try {
      await pair.start({ timeoutMs: 60_000 });
      expect(pair.status()).toMatchObject({ state: 'replicating', active: 'primary', checkpoints: 0 });
      expect(await colo(p.pri)).toBe('primary');
      expect(await colo(p.sec)).toBe('secondary');
      const steps = p.events.flatMap((e) => (e.type === 'step' ? [`${e.side}: ${e.step}`] : []));
      expect(steps.slice(0, 3)).toEqual(['secondary: set up devices (@remus/colo)', 'primary: set up devices (@remus/colo)', 'secondary: proxy connected']);
      expect(steps.at(-1)).toBe('primary: migrate');
      // One id scheme: what the subkinds made is exactly what coloIds names.
      expect(await coloThings(p.pri)).toEqual(
        [...Object.values(ids.primaryNic), diskIds.primaryDisk.node].sort(),
      );
      expect(await coloThings(p.sec)).toEqual([...Object.values(ids.secondaryNic), diskIds.secondaryDisk.export].sort());

      await pair.stop();
      expect(pair.status()).toMatchObject({ state: 'failed-over', active: 'primary', failover: { survivor: 'primary', why: 'stop requested', kept: expect.any(Array) } });
      expect(await gone(p.sec.pid), 'the secondary was fenced').toBe(true);
      expect(await colo(p.pri)).toBe('none');
      expect(diff(priBefore, await snapshot(p.pri)), 'the primary as it was before start()').toEqual([]);
      expect(await p.pri.inspect.execute('query-status')).toMatchObject({ running: true });
    } finally {
      await pair.close();
    }
  });

  it('a manual failover to the secondary fences the primary before connecting the secondary, keeps only the filter-rewriter, and stop() leaves it (driver rule)', async () => {
    const order: string[] = [];
    let pri = 0;
    const fence = {
      attach: async (side: ColoRole) => void order.push(`attach ${side}`),
      detach: async (side: ColoRole) => void order.push(`detach ${side}, primary alive: ${processAlive(pri)}`),
    };
    const p = await qemuPair({ fence });
    pri = p.pri.pid;
    const pair = await ColoPair.connect(p.opts, 20_000);
    try {
      expect(await pair.failover('secondary').catch((e: unknown) => e), 'no failover before replication').toMatchObject({ code: 'STATE' });
      await pair.start({ timeoutMs: 60_000 });
      await pair.failover('secondary', 'operator');
      expect(order).toEqual(['detach primary, primary alive: false', 'attach secondary']);
      expect(await colo(p.sec)).toBe('none');
      const st = pair.status();
      expect(st).toMatchObject({ state: 'failed-over', active: 'secondary', failover: { survivor: 'secondary', why: 'operator', kept: [ids.secondaryNic.rew] } });
      expect(st.failover!.doneAt).toBeGreaterThanOrEqual(st.failover!.detectedAt);
      expect(await coloThings(p.sec)).toEqual([ids.secondaryNic.rew]);
      const steps = p.events.flatMap((e) => (e.type === 'step' && e.side === 'secondary' && !/^(query-|qom-list)/.test(e.step) ? [e.step] : []));
      expect(steps.slice(steps.indexOf('nbd-server-stop'))).toEqual([
        'nbd-server-stop',
        'x-colo-lost-heartbeat',
        `object-del ${ids.secondaryNic.f2}`,
        `object-del ${ids.secondaryNic.f1}`,
        `chardev-remove ${ids.secondaryNic.red1}`,
        `chardev-remove ${ids.secondaryNic.red0}`,
      ]);
      // At most one failover: a second request is the first one.
      await pair.failover('primary');
      expect(pair.status().active).toBe('secondary');
      await pair.stop();
      expect(await coloThings(p.sec), 'stop() does not tear a promoted secondary down').toEqual([ids.secondaryNic.rew]);
      expect(await p.sec.inspect.execute('query-status')).toMatchObject({ running: true });
    } finally {
      await pair.close();
    }
  });

  it('watchdog: SIGKILL of the secondary fails over to the primary at once', async () => {
    const p = await qemuPair();
    const pair = await ColoPair.connect(p.opts, 20_000);
    try {
      await pair.start({ timeoutMs: 60_000 });
      process.kill(p.sec.pid, 'SIGKILL');
      await pair.waitForState(['failed-over', 'failed'], 10_000);
      expect(pair.status().state, JSON.stringify(p.events.filter((e) => e.type !== 'step'))).toBe('failed-over');
      expect(pair.status()).toMatchObject({ state: 'failed-over', active: 'primary', failover: { survivor: 'primary' } });
      // Whichever the watchdog saw first: the socket, the pid, or the primary's own COLO_EXIT.
      expect(pair.status().failover!.why).toMatch(/QMP connection closed|process \d+ is gone|shut down|COLO_EXIT \(error\) on the primary|COLO ended with an error/);
      expect(p.events).toContainEqual(expect.objectContaining({ type: 'peer-failure', side: 'secondary' }));
      expect(await colo(p.pri)).toBe('none');
      // What failover keeps on the primary: the proxy chardevs only (stop() removes them).
      expect(await coloThings(p.pri)).toEqual([ids.primaryNic.compare, ids.primaryNic.mirror, ids.primaryNic.out, ids.primaryNic.outIn, ids.primaryNic.pri, ids.primaryNic.priIn].sort());
    } finally {
      await pair.close();
    }
  });

  it('watchdog: a hung primary (SIGSTOP) is noticed within watchdogBoundMs, fenced, and the secondary promoted', async () => {
    const watchdog = { intervalMs: 100, probeTimeoutMs: 400, misses: 2 };
    const p = await qemuPair({ watchdog });
    const pair = await ColoPair.connect(p.opts, 20_000);
    try {
      await pair.start({ timeoutMs: 60_000 });
      const stoppedAt = performance.timeOrigin + performance.now();
      process.kill(p.pri.pid, 'SIGSTOP');
      await pair.waitForState(['failed-over', 'failed'], 15_000);
      const st = pair.status();
      expect(st).toMatchObject({ state: 'failed-over', active: 'secondary' });
      expect(st.failover!.why).toBe('QMP silent for 2 probes of 400 ms');
      // The stated bound, plus scheduling slack on a loaded machine.
      expect(st.failover!.detectedAt - stoppedAt).toBeLessThan(watchdogBoundMs(watchdog) + 1000);
      expect(processAlive(p.pri.pid), 'the hung primary was fenced (SIGKILL by pid)').toBe(false);
      expect(await colo(p.sec)).toBe('none');
    } finally {
      await pair.close();
    }
  });

  it('a primary that QEMU leaves paused by COLO after the failover (run state colo) gets cont, within the grace and its bound, and the sequence says so', async () => {
    const p = await qemuPair({ watchdog: false });
    const pair = await ColoPair.connect(p.opts, 20_000);
    await pair.start({ timeoutMs: 60_000 });
    await pair.close(); // detached: both QEMUs stay in COLO
    process.kill(p.sec.pid, 'SIGKILL');
    expect(await gone(p.sec.pid)).toBe(true);
    // Fault injection: the primary reports run state colo (COLO's checkpoint pause) until it is sent cont.
    let contAt: number | undefined;
    const proxy = await startProxy(p.pri.qmp[0], {
      rewrite: (command, answer) => {
        if (command === 'cont') contAt = performance.now();
        return command === 'query-status' && contAt === undefined && answer.return ? { ...answer, return: { ...answer.return, status: 'colo', running: false } } : answer;
      },
    });
    const client = await connectQmp(proxy.path, { timeoutMs: 20_000 });
    try {
      const steps: string[] = [];
      const t0 = performance.now();
      const r = await coloFailoverOnPrimary(client, { operation: 'drv', devices: p.opts.primary.devices, onStep: (step) => steps.push(step) });
      expect(r).toMatchObject({ lostHeartbeat: true, resumed: true });
      expect(contAt! - t0, 'cont only after the grace').toBeGreaterThanOrEqual(RESUME_GRACE_MS);
      expect(steps.filter((x) => x === 'cont')).toHaveLength(1);
      expect(steps.indexOf('cont')).toBeGreaterThan(steps.indexOf('x-colo-lost-heartbeat'));
      expect(await p.pri.inspect.execute('query-status')).toMatchObject({ status: 'running', running: true });
      // Run again on a VM that runs: no cont.
      expect(await coloFailoverOnPrimary(client, { operation: 'drv', devices: p.opts.primary.devices })).toMatchObject({ lostHeartbeat: false, resumed: false });
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  it('COLO_EXIT (error) and QUORUM_REPORT_BAD on the replication node fail over to the primary; QUORUM_REPORT_BAD on another node does not', async () => {
    for (const inject of ['colo-exit', 'quorum-bad'] as const) {
      const p = await qemuPair();
      const proxy = await startProxy(p.pri.qmp[0]);
      const pair = await ColoPair.connect({ ...p.opts, primary: { ...p.opts.primary, qmp: proxy.path } }, 20_000);
      try {
        await pair.start({ timeoutMs: 60_000 });
        const ts = { seconds: 0, microseconds: 0 };
        const bad = (node: string) =>
          proxy.emit({ event: 'QUORUM_REPORT_BAD', data: { type: 'read', error: 'Input/output error', 'node-name': node, 'sector-num': 0, 'sectors-count': 8 }, timestamp: ts });
        bad('some-other-node');
        await new Promise((r) => setTimeout(r, 300));
        expect(pair.status().state).toBe('replicating');
        if (inject === 'colo-exit') proxy.emit({ event: 'COLO_EXIT', data: { mode: 'primary', reason: 'error' }, timestamp: ts });
        else bad(diskIds.primaryDisk.node);
        await pair.waitForState(['failed-over', 'failed'], 10_000);
        expect(pair.status()).toMatchObject({ state: 'failed-over', active: 'primary' });
        expect(pair.status().failover!.why).toMatch(inject === 'colo-exit' ? /COLO_EXIT \(error\) on the primary/ : new RegExp(`QUORUM_REPORT_BAD on ${diskIds.primaryDisk.node}`));
        expect(await gone(p.sec.pid)).toBe(true);
        expect(await colo(p.pri)).toBe('none');
      } finally {
        await pair.close();
        await stopAll();
      }
    }
  });

  it('a step refused during failover fails it (OP_FAILED naming the step, state failed); the exported sequence run again finishes the job', async () => {
    const p = await qemuPair({ watchdog: false });
    const proxy = await startProxy(p.pri.qmp[0], {
      rewrite: (command, answer) =>
        command === 'object-del' && answer.id !== undefined && !refused++ ? { error: { class: 'GenericError', desc: 'injected refusal' }, id: answer.id } : answer,
    });
    let refused = 0;
    const pair = await ColoPair.connect({ ...p.opts, primary: { ...p.opts.primary, qmp: proxy.path } }, 20_000);
    try {
      await pair.start({ timeoutMs: 60_000 });
      const e = await pair.failover('primary').catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'OP_FAILED', message: expect.stringMatching(new RegExp(`object-del ${ids.primaryNic.compareObj} failed: .*injected refusal`)) });
      expect(pair.status().state).toBe('failed');
      expect(await pair.failover('primary').catch((x: unknown) => x), 'the same failover, not a second one').toBe(e);
      // The refusal came after QEMU had done it: the sequence skips what is gone and goes on.
      const r = await coloFailoverOnPrimary(p.pri.inspect, { operation: 'drv', devices: p.opts.primary.devices });
      expect(r).toMatchObject({ lostHeartbeat: true, removed: [ids.primaryNic.iothread, ids.primaryNic.filterMirror, ids.primaryNic.redirectIn, ids.primaryNic.redirectOut] });
      expect(await colo(p.pri)).toBe('none');
      expect(await coloFailoverOnPrimary(p.pri.inspect, { operation: 'drv', devices: p.opts.primary.devices })).toMatchObject({ removed: [], lostHeartbeat: false });
    } finally {
      await pair.close();
    }
  });

  it('a failure at a set-up step in start() leaves both QEMUs as they were, and the pair failed', async () => {
    const p = await qemuPair();
    const proxy = await startProxy(p.pri.qmp[0], { failAt: 7 });
    const [priBefore, secBefore] = await Promise.all([snapshot(p.pri), snapshot(p.sec)]);
    const pair = await ColoPair.connect({ ...p.opts, primary: { ...p.opts.primary, qmp: proxy.path } }, 20_000);
    try {
      const e = await pair.start({ timeoutMs: 60_000 }).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'PHASE_FAILED', message: expect.stringMatching(/^colo primary: set up devices \(@remus\/colo\) failed: .*injected failure at step 7/s) });
      expect(pair.status().state).toBe('failed');
      expect(p.events).toContainEqual({ type: 'state', state: 'failed' });
      expect(diff(priBefore, await snapshot(p.pri))).toEqual([]);
      expect(diff(secBefore, await snapshot(p.sec))).toEqual([]);
      expect(await pair.start().catch((x: unknown) => x)).toMatchObject({ code: 'STATE' });
    } finally {
      await pair.close();
    }
  });

  it('a migration that fails rejects start() and leaves both QEMUs as they were', async () => {
    const [closed] = await freePorts(1);
    const p = await qemuPair();
    const [priBefore, secBefore] = await Promise.all([snapshot(p.pri), snapshot(p.sec)]);
    const pair = await ColoPair.connect({ ...p.opts, migrationUri: `tcp:127.0.0.1:${closed}` }, 20_000);
    try {
      expect(await pair.start({ timeoutMs: 30_000 }).catch((x: unknown) => x)).toMatchObject({ code: 'OP_FAILED', message: 'colo: the migration to the secondary failed' });
      expect(pair.status().state).toBe('failed');
      expect(diff(priBefore, await snapshot(p.pri))).toEqual([]);
      expect(diff(secBefore, await snapshot(p.sec))).toEqual([]);
    } finally {
      await pair.close();
    }
  });

  it("the secondary's failover sequence refuses a secondary that never entered COLO, before changing anything", async () => {
    const p = await qemuPair();
    const layer = createCheckpointDevices({ ops: coloSecondaryOps({ qmp: p.sec.qmp[0] }), devices: p.opts.secondary.devices, operationId: 'drv' });
    await layer.setup();
    try {
      const before = await snapshot(p.sec);
      const e = await coloFailoverOnSecondary(p.sec.inspect, { operation: 'drv', devices: p.opts.secondary.devices }).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'STATE', message: expect.stringContaining('never entered COLO mode (status inmigrate)') });
      expect(diff(before, await snapshot(p.sec))).toEqual([]);
    } finally {
      await layer.teardown();
    }
  });

  it('a side that dies before replication leaves the pair failed; close() is idempotent and leaves the QEMUs untouched', async () => {
    const p = await qemuPair();
    const pair = await ColoPair.connect(p.opts, 20_000);
    process.kill(p.sec.pid, 'SIGKILL');
    expect(await pair.waitForState(['failed'], 10_000)).toBe('failed');
    expect(await pair.start().catch((x: unknown) => x)).toMatchObject({ code: 'STATE' });
    await pair.close();
    await pair.close();
    expect(pair.status().state).toBe('failed');
    expect(await p.pri.inspect.execute('query-status')).toMatchObject({ status: 'prelaunch' });
  });
});
