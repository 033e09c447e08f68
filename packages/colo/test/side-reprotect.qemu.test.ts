/**
 * ColoSideDriver on real QEMUs without a guest, both sides in this process,
 * deciding through a shared in-memory arbiter (one role, one holder at a
 * time): the secondary's QEMU dies, the primary side goes on alone (marks
 * it outdated, QEMU's failover on the primary), then reprotects onto a
 * fresh secondary with a new secondary side: both in COLO again.
 */
import { afterEach, expect, it } from 'vitest';
import { RemusError, type Arbiter, type RoleState } from '@remus/core';
import { ColoSideDriver, type ColoSideEvent } from '../src/index.js';
import { freePorts, pairDevices, startPrimary, startSecondary, stopAll } from './env.js';

const sides: ColoSideDriver[] = [];
afterEach(async () => {
  for (const s of sides.splice(0)) await s.close().catch(() => {});
  await stopAll();
});

/** One role shared by the hosts of this process: acquire waits while another host holds it. */
function sharedArbiter(): (host: string) => Arbiter {
  let holder: string | undefined;
  let epoch = 0;
  const records = new Map<string, string>();
  let wake: (() => void)[] = [];
  return (host) => ({
    name: 'shared-test',
    async acquire(signal) {
      while (holder !== undefined && holder !== host) {
        await new Promise<void>((r) => {
          wake.push(r);
          signal.addEventListener('abort', () => r(), { once: true });
        });
        if (signal.aborted) throw new RemusError('ABORTED', 'acquire aborted');
      }
      if (holder !== host) {
        holder = host;
        epoch++;
      }
      return { epoch, deadline: Infinity };
    },
    role: (): RoleState => (holder === host ? { held: true, epoch, deadline: Infinity } : { held: false, epoch, deadline: -Infinity }),
    async publish(name, value) {
      if (holder !== host) throw new RemusError('ROLE_LOST', `${host} does not hold the role`);
      records.set(name, value);
    },
    async read(name) {
      return records.get(name);
    },
    async resign() {
      if (holder !== host) return;
      holder = undefined;
      const w = wake;
      wake = [];
      for (const f of w) f();
    },
    async close() {
      await this.resign();
    },
  });
}

it('a primary side whose secondary died goes on alone, then reprotects onto a fresh secondary side: both in COLO again', async () => {
  const arb = sharedArbiter();
  const [mirror, compare, nbd, migration] = await freePorts(4);
  const [sec, pri] = await Promise.all([startSecondary({ incoming: `tcp:127.0.0.1:${migration}` }), startPrimary()]);
  const devices = pairDevices(pri.dir, { mirror: mirror!, compare: compare!, nbd: nbd! });
  const events: ColoSideEvent[] = [];
  const common = { operationId: 'sides', checkpointDelayMs: 1000, stallMs: 4000, watchdog: { intervalMs: 200, probeTimeoutMs: 1500, misses: 3 } };
  const b = await ColoSideDriver.connect({ ...common, role: 'secondary', host: 'hb', peer: 'ha', qmp: sec.qmp[0], pid: sec.pid, devices: devices.secondary, arbiter: arb('hb') });
  sides.push(b);
  const bStarted = b.start({ timeoutMs: 60_000 });
  bStarted.catch(() => undefined); // awaited below; no unhandled rejection if an earlier step throws
  await new Promise((r) => setTimeout(r, 1500));
  const a = await ColoSideDriver.connect({
    ...common,
    role: 'primary',
    host: 'ha',
    peer: 'hb',
    qmp: pri.qmp[0],
    pid: pri.pid,
    devices: devices.primary,
    migrationUri: `tcp:127.0.0.1:${migration}`,
    arbiter: arb('ha'),
    onEvent: (e) => events.push(e),
  });
  sides.push(a);
  await Promise.all([a.start({ timeoutMs: 60_000 }), bStarted]);
  expect(a.status()).toMatchObject({ state: 'replicating' });

  // The secondary's QEMU dies: the primary side goes on alone.
  process.kill(sec.pid, 'SIGKILL');
  await a.waitForState(['serving'], 30_000);
  expect(events.some((e) => e.type === 'solo'), 'the primary side went on alone').toBe(true);

  // A fresh secondary QEMU and its side; the primary side reprotects onto it.
  const [migration2] = await freePorts(1);
  const sec2 = await startSecondary({ incoming: `tcp:127.0.0.1:${migration2}` });
  const d2 = pairDevices(pri.dir, { mirror: mirror!, compare: compare!, nbd: nbd! });
  const b2 = await ColoSideDriver.connect({ ...common, role: 'secondary', host: 'hb', peer: 'ha', qmp: sec2.qmp[0], pid: sec2.pid, devices: d2.secondary, arbiter: arb('hb') });
  sides.push(b2);
  const b2Started = b2.start({ timeoutMs: 60_000 });
  b2Started.catch(() => undefined);
  await new Promise((r) => setTimeout(r, 1500));
  const r = await a.reprotect({ devices: d2.primary, migrationUri: `tcp:127.0.0.1:${migration2}`, timeoutMs: 60_000, mirrorTimeoutMs: 60_000 });
  await b2Started;
  expect(r.bytes).toBe(16 * 1024 * 1024);
  expect(a.status()).toMatchObject({ state: 'replicating' });
  expect(b2.status()).toMatchObject({ state: 'replicating' });
  // The first operation's proxy is there once, not twice: the old primary layer was torn down first.
  const chardevs = (await pri.inspect.execute<{ label: string }[]>('query-chardev')).map((c) => c.label).filter((l) => l.startsWith('colo.sides.nic0.'));
  expect(new Set(chardevs).size).toBe(chardevs.length);
});
