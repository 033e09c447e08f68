/**
 * Both ops lists on a real QEMU pair (a primary-shaped and a
 * secondary-shaped QEMU 7.2, no guest): everything set-up adds is really
 * there (QMP queries on a second monitor), the secondary's proxy really
 * connects to the primary's, the primary's replication child really sits in
 * its quorum over NBD to the secondary's export, and teardown leaves both
 * QEMUs exactly as they were.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCheckpointDevices, type DeviceSpec, type RemusError } from '@remus/core';
import { coloPrimaryOps, coloSecondaryOps } from '../src/index.js';
import { QmpPool } from '@remus/qmp';
import { diff, freePorts, snapshot, startPrimary, startProxy, startSecondary, stopAll, type Snapshot, type TestQemu } from './env.js';

let pri: TestQemu;
let sec: TestQemu;
let priDevices: DeviceSpec[];
let secDevices: DeviceSpec[];

beforeAll(async () => {
  [sec, pri] = await Promise.all([startSecondary(), startPrimary()]);
  const [mirror, compare, nbd] = await freePorts(3);
  const at = (port: number) => ({ host: '127.0.0.1', port: port! });
  secDevices = [
    { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(mirror!), compare: at(compare!) } },
    { id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at(nbd!), export: 'parent0', quorum: 'colo-disk0' } },
  ];
  priDevices = [
    {
      id: 'nic0',
      kind: 'nic',
      params: { netdev: 'hn0', mirror: at(mirror!), compare: at(compare!), primaryIn: { path: join(pri.dir, 'pri.sock') }, compareOut: { path: join(pri.dir, 'out.sock') } },
    },
    { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: `127.0.0.1:${nbd}`, export: 'parent0' } },
  ];
});
afterAll(stopAll);

describe('COLO primary and secondary ops lists on a real QEMU pair', () => {
  it('set up adds exactly the COLO proxy and block replication; teardown leaves both QEMUs as they were', async () => {
    const secBefore = await snapshot(sec);
    const priBefore = await snapshot(pri);
    const secondary = createCheckpointDevices({ ops: coloSecondaryOps({ qmp: sec.qmp[0] }), devices: secDevices, operationId: 'pairsec' });
    const primary = createCheckpointDevices({ ops: coloPrimaryOps({ qmp: pri.qmp[0] }), devices: priDevices, operationId: 'pairpri' });
    let torn = false;
    try {
      // COLO order: the secondary first (its chardevs reconnect until the primary listens; its NBD export must exist before drive_add).
      await secondary.setup();
      expect(secondary.assignments().map((a) => a.subkind)).toEqual(['colo-secondary-nic', 'colo-secondary-disk']);
      await primary.setup();
      expect(primary.assignments().map((a) => a.subkind)).toEqual(['colo-primary-nic', 'colo-primary-disk']);

      const s = await snapshot(sec);
      const added = (after: Snapshot, before: Snapshot, k: keyof Snapshot) =>
        (after[k] as string[]).filter((x) => !(before[k] as string[]).includes(x));
      expect(added(s, secBefore, 'objects')).toEqual(['colo.pairsec.nic0.f1', 'colo.pairsec.nic0.f2', 'colo.pairsec.nic0.rew0']);
      expect(added(s, secBefore, 'chardevs')).toEqual(['colo.pairsec.nic0.red0', 'colo.pairsec.nic0.red1']);
      expect(s.exports).toHaveLength(1);
      expect(s.exports[0]).toMatch(/^colo\.pairsec\.disk0\.nbd:/);
      expect(s.nbdServer).toBe(true);
      expect(added(s, secBefore, 'filters').join('\n')).toMatch(/f1: type=filter-redirector.*indev=colo\.pairsec\.nic0\.red0.*queue=tx/);
      expect(added(s, secBefore, 'filters').join('\n')).toMatch(/rew0: type=filter-rewriter.*queue=all/);

      const p = await snapshot(pri);
      expect(added(p, priBefore, 'objects')).toEqual(
        ['comp0', 'iothread', 'm0', 'redire0', 'redire1'].map((x) => `colo.pairpri.nic0.${x}`),
      );
      expect(added(p, priBefore, 'chardevs')).toEqual(['compare', 'mirror', 'out', 'out-in', 'pri', 'pri-in'].map((x) => `colo.pairpri.nic0.${x}`));
      const repl = added(p, priBefore, 'nodes').filter((n) => n.endsWith('-rep'));
      expect(repl).toHaveLength(1);
      // The replication node is the quorum's second child, and an NBD client sits under it.
      expect(added(p, priBefore, 'edges')).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`-children\\.1-> ${repl[0]}$`))]));
      const nodes = await pri.inspect.execute<{ 'node-name': string; drv: string; file: string }[]>('query-named-block-nodes', { flat: true });
      expect(nodes.find((n) => n['node-name'] === repl[0])?.drv).toBe('replication');
      expect(nodes.some((n) => n.drv === 'nbd' && n.file.includes('/parent0'))).toBe(true);

      // The secondary's reconnecting chardevs reach the primary's proxy servers.
      for (let i = 0; i < 100; i++) {
        const chardevs = await sec.inspect.execute<{ label: string; filename: string }[]>('query-chardev');
        const mine = chardevs.filter((c) => c.label.startsWith('colo.pairsec.'));
        if (mine.every((c) => !c.filename.startsWith('disconnected:'))) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const chardevs = await sec.inspect.execute<{ label: string; filename: string }[]>('query-chardev');
      expect(chardevs.filter((c) => c.label.startsWith('colo.pairsec.')).map((c) => c.filename.startsWith('disconnected:'))).toEqual([false, false]);

      // Checkpoints: QEMU runs them; the ops observe the pauses it reports.
      await pri.inspect.execute('cont');
      await pri.inspect.execute('stop');
      for (const layer of [primary, secondary]) {
        await layer.postsuspend();
        await layer.preresume();
        await layer.commit();
      }
      const priStats = primary.stats();
      expect(priStats[0]?.stats).toMatchObject({ vmStops: 1, vmResumes: 1, coloExits: 0 });

      await primary.teardown();
      await secondary.teardown();
      torn = true;
      expect(diff(priBefore, await snapshot(pri))).toEqual([]);
      expect(diff(secBefore, await snapshot(sec))).toEqual([]);
      // A second teardown is a no-op.
      await primary.teardown();
      await secondary.teardown();
    } finally {
      if (!torn) {
        await primary.teardown().catch(() => undefined);
        await secondary.teardown().catch(() => undefined);
      }
    }
  });

  it('commit fails once QEMU reports COLO_EXIT (injected through a proxy: no guest, so no real COLO run here)', async () => {
    const secBefore = await snapshot(sec);
    const proxy = await startProxy(sec.qmp[0]);
    const secondary = createCheckpointDevices({ ops: coloSecondaryOps({ qmp: proxy.path }), devices: [secDevices[0]!], operationId: 'exitsec' });
    await secondary.setup();
    await secondary.postsuspend();
    await secondary.preresume();
    await secondary.commit();
    proxy.emit({ event: 'COLO_EXIT', data: { mode: 'secondary', reason: 'error' }, timestamp: { seconds: 0, microseconds: 0 } });
    await new Promise((r) => setTimeout(r, 50));
    await secondary.postsuspend();
    await secondary.preresume();
    const e = await secondary.commit().catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'PHASE_FAILED' });
    expect((e as RemusError).failures[0]?.message).toMatch(/COLO exited .*mode secondary, reason error/);
    await secondary.teardown();
    expect(diff(secBefore, await snapshot(sec))).toEqual([]);
  });

  it('reap removes what a crashed operation left in both QEMUs, and finds nothing the second time', async () => {
    const secBefore = await snapshot(sec);
    const priBefore = await snapshot(pri);
    // The crashed run: its own pool, so its connections can "die" while QEMU keeps what it made.
    const crashPool = new QmpPool();
    await createCheckpointDevices({ ops: coloSecondaryOps({ qmp: sec.qmp[0], pool: crashPool }), devices: secDevices, operationId: 'crashed' }).setup();
    await createCheckpointDevices({ ops: coloPrimaryOps({ qmp: pri.qmp[0], pool: crashPool }), devices: priDevices, operationId: 'crashed' }).setup();
    for (const path of [sec.qmp[0], pri.qmp[0]]) {
      const lease = await crashPool.acquire(path);
      await lease.client.close();
      await lease.release();
    }
    expect(diff(priBefore, await snapshot(pri)).length).toBeGreaterThan(0);

    const ctx = { signal: AbortSignal.timeout(30_000), checkpoint: 0, epoch: 0, operation: 'recovery' };
    const reapAll = async () => {
      const lines: string[] = [];
      for (const ops of [...coloPrimaryOps({ qmp: pri.qmp[0] })]) lines.push(...(await ops.reap!('crashed', priDevices, ctx)));
      for (const ops of [...coloSecondaryOps({ qmp: sec.qmp[0] })]) lines.push(...(await ops.reap!('crashed', secDevices, ctx)));
      return lines;
    };
    const lines = await reapAll();
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^removed quorum child children\.\d+ \(colo-[0-9a-f]{16}-rep\)/),
        expect.stringMatching(/^removed block node colo-/),
        'removed object colo.crashed.nic0.comp0',
        'removed chardev colo.crashed.nic0.mirror',
        'removed NBD export colo.crashed.disk0.nbd',
        'stopped the NBD server',
        'removed object colo.crashed.nic0.rew0',
      ]),
    );
    expect(diff(priBefore, await snapshot(pri))).toEqual([]);
    expect(diff(secBefore, await snapshot(sec))).toEqual([]);
    expect(await reapAll()).toEqual([]);
  });

  it("commit fails when the primary's replication child reports bad (injected QUORUM_REPORT_BAD), not for another node", async () => {
    const secondary = createCheckpointDevices({ ops: coloSecondaryOps({ qmp: sec.qmp[0] }), devices: [secDevices[1]!], operationId: 'badsec' });
    await secondary.setup();
    const proxy = await startProxy(pri.qmp[0]);
    const primary = createCheckpointDevices({ ops: coloPrimaryOps({ qmp: proxy.path }), devices: [priDevices[1]!], operationId: 'badpri' });
    try {
      await primary.setup();
      const repl = (await snapshot(pri)).nodes.find((n) => n.endsWith('-rep'))!;
      const bad = (node: string) =>
        proxy.emit({ event: 'QUORUM_REPORT_BAD', data: { type: 'read', error: 'Input/output error', 'node-name': node, 'sector-num': 0, 'sectors-count': 8 }, timestamp: { seconds: 0, microseconds: 0 } });
      bad('some-other-node');
      await new Promise((r) => setTimeout(r, 50));
      await primary.postsuspend();
      await primary.preresume();
      await primary.commit();
      bad(repl);
      await new Promise((r) => setTimeout(r, 50));
      await primary.postsuspend();
      await primary.preresume();
      const e = await primary.commit().catch((x: unknown) => x);
      expect((e as RemusError).failures[0]?.message).toMatch(new RegExp(`replication child reported bad .*${repl} x1`));
      expect(primary.stats()[0]?.stats['quorumReportsBad']).toBe(2);
    } finally {
      await primary.teardown();
      await secondary.teardown();
    }
  });

  it('a misconfigured COLO device (unknown netdev, unknown drive, a drive that is not a quorum) fails in match, before anything changes', async () => {
    const priBefore = await snapshot(pri);
    const secBefore = await snapshot(sec);
    const nic = { ...priDevices[0]!, params: { ...priDevices[0]!.params, netdev: 'hn9' } };
    const e1 = await createCheckpointDevices({ ops: coloPrimaryOps({ qmp: pri.qmp[0] }), devices: [nic], operationId: 'badnic' }).setup().catch((x: unknown) => x as RemusError);
    expect(e1!.failures.map((f) => [f.code, f.op])).toEqual([['INVALID_ARGUMENT', 'match']]);
    expect(e1!.failures[0]!.message).toContain('netdev hn9 is not in this QEMU (netdevs: hn0)');
    const disk = { ...secDevices[1]!, params: { ...secDevices[1]!.params, node: 'nosuch' } };
    const e2 = await createCheckpointDevices({ ops: coloSecondaryOps({ qmp: sec.qmp[0] }), devices: [disk], operationId: 'baddisk' }).setup().catch((x: unknown) => x as RemusError);
    expect(e2!.failures.map((f) => [f.code, f.op])).toEqual([['INVALID_ARGUMENT', 'match']]);
    expect(e2!.failures[0]!.message).toContain('nosuch is not a drive or node of this QEMU');
    // (The primary disk subkind pointed at the secondary's QEMU, whose parent0 is a plain qcow2 drive.)
    const notQuorum = { ...priDevices[1]!, params: { ...priDevices[1]!.params, quorum: 'parent0' } };
    const e3 = await createCheckpointDevices({ ops: coloPrimaryOps({ qmp: sec.qmp[0] }), devices: [notQuorum], operationId: 'badq' }).setup().catch((x: unknown) => x as RemusError);
    expect(e3!.failures.map((f) => f.code)).toEqual(['INVALID_ARGUMENT']);
    expect(e3!.failures[0]!.message).toMatch(/is a qcow2 node, not a quorum/);
    expect(diff(priBefore, await snapshot(pri))).toEqual([]);
    expect(diff(secBefore, await snapshot(sec))).toEqual([]);
  });
});
