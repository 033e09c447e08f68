/**
 * Fault injection on real QEMUs, through a QMP proxy between the subkinds
 * and the monitor:
 * - a failure at each set-up step (QEMU refuses it, or QEMU does it but the
 *   answer is lost and the command times out) leaves the QEMU exactly as it
 *   was: the core tears down, teardown removes what may exist;
 * - a QEMU lacking a COLO feature (the proxy hides it from the probes) is
 *   refused with the missing feature named, before any command that
 *   changes something is sent.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCheckpointDevices, type DeviceSpec, type OpsList, type RemusError } from '@remus/core';
import { coloPrimaryOps, coloSecondaryOps } from '../src/index.js';
import { CHANGING, diff, freePorts, snapshot, startPrimary, startProxy, startSecondary, startStorageDaemon, stopAll, type TestQemu } from './env.js';

let pri: TestQemu;
let sec: TestQemu;
let priDevices: DeviceSpec[];
let secDevices: DeviceSpec[];
let servingDisk: DeviceSpec;

const PRIMARY_STEPS = 13; // 6 chardevs, 5 objects, drive_add, x-blockdev-change
const SECONDARY_STEPS = 7; // 2 chardevs, 3 objects, nbd-server-start, block-export-add

beforeAll(async () => {
  [sec, pri] = await Promise.all([startSecondary(), startPrimary()]);
  const [mirror, compare, nbd, nbd2] = await freePorts(4);
  const at = (port: number) => ({ host: '127.0.0.1', port });
  secDevices = [
    { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(mirror!), compare: at(compare!) } },
    { id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at(nbd2!), export: 'parent0' } },
  ];
  priDevices = [
    { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(mirror!), compare: at(compare!), primaryIn: { path: join(pri.dir, 'p.sock') }, compareOut: { path: join(pri.dir, 'o.sock') } } },
    { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: at(nbd!), export: 'parent0' } },
  ];
  servingDisk = { id: 'serve', kind: 'disk', params: { node: 'parent0', nbd: at(nbd!), export: 'parent0' } };
});
afterAll(stopAll);

/** Runs `body` while the secondary exports its disk (set up directly), so that the primary's drive_add finds an NBD export. */
async function withServing(body: () => Promise<void>): Promise<void> {
  const serving = createCheckpointDevices({ ops: coloSecondaryOps({ qmp: sec.qmp[0] }), devices: [servingDisk], operationId: 'serving' });
  await serving.setup();
  try {
    await body();
  } finally {
    await serving.teardown();
  }
}

async function setupThrough(ops: OpsList, devices: DeviceSpec[], operationId: string): Promise<RemusError | undefined> {
  const layer = createCheckpointDevices({ ops, devices, operationId, timeouts: { setup: 20_000, teardown: 20_000 } });
  try {
    await layer.setup();
  } catch (e) {
    return e as RemusError;
  }
  await layer.teardown();
  return undefined;
}

describe('a failure at each QMP set-up step leaves nothing behind', () => {
  it('counts the steps: the secondary list makes 7 changes, the primary list 13, and a clean run restores both', async () => {
    const secBase = await snapshot(sec);
    const p1 = await startProxy(sec.qmp[0]);
    expect(await setupThrough(coloSecondaryOps({ qmp: p1.path }), secDevices, 'count1')).toBeUndefined();
    expect(p1.adds).toBe(SECONDARY_STEPS);
    expect(diff(secBase, await snapshot(sec))).toEqual([]);

    await withServing(async () => {
      const priBase = await snapshot(pri);
      const p2 = await startProxy(pri.qmp[0]);
      expect(await setupThrough(coloPrimaryOps({ qmp: p2.path }), priDevices, 'count2')).toBeUndefined();
      expect(p2.adds).toBe(PRIMARY_STEPS);
      expect(diff(priBase, await snapshot(pri))).toEqual([]);
    });
  });

  const sides = [
    { name: 'secondary', steps: SECONDARY_STEPS, q: () => sec, list: coloSecondaryOps, devices: () => secDevices, around: (body: () => Promise<void>) => body() },
    { name: 'primary', steps: PRIMARY_STEPS, q: () => pri, list: coloPrimaryOps, devices: () => priDevices, around: withServing },
  ] as const;
  for (const mode of ['refuse', 'lost'] as const) {
    for (const side of sides) {
      it(`${side.name} list, QEMU ${mode === 'refuse' ? 'refuses' : 'does it but the answer is lost at'} step 1..${side.steps}`, async () => {
        await side.around(async () => {
          const base = await snapshot(side.q());
          for (let step = 1; step <= side.steps; step++) {
            const proxy = await startProxy(side.q().qmp[0], { failAt: step, mode });
            const ops = side.list({ qmp: proxy.path, ...(mode === 'lost' ? { commandTimeoutMs: 1500 } : {}) });
            const e = await setupThrough(ops, side.devices(), `${side.name[0]}${mode}${step}`);
            expect(e, `step ${step}`).toMatchObject({ code: 'PHASE_FAILED' });
            expect(e!.message).toMatch(mode === 'refuse' ? new RegExp(`injected failure at step ${step}`) : /no answer within 1500 ms/);
            expect(diff(base, await snapshot(side.q())), `${mode} at step ${step}`).toEqual([]);
            await proxy.close();
          }
        });
      });
    }
  }
});

describe('an abort in the middle of set-up leaves nothing behind', () => {
  it('the caller aborts while the 4th change of the primary list is in flight; the core tears down', async () => {
    await withServing(async () => {
      const base = await snapshot(pri);
      const ac = new AbortController();
      const proxy = await startProxy(pri.qmp[0], { onAdd: (n) => n === 4 && ac.abort(new Error('operator pressed ^C')) });
      const layer = createCheckpointDevices({ ops: coloPrimaryOps({ qmp: proxy.path }), devices: priDevices, operationId: 'aborted', signal: ac.signal });
      const e = await layer.setup().catch((x: unknown) => x as RemusError);
      expect(e).toMatchObject({ code: 'PHASE_FAILED' });
      expect((e as RemusError).failures.some((f) => f.code === 'ABORTED')).toBe(true);
      expect(layer.state).toBe('torn-down');
      expect(proxy.adds).toBeLessThan(PRIMARY_STEPS);
      expect(diff(base, await snapshot(pri))).toEqual([]);
    });
  });
});

/** Hides `value` from every enum in a query-qmp-schema answer. */
function withoutEnumValue(value: string) {
  return (command: string, answer: any) => {
    if (command !== 'query-qmp-schema') return answer;
    return {
      ...answer,
      return: answer.return.map((e: any) => (e['meta-type'] === 'enum' ? { ...e, values: e.values.filter((v: string) => v !== value), members: e.members?.filter((m: any) => m.name !== value) } : e)),
    };
  };
}
function withoutObjectType(type: string) {
  return (command: string, answer: any) => (command === 'qom-list-types' ? { ...answer, return: answer.return.filter((t: any) => t.name !== type) } : answer);
}
function withoutCommand(name: string) {
  return (command: string, answer: any) => (command === 'query-qmp-schema' ? { ...answer, return: answer.return.filter((e: any) => e.name !== name) } : answer);
}

describe('a QEMU lacking a COLO feature is refused before anything is changed', () => {
  const cases = [
    { side: 'primary', lacks: 'object type colo-compare', rewrite: withoutObjectType('colo-compare'), device: 'nic0' },
    { side: 'primary', lacks: 'block driver replication', rewrite: withoutEnumValue('replication'), device: 'disk0' },
    { side: 'primary', lacks: 'QMP command x-blockdev-change', rewrite: withoutCommand('x-blockdev-change'), device: 'disk0' },
    { side: 'secondary', lacks: 'object type filter-rewriter', rewrite: withoutObjectType('filter-rewriter'), device: 'nic0' },
    { side: 'secondary', lacks: 'migration capability x-colo', rewrite: withoutEnumValue('x-colo'), device: 'nic0' },
    { side: 'secondary', lacks: 'block export type nbd', rewrite: withoutEnumValue('nbd'), device: 'disk0' },
  ] as const;
  for (const c of cases) {
    it(`${c.side} QEMU without ${c.lacks}: DEVICE_NOT_SUPPORTED naming it, no changing command sent`, async () => {
      const q = c.side === 'primary' ? pri : sec;
      const base = await snapshot(q);
      const proxy = await startProxy(q.qmp[0], { rewrite: c.rewrite });
      const ops = c.side === 'primary' ? coloPrimaryOps({ qmp: proxy.path }) : coloSecondaryOps({ qmp: proxy.path });
      const e = await setupThrough(ops, c.side === 'primary' ? priDevices : secDevices, `lack${cases.indexOf(c)}`);
      expect(e).toMatchObject({ code: 'PHASE_FAILED' });
      const notSupported = e!.failures.find((f) => f.device === c.device);
      expect(notSupported).toMatchObject({ code: 'DEVICE_NOT_SUPPORTED' });
      expect(notSupported!.message).toContain(`lacks what COLO needs: `);
      expect(notSupported!.message).toContain(c.lacks);
      expect(proxy.log.filter((cmd) => CHANGING.has(cmd) || cmd === 'hmp drive_add')).toEqual([]);
      expect(diff(base, await snapshot(q))).toEqual([]);
    });
  }
});

describe('a real QEMU without COLO is refused before anything is changed', () => {
  it('qemu-storage-daemon 7.2 (QMP, but no COLO, filters or migration): every device declined with what it lacks; no changing command sent', async () => {
    const qsd = await startStorageDaemon();
    for (const [side, ops] of [
      ['primary', (qmp: string) => coloPrimaryOps({ qmp })],
      ['secondary', (qmp: string) => coloSecondaryOps({ qmp })],
    ] as const) {
      const proxy = await startProxy(qsd.qmp);
      const e = await setupThrough(ops(proxy.path), side === 'primary' ? priDevices : secDevices, `qsd${side}`);
      expect(e).toMatchObject({ code: 'PHASE_FAILED' });
      expect(e!.failures.map((f) => f.code)).toEqual(['DEVICE_NOT_SUPPORTED', 'DEVICE_NOT_SUPPORTED']);
      const nic = e!.failures[0]!.message;
      expect(nic).toContain('migration capability x-colo');
      expect(nic).toContain('QMP command x-colo-lost-heartbeat');
      expect(nic).toContain(side === 'primary' ? 'object type colo-compare' : 'object type filter-rewriter');
      expect(proxy.log.filter((cmd) => CHANGING.has(cmd))).toEqual([]);
      expect(proxy.log).toContain('query-qmp-schema');
      await proxy.close();
    }
  });
});
