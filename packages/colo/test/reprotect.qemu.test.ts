/**
 * reprotect() on real QEMUs without a guest: a pair fails over to its
 * secondary, and the survivor becomes the primary of a new pair with a
 * fresh secondary (disk mirrored, proxy filters before its kept rewriter,
 * x-colo migration); a reprotect whose new secondary dies midway leaves
 * the survivor running as it was and the new secondary gone. The guest lab
 * (tools/colo-lab) covers checkpoints and the service's counter.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ColoPair, autoReprotect, coloIds, processAlive, reprotect, type ColoAutoReprotectOptions, type ColoDriverEvent, type ColoPairOptions } from '../src/index.js';
import { diff, freePorts, pairDevices, snapshot, startPrimary, startSecondary, stopAll, type TestQemu } from './env.js';

afterEach(stopAll);

async function colo(q: TestQemu): Promise<string | undefined> {
  return (await q.inspect.execute<{ mode?: string }>('query-colo-status')).mode;
}

async function gone(pid: number, ms = 10_000): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until; ) {
    if (!processAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

/** A pair in COLO (no watchdog), and its two QEMUs. */
async function replicatingPair(): Promise<{ pair: ColoPair; sec: TestQemu; pri: TestQemu; ports: { mirror: number; compare: number; nbd: number } }> {
  const [mirror, compare, nbd, migration] = await freePorts(4);
  const [sec, pri] = await Promise.all([startSecondary({ incoming: `tcp:127.0.0.1:${migration}` }), startPrimary()]);
  const devices = pairDevices(pri.dir, { mirror: mirror!, compare: compare!, nbd: nbd! });
  const opts: ColoPairOptions = {
    primary: { qmp: pri.qmp[0], pid: pri.pid, devices: devices.primary },
    secondary: { qmp: sec.qmp[0], pid: sec.pid, devices: devices.secondary },
    migrationUri: `tcp:127.0.0.1:${migration}`,
    checkpointDelayMs: 600_000,
    operationId: 'first',
    watchdog: false,
  };
  const pair = await ColoPair.connect(opts, 20_000);
  try {
    await pair.start({ timeoutMs: 60_000 });
  } catch (e) {
    await pair.close();
    throw e;
  }
  return { pair, sec, pri, ports: { mirror: mirror!, compare: compare!, nbd: nbd! } };
}

/** A pair that ran COLO and failed over to its secondary (manual failover), closed: the survivor serves unprotected. */
async function survivorAfterFailover(): Promise<TestQemu> {
  const { pair, sec } = await replicatingPair();
  try {
    await pair.failover('secondary');
  } finally {
    await pair.close();
  }
  return sec;
}

/** A fresh secondary and the reprotect options for `survivor` onto it (on new proxy ports unless `ports`). */
async function freshSecondary(survivor: TestQemu, events: ColoDriverEvent[], onEvent?: (e: ColoDriverEvent) => void, ports?: { mirror: number; compare: number; nbd: number }) {
  const [mirror, compare, nbd, migration] = await freePorts(4);
  const next = await startSecondary({ incoming: `tcp:127.0.0.1:${migration}` });
  const devices = pairDevices(survivor.dir, ports ?? { mirror: mirror!, compare: compare!, nbd: nbd! });
  return {
    next,
    opts: {
      survivor: { qmp: survivor.qmp[0], pid: survivor.pid, devices: devices.primary },
      secondary: { qmp: next.qmp[0], pid: next.pid, devices: devices.secondary },
      migrationUri: `tcp:127.0.0.1:${migration}`,
      checkpointDelayMs: 600_000,
      operationId: 'again',
      watchdog: false as const,
      onEvent: (e: ColoDriverEvent) => {
        events.push(e);
        onEvent?.(e);
      },
    },
  };
}

/** The COLO filters on a QEMU's netdev, in QEMU's order. */
async function netdevFilters(q: TestQemu): Promise<string[]> {
  const net = await q.inspect.hmp('info network');
  return [...net.matchAll(/(colo\.[\w.-]+): type=filter-\w+/g)].map((m) => m[1]!);
}

/** The reprotected pair fails over like any other, to its fresh secondary: the survivor is fenced, the fresh one leaves COLO. */
async function failsOverToFresh(pair: ColoPair, survivor: TestQemu, fresh: TestQemu): Promise<void> {
  await pair.failover('secondary');
  expect(await gone(survivor.pid), 'the old survivor was fenced').toBe(true);
  expect(await colo(fresh)).toBe('none');
}

/**
 * autoReprotect over `pair` with `next`; `reprotected` resolves with the first new pair
 * (rejects with onError's error, or after 60 s).
 */
function watchReprotect(pair: ColoPair, next: ColoAutoReprotectOptions['next']): { watch: ReturnType<typeof autoReprotect>; reprotected: Promise<ColoPair> } {
  let got!: (p: ColoPair) => void;
  let fail!: (e: unknown) => void;
  const first = new Promise<ColoPair>((resolve, reject) => {
    got = resolve;
    fail = reject;
  });
  const watch = autoReprotect(pair, { next, onPair: (p) => got(p), onError: (e) => fail(e), run: { timeoutMs: 60_000, mirrorTimeoutMs: 60_000 } });
  const reprotected = Promise.race([first, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no reprotect within 60 s')), 60_000))]);
  reprotected.catch(() => undefined); // awaited by the test; no unhandled rejection if it fails earlier
  return { watch, reprotected };
}

describe('reprotect on real QEMUs (no guest)', () => {
  it('makes the survivor of a failover the primary of a new pair: disk mirrored, proxy filters before its kept rewriter, both sides in COLO', async () => {
    const b = await survivorAfterFailover();
    expect(await colo(b)).toBe('none');
    const events: ColoDriverEvent[] = [];
    const { next, opts } = await freshSecondary(b, events);
    const pair = await reprotect(opts, { timeoutMs: 60_000, mirrorTimeoutMs: 60_000 });
    try {
      expect(pair.status()).toMatchObject({ state: 'replicating', active: 'primary' });
      expect(await colo(b)).toBe('primary');
      expect(await colo(next)).toBe('secondary');
      const steps = events.flatMap((e) => (e.type === 'step' ? [`${e.side}: ${e.step}`] : []));
      expect(steps).toEqual([
        'secondary: set up devices (@remus/colo)',
        'primary: blockdev-add (NBD client to the new secondary)',
        'primary: blockdev-mirror (sync full)',
        'primary: mirror ready',
        'primary: stop',
        'primary: block-job-cancel (complete without pivot)',
        'primary: blockdev-del (NBD client)',
        'primary: set up devices (@remus/colo)',
        'secondary: proxy connected',
        'secondary: migrate-set-capabilities',
        'primary: migrate-set-capabilities',
        'primary: migrate-set-parameters',
        'primary: migrate',
      ]);
      // Sync full copies the whole 16 MiB disk.
      expect(pair.status().resync).toMatchObject({ bytes: 16 * 1024 * 1024 });
      // No mirror job or NBD client is left: the replication child is the export's only client.
      expect(await b.inspect.execute('query-block-jobs')).toEqual([]);
      const s = await snapshot(b);
      expect(s.nodes).not.toContain(coloIds('again', 'disk0').primaryDisk.resyncNode);
      expect(s.nodes).toContain(coloIds('again', 'disk0').primaryDisk.node);
      // The new proxy's filters sit before the kept rewriter of the first operation (QEMU lists a netdev's filters in order).
      const nic = coloIds('again', 'nic0').primaryNic;
      expect(await netdevFilters(b)).toEqual([nic.filterMirror, nic.redirectOut, nic.redirectIn, coloIds('first', 'nic0').secondaryNic.rew]);
      expect(await b.inspect.execute('query-status')).toMatchObject({ running: true });
      await failsOverToFresh(pair, b, next);
    } finally {
      await pair.close();
    }
  });

  it('a survivor that was the primary (its secondary failed) is reprotected onto a fresh secondary the same way, and the new pair fails over again', async () => {
    const { pair: first, pri } = await replicatingPair();
    try {
      await first.failover('primary', 'test: the secondary is lost');
    } finally {
      await first.close();
    }
    expect(await colo(pri)).toBe('none');
    expect(await pri.inspect.execute('query-status')).toMatchObject({ running: true });
    const events: ColoDriverEvent[] = [];
    const { next, opts } = await freshSecondary(pri, events);
    const pair = await reprotect(opts, { timeoutMs: 60_000, mirrorTimeoutMs: 60_000 });
    try {
      expect(pair.status()).toMatchObject({ state: 'replicating', active: 'primary', resync: { bytes: 16 * 1024 * 1024 } });
      expect(await colo(pri)).toBe('primary');
      expect(await colo(next)).toBe('secondary');
      // Only the new proxy's filters on the netdev: the first operation's were removed by its failover, and a former primary has no rewriter.
      const nic = coloIds('again', 'nic0').primaryNic;
      expect(await netdevFilters(pri)).toEqual([nic.filterMirror, nic.redirectOut, nic.redirectIn]);
      await failsOverToFresh(pair, pri, next);
    } finally {
      await pair.close();
    }
  });

  it('autoReprotect after a failover to the primary: the new pair may use the same proxy addresses and socket paths (what the failover kept on the survivor is removed first)', async () => {
    const { pair, pri, ports } = await replicatingPair();
    const started: TestQemu[] = [];
    const { watch, reprotected } = watchReprotect(pair, async (failover) => {
      expect(failover.survivor).toBe('primary');
      // The first pair's ports and the survivor's own socket paths again, as an operator's fixed config would.
      const f = await freshSecondary(pri, [], undefined, ports);
      started.push(f.next);
      return f.opts;
    });
    try {
      await pair.failover('primary', 'test: the secondary is lost');
      const next = await reprotected;
      expect(next.status()).toMatchObject({ state: 'replicating', active: 'primary', resync: { bytes: 16 * 1024 * 1024 } });
      expect(await colo(pri)).toBe('primary');
      expect(await colo(started[0]!)).toBe('secondary');
      // No chardev of the first operation is left on the survivor.
      const chardevs = (await pri.inspect.execute<{ label: string }[]>('query-chardev')).map((c) => c.label);
      expect(chardevs.filter((l) => l.startsWith(coloIds('first', 'nic0').prefix))).toEqual([]);
    } finally {
      await watch.stop();
      await watch.current().close();
    }
  });

  it('a reprotect whose new secondary dies during the mirror rejects, kills it, and leaves the survivor running as it was', async () => {
    const b = await survivorAfterFailover();
    const before = await snapshot(b);
    const events: ColoDriverEvent[] = [];
    let victim = 0;
    const { next, opts } = await freshSecondary(b, events, (e) => {
      if (e.type === 'step' && e.step === 'blockdev-mirror (sync full)') process.kill(victim, 'SIGKILL');
    });
    victim = next.pid;
    const err = await reprotect(opts, { timeoutMs: 30_000, mirrorTimeoutMs: 30_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ message: expect.stringMatching(/^colo reprotect failed: .*; the survivor serves on, unprotected; the new secondary \(pid \d+\) was killed$/) });
    expect(await gone(next.pid)).toBe(true);
    expect(await colo(b)).toBe('none');
    expect(await b.inspect.execute('query-status')).toMatchObject({ running: true });
    expect(await b.inspect.execute('query-block-jobs')).toEqual([]);
    expect(diff(before, await snapshot(b)), 'the survivor as it was before reprotect()').toEqual([]);
  });

  it('autoReprotect: when the watched pair fails over, the survivor is reprotected onto the secondary `next` starts, and the new pair is watched; its stop() ends the watch', async () => {
    const { pair, sec } = await replicatingPair();
    const events: ColoDriverEvent[] = [];
    const started: TestQemu[] = [];
    const { watch, reprotected } = watchReprotect(pair, async (failover) => {
      expect(failover.survivor).toBe('secondary');
      const f = await freshSecondary(sec, events);
      started.push(f.next);
      return f.opts;
    });
    try {
      await pair.failover('secondary', 'test');
      const next = await reprotected;
      expect(watch.current()).toBe(next);
      expect(next.status()).toMatchObject({ state: 'replicating', active: 'primary', resync: { bytes: 16 * 1024 * 1024 } });
      expect(await colo(sec)).toBe('primary');
      expect(await colo(started[0]!)).toBe('secondary');
      // stop() ends replication with a failover of its own (to the primary): the planned end, not a failure.
      // The watch ends without closing the pair under stop() and without asking `next` for another secondary.
      await next.stop();
      expect(next.status().failover).toMatchObject({ survivor: 'primary', byStop: true });
      await Promise.race([watch.done, new Promise((_, rej) => setTimeout(() => rej(new Error('the watch did not end after stop()')), 10_000))]);
      expect(started).toHaveLength(1);
    } finally {
      await watch.stop();
      await watch.current().close();
    }
  });
});
