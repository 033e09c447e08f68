// The lab itself (root, network namespaces, real etcd): a healthy three-member
// cluster, a partition that takes a member's quorum away and heals, a killed
// member restarted with its data, and nothing left behind.
import { existsSync, readdirSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { createLabNet, startEtcdCluster, type EtcdCluster, type LabNet } from '../src/index.js';

describe('etcd lab (netns, real etcd)', () => {
  let net: LabNet;
  let cluster: EtcdCluster;
  afterAll(async () => {
    await cluster?.stop();
    await net?.destroy();
  });

  it('starts three members in their own namespaces; writes go through any member', async () => {
    net = await createLabNet();
    cluster = await startEtcdCluster(net);
    expect(cluster.endpoints).toEqual(['10.77.0.10:2379', '10.77.0.11:2379', '10.77.0.12:2379']);
    await cluster.etcdctl('e1', ['put', '/lab/k', 'v1']);
    expect(await net.run('e3', 'etcdctl', ['--endpoints', '10.77.0.12:2379', 'get', '--print-value-only', '/lab/k'])).toBe('v1\n');
  });

  it('an isolated member cannot serve a linearizable read; after heal it can', async () => {
    await net.isolate('e1');
    await expect(net.run('e1', 'etcdctl', ['--endpoints', '10.77.0.10:2379', '--command-timeout', '2s', 'get', '/lab/k'], 10_000)).rejects.toMatchObject({ code: 'SCRIPT_FAILED' });
    // The other two still have quorum.
    expect(await net.run('e2', 'etcdctl', ['--endpoints', '10.77.0.11:2379', '--command-timeout', '3s', 'get', '--print-value-only', '/lab/k'], 10_000)).toBe('v1\n');
    await net.heal();
    await cluster.waitHealthy(20_000);
    expect(await net.run('e1', 'etcdctl', ['--endpoints', '10.77.0.10:2379', '--command-timeout', '5s', 'get', '--print-value-only', '/lab/k'], 10_000)).toBe('v1\n');
  });

  it('a killed member restarts with its data and rejoins', async () => {
    cluster.kill('e3');
    await expect.poll(() => cluster.pid('e3'), { timeout: 5000 }).toBeUndefined();
    // Killing a member may have killed the leader: the put (idempotent) is retried while the other two elect one.
    await expect.poll(() => cluster.etcdctl('e1', ['put', '/lab/k', 'v2']).then(() => true, () => false), { timeout: 20_000, interval: 200 }).toBe(true);
    cluster.start('e3');
    await cluster.waitHealthy(20_000);
    await expect.poll(async () => net.run('e3', 'etcdctl', ['--endpoints', '10.77.0.12:2379', 'get', '--print-value-only', '/lab/k']).catch(() => ''), { timeout: 10_000 }).toBe('v2\n');
  });

  it('stop and destroy leave no namespace and no process behind', async () => {
    const pids = cluster.memberNames.map((n) => cluster.pid(n));
    await cluster.stop();
    await net.destroy();
    expect(existsSync(cluster.dir)).toBe(false);
    expect(readdirSync('/run/netns').filter((n) => n.startsWith(`${net.id}-`))).toEqual([]);
    for (const p of pids) expect(() => process.kill(p as number, 0)).toThrow();
  });
});
