// The etcd arbiter against a real three-member etcd cluster, every member and
// both hosts in their own network namespaces (root). The safety property
// checked throughout: a host is elected only after the previous holder's
// deadline passed (one machine, one monotonic clock: directly comparable).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLabNet, startEtcdCluster, type EtcdCluster, type LabNet } from '@remus/etcd-lab';
import { mono, remoteArbiter, type RemoteArbiter, type RoleReport } from './helpers.js';

const TTL = 2;
let net: LabNet;
let cluster: EtcdCluster;

/** The members, the leader first (from `etcdctl endpoint status`: the member whose id is the leader's). */
async function membersByRole(): Promise<string[]> {
  const st = JSON.parse(await cluster.etcdctl('e1', ['endpoint', 'status', '-w', 'json'])) as { Endpoint: string; Status: { header: { member_id: number | string }; leader: number | string } }[];
  const leaderAt = st.find((x) => String(x.Status.header.member_id) === String(x.Status.leader))?.Endpoint;
  const names = cluster.memberNames;
  const leader = names.find((_, i) => leaderAt !== undefined && leaderAt.includes(cluster.endpoints[i]!));
  if (leader === undefined) throw new Error(`no leader in ${JSON.stringify(st)}`);
  return [leader, ...names.filter((n) => n !== leader)];
}
let running: RemoteArbiter[] = [];
let prefixes = 0;

function arbiterOn(node: 'hA' | 'hB', prefix: string, extra: Record<string, unknown> = {}): RemoteArbiter {
  const a = remoteArbiter(net, node, { endpoints: cluster.endpoints, prefix, host: node, ttlSeconds: TTL, ...extra });
  running.push(a);
  return a;
}

const fresh = (): string => `/remus/test${++prefixes}/primary`;

/** Waits until `f` holds, polling every 50 ms, at most `ms`. */
async function until(f: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!f()) {
    if (performance.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  net = await createLabNet();
  cluster = await startEtcdCluster(net);
  await net.addNode('hA');
  await net.addNode('hB');
}, 60_000);

afterEach(async () => {
  await Promise.all(running.map((a) => a.stop()));
  running = [];
  await net.heal();
  for (const m of cluster.memberNames) if (cluster.pid(m) === undefined) cluster.start(m);
  await cluster.waitHealthy(30_000);
});

afterAll(async () => {
  await cluster?.stop();
  await net?.destroy();
});

describe('etcd arbiter (netns, real etcd)', () => {
  it('the first campaign wins; its epoch is the key create_revision; the second waits, and wins after a resign with a higher epoch', async () => {
    const prefix = fresh();
    const a = arbiterOn('hA', prefix);
    const b = arbiterOn('hB', prefix);
    const ra = await a.call<{ epoch: number; deadline: number; at: number }>('acquire');
    expect(ra.epoch).toBeGreaterThan(0);
    expect(ra.deadline - ra.at).toBeGreaterThan(TTL * 1000 * 0.5);
    const rev = await cluster.etcdctl('e1', ['get', '--prefix', prefix, '-w', 'json']);
    const kv = (JSON.parse(rev) as { kvs: { create_revision: number; value: string }[] }).kvs[0]!;
    expect(kv.create_revision).toBe(ra.epoch);
    expect(JSON.parse(Buffer.from(kv.value, 'base64').toString())).toMatchObject({ host: 'hA' });
    const pb = b.call<{ epoch: number; at: number }>('acquire');
    await until(() => b.events.some((e) => e.event.type === 'waiting'), 5000, 'hB waits behind hA');
    expect(await b.call<RoleReport>('role')).toMatchObject({ held: false });
    expect(await a.call('leader')).toMatchObject({ host: 'hA', epoch: ra.epoch });
    await a.call('resign');
    const rb = await pb;
    expect(rb.epoch).toBeGreaterThan(ra.epoch);
    expect((await a.call<RoleReport>('role')).held).toBe(false);
    expect(await b.call('leader')).toMatchObject({ host: 'hB', epoch: rb.epoch });
  });

  it('keeps the role while one etcd member (a follower) is gone (the deadline keeps moving)', async () => {
    const a = arbiterOn('hA', fresh());
    await a.call('acquire');
    // A follower: the quorum and its leader stay, so keepalives go on. A killed leader adds an
    // election (1 s timeout here) in which no keepalive is answered; on a loaded 2-core machine that
    // can outlast the 2 s TTL's margin, and the role is then rightly lost for good (never revived:
    // see "stays lost" below). The nemesis etcd-one fault covers that case, where a failover is allowed.
    const [leader, ...followers] = await membersByRole();
    cluster.kill(followers[0]!);
    cluster.kill(followers[1]!, 'SIGSTOP');
    cluster.kill(followers[1]!, 'SIGCONT');
    void leader;
    const from = a.roles.length;
    await new Promise((r) => setTimeout(r, TTL * 1000 * 2.5));
    const seen = a.roles.slice(from);
    expect(seen.length).toBeGreaterThan(20);
    expect(seen.every((r) => r.usable)).toBe(true);
  });

  const handovers: [string, (a: RemoteArbiter) => Promise<() => Promise<void>>][] = [
    ['the holder is cut off from everything', async () => {
      await net.isolate('hA');
      return () => net.heal();
    }],
    ['the holder is paused (SIGSTOP) longer than the TTL', async (a) => {
      process.kill(a.child.pid as number, 'SIGSTOP');
      return async () => void process.kill(a.child.pid as number, 'SIGCONT');
    }],
  ];
  for (const [what, fault] of handovers) {
    it(`when ${what}, the other host is elected only after the holder's deadline passed, and the holder never comes back`, async () => {
      const prefix = fresh();
      const a = arbiterOn('hA', prefix);
      const b = arbiterOn('hB', prefix);
      const ra = await a.call<{ epoch: number }>('acquire');
      const pb = b.call<{ epoch: number; at: number }>('acquire');
      await until(() => b.events.some((e) => e.event.type === 'waiting'), 5000, 'hB waits');
      await until(() => a.roles.length > 2, 2000, 'role reports');
      const faultAt = mono();
      const undo = await fault(a);
      const rb = await pb;
      await undo();
      await new Promise((r) => setTimeout(r, 300)); // the holder reports again
      const lastA = a.lastHeld() as RoleReport;
      expect(rb.epoch).toBeGreaterThan(ra.epoch);
      // The holder's last promise ran out before the other host was elected.
      expect(lastA.deadline).toBeLessThan(rb.at);
      // ...and no report of the holder after the election shows a usable role.
      expect(a.roles.filter((r) => r.at > rb.at && r.usable)).toEqual([]);
      expect(await a.call<RoleReport>('role')).toMatchObject({ held: false });
      // Failover took at least the TTL and not much more than TTL + margins + polling.
      expect(rb.at - faultAt).toBeGreaterThan(TTL * 1000 * 0.6);
      expect(rb.at - faultAt).toBeLessThan(TTL * 1000 * 4);
    });
  }

  it('a role whose deadline passed stays lost, even when a keepalive sent before answers late (no revival)', async () => {
    // A long call timeout keeps a keepalive in flight while every member is paused;
    // it is answered after the holder's deadline passed, with a later send time.
    const a = arbiterOn('hA', fresh(), { callTimeoutMs: 5000 });
    await a.call('acquire');
    await until(() => a.roles.at(-1)?.usable === true, 2000, 'a report of the usable role');
    const from = a.roles.length;
    for (const m of cluster.memberNames) cluster.kill(m, 'SIGSTOP');
    try {
      await until(() => a.roles.slice(from).some((r) => !r.usable), TTL * 1000 * 2, 'the deadline passes');
      await new Promise((r) => setTimeout(r, 30));
    } finally {
      for (const m of cluster.memberNames) cluster.kill(m, 'SIGCONT');
    }
    const lapsedAt = (a.roles.slice(from).find((r) => !r.usable) as RoleReport).at;
    // A keepalive was in flight across the pause: it is answered after the lapse, and then either the role
    // is reported lost (right) or it is reported usable again (the bug this test guards against).
    const revived = (): RoleReport[] => a.roles.filter((r) => r.at > lapsedAt && r.usable);
    await until(() => revived().length > 0 || a.events.some((e) => e.at > lapsedAt && e.event.type === 'role-lost'), TTL * 1000, 'the late answer handled');
    await new Promise((r) => setTimeout(r, TTL * 1000));
    // The late answer was received (the lease is alive) but the role did not come back.
    expect(revived()).toEqual([]);
    expect(await a.call<RoleReport>('role')).toMatchObject({ held: false });
    expect(a.events.some((e) => e.event.type === 'role-lost')).toBe(true);
  });

  it('loses the role when two of three etcd members are gone; nobody is elected; after they return the next epoch is higher', async () => {
    const prefix = fresh();
    const a = arbiterOn('hA', prefix);
    const b = arbiterOn('hB', prefix);
    const ra = await a.call<{ epoch: number }>('acquire');
    const pb = b.call<{ epoch: number; at: number }>('acquire');
    await until(() => b.events.some((e) => e.event.type === 'waiting'), 5000, 'hB waits');
    cluster.kill('e2');
    cluster.kill('e3');
    await until(() => a.roles.at(-1)?.usable === false, TTL * 1000 * 3, 'the holder fences itself');
    const lost = mono();
    await new Promise((r) => setTimeout(r, 1000));
    expect(b.roles.some((r) => r.held)).toBe(false);
    cluster.start('e2');
    cluster.start('e3');
    const rb = await pb;
    expect(rb.epoch).toBeGreaterThan(ra.epoch);
    expect(rb.at).toBeGreaterThan(lost);
    expect((a.lastHeld() as RoleReport).deadline).toBeLessThan(rb.at);
  });

  it('a leader key deleted by hand ends the role; the other host waits until the old lease is gone', async () => {
    const prefix = fresh();
    const a = arbiterOn('hA', prefix);
    const b = arbiterOn('hB', prefix);
    await a.call('acquire');
    const pb = b.call<{ at: number }>('acquire');
    await until(() => b.events.some((e) => e.event.type === 'waiting'), 5000, 'hB waits');
    const leader = await a.call<{ key: string }>('leader');
    await cluster.etcdctl('e1', ['del', leader.key]);
    const rb = await pb;
    const lost = a.events.find((e) => e.event.type === 'role-lost');
    expect(lost?.event).toMatchObject({ reason: expect.stringMatching(/deleted/) });
    expect(b.events.some((e) => e.event.type === 'old-lease-gone')).toBe(true);
    // The holder dropped the role (before its lease was revoked) before the other host was elected.
    expect(lost!.at).toBeLessThan(rb.at);
    expect(a.roles.filter((r) => r.at > lost!.at && r.usable)).toEqual([]);
  });

  it('publish writes only while the role is held; the other host reads it; after the handover the old holder cannot publish', async () => {
    const prefix = fresh();
    const a = arbiterOn('hA', prefix);
    const b = arbiterOn('hB', prefix);
    await expect(a.call('publish', 'x')).rejects.toMatchObject({ code: 'ROLE_LOST' });
    await a.call('acquire');
    await a.call('publish', '{"primary":"hA","inSync":false}');
    expect(await b.call('read')).toBe('{"primary":"hA","inSync":false}');
    const pb = b.call('acquire');
    await until(() => b.events.some((e) => e.event.type === 'waiting'), 5000, 'hB waits');
    process.kill(a.child.pid as number, 'SIGSTOP');
    await pb;
    await b.call('publish', '{"primary":"hB"}');
    process.kill(a.child.pid as number, 'SIGCONT');
    await expect(a.call('publish', 'late')).rejects.toMatchObject({ code: 'ROLE_LOST' });
    expect(await b.call('read')).toBe('{"primary":"hB"}');
  });

  it('an aborted campaign leaves no key behind', async () => {
    const prefix = fresh();
    const a = arbiterOn('hA', prefix);
    const b = arbiterOn('hB', prefix);
    await a.call('acquire');
    const pb = b.call('acquire').catch((e: { code: string }) => e);
    await until(() => b.events.some((e) => e.event.type === 'waiting'), 5000, 'hB waits');
    await b.call('abort');
    expect(await pb).toMatchObject({ code: 'ABORTED' });
    const keys = (await cluster.etcdctl('e1', ['get', '--prefix', `${prefix}/`, '--keys-only'])).split('\n').filter(Boolean);
    expect(keys).toHaveLength(1);
  });

  it('etcd unreachable at start: acquire fails with ARBITER_FAILED naming the endpoints, and nothing is held', async () => {
    await net.isolate('hA');
    const a = arbiterOn('hA', fresh(), { callTimeoutMs: 300 });
    const t0 = performance.now();
    const e = await a.call('acquire').catch((x: { code: string; message: string }) => x);
    expect(e).toMatchObject({ code: 'ARBITER_FAILED', message: expect.stringMatching(/no member answered.*10\.77\.0\.10:2379.*etcdctl/) });
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(await a.call<RoleReport>('role')).toMatchObject({ held: false });
  });
});
