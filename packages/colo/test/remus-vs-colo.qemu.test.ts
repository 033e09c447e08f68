/**
 * Why the device layer takes its ops list as a parameter: the same device
 * specs, driven through the same core (createCheckpointDevices and
 * runCheckpointLoop), once with a Remus-style ops list (tiny in-test
 * subkinds that buffer and release per checkpoint) and once with the COLO
 * lists on a real QEMU pair, where the domain adapter pauses and resumes
 * the primary over QMP as a checkpoint would and the COLO subkinds observe it.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createCheckpointDevices,
  defineSubkind,
  runCheckpointLoop,
  type DeviceSpec,
  type DomainAdapter,
  type OpEvent,
  type SubkindOps,
} from '@remus/core';
import { sharedQmpPool, type QmpClient } from '@remus/qmp';
import { coloPrimaryOps, coloSecondaryOps } from '../src/index.js';
import { diff, freePorts, snapshot, startPrimary, startSecondary, stopAll, type TestQemu } from './env.js';

let pri: TestQemu;
let sec: TestQemu;
let devices: DeviceSpec[];

beforeAll(async () => {
  [sec, pri] = await Promise.all([startSecondary(), startPrimary()]);
  const [mirror, compare, nbd] = await freePorts(3);
  const at = (port: number) => ({ host: '127.0.0.1', port });
  // One spec per device serves every list: each subkind reads the params it needs.
  devices = [
    {
      id: 'nic0',
      kind: 'nic',
      params: { netdev: 'hn0', mirror: at(mirror!), compare: at(compare!), primaryIn: { path: join(pri.dir, 'p.sock') }, compareOut: { path: join(pri.dir, 'o.sock') } },
    },
    { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', node: 'parent0', nbd: at(nbd!), export: 'parent0' } },
  ];
});
afterAll(stopAll);

/** A Remus-style subkind for the test: records every op; holds an "epoch" at postsuspend, releases it at commit. */
function remusStyle(kind: 'nic' | 'disk', calls: string[]): SubkindOps<undefined, { held: number; released: number }> {
  return defineSubkind({
    name: `${kind}-remus-test`,
    kind,
    setup: (h) => {
      calls.push(`${h.device.id} setup`);
      h.data = { held: 0, released: 0 };
    },
    postsuspend: (h, ctx) => {
      calls.push(`${h.device.id} postsuspend ${ctx.checkpoint}`);
      h.data!.held++;
    },
    preresume: (h, ctx) => void calls.push(`${h.device.id} preresume ${ctx.checkpoint}`),
    commit: (h, ctx) => {
      calls.push(`${h.device.id} commit ${ctx.checkpoint}`);
      h.data!.released++;
    },
    teardown: (h) => void calls.push(`${h.device.id} teardown`),
    stats: (h) => ({ ...(h.data ?? {}) }),
  });
}

/** A domain adapter that pauses and resumes a QEMU over QMP (as a checkpoint does); no state is saved. */
function qemuDomain(client: QmpClient): DomainAdapter {
  return {
    name: 'test-qemu',
    // Each step returns once QEMU reported it (the event may trail the command's answer).
    suspend: async (ctx) => {
      const stopped = client.waitForEvent('STOP', { timeoutMs: 10_000, signal: ctx.signal });
      await client.execute('stop', undefined, { signal: ctx.signal });
      await stopped;
    },
    save: () => undefined,
    resume: async (ctx) => {
      const resumed = client.waitForEvent('RESUME', { timeoutMs: 10_000, signal: ctx.signal });
      await client.execute('cont', undefined, { signal: ctx.signal });
      await resumed;
    },
    waitAck: () => undefined,
  };
}

/** The same engine for both runs: setup, 3 checkpoints through the loop, teardown by the loop. */
async function drive(ops: SubkindOps[], domain: DomainAdapter, operationId: string) {
  const events: OpEvent[] = [];
  const stats: ReturnType<ReturnType<typeof createCheckpointDevices>['stats']>[] = [];
  const layer = createCheckpointDevices({ ops, devices, operationId, onEvent: (e) => events.push(e) });
  await layer.setup();
  const assignments = layer.assignments().map((a) => `${a.device}:${a.subkind}`);
  const result = await runCheckpointLoop({ devices: layer, domain, intervalMs: 0, maxCheckpoints: 3, onCheckpoint: () => stats.push(layer.stats()) });
  const ends = events.filter((e) => e.type === 'op-end');
  expect(ends.every((e) => e.outcome === 'ok')).toBe(true);
  return { result, assignments, stats, state: layer.state, phases: ends.map((e) => `${e.op}${e.device ? ` ${e.device}` : ''}`) };
}

describe('the same devices through the same core: Remus ops list vs COLO ops lists', () => {
  it('drives both; only the ops lists differ', async () => {
    // Remus: one list, a recording domain.
    const calls: string[] = [];
    const remus = await drive([remusStyle('nic', calls), remusStyle('disk', calls)], { name: 'fake', suspend() {}, save() {}, resume() {}, waitAck() {} }, 'remusrun');
    expect(remus.result.checkpoints).toBe(3);
    expect(remus.assignments).toEqual(['nic0:nic-remus-test', 'disk0:disk-remus-test']);
    expect(remus.state).toBe('torn-down');
    for (const id of ['nic0', 'disk0']) {
      expect(calls.filter((c) => c.startsWith(`${id} `))).toEqual([
        `${id} setup`,
        ...[1, 2, 3].flatMap((n) => [`${id} postsuspend ${n}`, `${id} preresume ${n}`, `${id} commit ${n}`]),
        `${id} teardown`,
      ]);
    }
    expect(remus.stats.at(-1)?.map((s) => s.stats)).toEqual([{ held: 3, released: 3 }, { held: 3, released: 3 }]);

    // COLO: the secondary list on the secondary QEMU, the primary list on the primary QEMU, the same specs.
    const secBefore = await snapshot(sec);
    const priBefore = await snapshot(pri);
    const secondary = createCheckpointDevices({ ops: coloSecondaryOps({ qmp: sec.qmp[0] }), devices, operationId: 'colosec' });
    await secondary.setup();
    expect(secondary.assignments().map((a) => `${a.device}:${a.subkind}`)).toEqual(['nic0:colo-secondary-nic', 'disk0:colo-secondary-disk']);
    // The domain adapter (a driver's part) leases the same QMP connection the primary's subkinds use: a monitor serves one client.
    const lease = await sharedQmpPool.acquire(pri.qmp[0]);
    let colo: Awaited<ReturnType<typeof drive>>;
    try {
      // The guest runs before protection starts (here: firmware only, no disk to boot).
      await qemuDomain(lease.client).resume({ signal: AbortSignal.timeout(10_000), checkpoint: 0, epoch: 0 });
      colo = await drive([...coloPrimaryOps({ qmp: pri.qmp[0] })], qemuDomain(lease.client), 'colopri');
      await lease.client.execute('stop');
    } finally {
      await lease.release();
      await secondary.teardown();
    }
    expect(colo.result.checkpoints).toBe(3);
    expect(colo.assignments).toEqual(['nic0:colo-primary-nic', 'disk0:colo-primary-disk']);
    expect(colo.state).toBe('torn-down');
    // QEMU's own pauses were observed at each checkpoint; COLO did not exit, so every commit passed.
    expect(colo.stats.map((s) => s.map((d) => d.stats['vmStops']))).toEqual([
      [1, 1],
      [2, 2],
      [3, 3],
    ]);
    expect(colo.stats.at(-1)!.every((d) => d.stats['vmResumes'] === 3 && d.stats['coloExits'] === 0)).toBe(true);
    // The same phases ran in the same order; COLO subkinds have no postsuspend/preresume (QEMU checkpoints itself).
    const checkpointPhases = (phases: string[]) => phases.filter((p) => /^(postsuspend|preresume|commit)/.test(p));
    // (Op ends are in completion order: devices run concurrently, so compare as multisets.)
    expect(checkpointPhases(colo.phases).sort()).toEqual(checkpointPhases(remus.phases).filter((p) => p.startsWith('commit')).sort());
    const lifecycle = (phases: string[]) => phases.filter((p) => /^(setup|teardown)/.test(p)).sort();
    expect(lifecycle(colo.phases)).toEqual(lifecycle(remus.phases));
    expect(lifecycle(colo.phases)).toEqual(['setup disk0', 'setup nic0', 'teardown disk0', 'teardown nic0']);
    // Both QEMUs are as they were.
    expect(diff(priBefore, await snapshot(pri))).toEqual([]);
    expect(diff(secBefore, await snapshot(sec))).toEqual([]);
  });
});
