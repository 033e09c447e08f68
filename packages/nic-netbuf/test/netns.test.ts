/**
 * nic-netbuf on this machine's kernel, in network namespaces the tests make
 * (needs root). This kernel has no sch_plug, so these tests use a stand-in
 * qdisc (bfifo) at the same place and handle; everything else is the real
 * code path: IFB allocation, tagging, redirect, the shared control channel,
 * teardown after failures, concurrency, reap. The plug itself is proven in
 * lab.test.ts.
 */
import { spawn } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkDevices, createCheckpointDevices, isRemusError, RemusError, type SubkindOps } from '@remus/core';
import { afterEach, describe, expect, it } from 'vitest';
import type { NetbufShared, NicData } from '../src/data.js';
import { createNetbuf, nicNetbuf, SETUP_STEPS, type NetbufInternals, type NicNetbufOptions } from '../src/subkinds.js';
import { standIn } from './fixtures/stand-in.mjs';
import { arping, childTcs, ctx, handle, ifbs, ingressOf, leftovers, makeNet, nicDevice, ping, qdiscs, rootPackets, sh, type TestNet } from './helpers.js';

const STAND_IN = ['bfifo', 'limit', '100000'] as const;
const LOCK = `remus-nic-netbuf-test-${process.pid}`;

let nets: TestNet[] = [];
const cleanups: (() => unknown)[] = [];
function net(count = 1): TestNet {
  const n = makeNet(count);
  nets.push(n);
  return n;
}
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  for (const n of nets.splice(0)) n.destroy();
});

function ops(options: NicNetbufOptions = {}, internals: NetbufInternals = {}): SubkindOps<NetbufShared, NicData> {
  return createNetbuf({ lockName: LOCK, ...options }, { qdisc: standIn(STAND_IN), ...internals });
}

/** Runs init, returns shared state and registers cleanup. */
async function started(o: SubkindOps<NetbufShared, NicData>): Promise<NetbufShared> {
  const shared = await o.init!(ctx());
  cleanups.push(() => o.cleanup!(shared, ctx()));
  return shared;
}

/** Counts processes spawned (async spawn, as execa and the channel use) while `body` runs. */
async function spawnsDuring(body: () => Promise<void>): Promise<number> {
  let n = 0;
  const onSpawn = (): void => void n++;
  subscribe('child_process', onSpawn);
  try {
    await body();
  } finally {
    unsubscribe('child_process', onSpawn);
  }
  return n;
}

describe('setup and teardown (built-in recipe)', () => {
  it('creates a tagged IFB of its own with the buffer qdisc at handle 1:, redirects all ingress of the NIC to it, and teardown removes exactly that', async () => {
    const n = net();
    const o = ops();
    const shared = await started(o);
    const h = handle<NetbufShared, NicData>(nicDevice(n), shared);
    await o.setup(h, ctx('op-a'));

    const mine = ifbs(n.host);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.ifname).toMatch(/^rb[0-9a-f]{8}$/);
    expect(mine[0]!.ifalias).toBe('remus-netbuf:op-a:vh0');
    // The IFB sends nothing of its own into the buffer: no IPv6 link-local address.
    const ifbLink = JSON.parse(sh('ip', ['-n', n.host, '-d', '-j', 'link', 'show', 'dev', mine[0]!.ifname]))[0] as { inet6_addr_gen_mode: string };
    expect(ifbLink.inet6_addr_gen_mode).toBe('none');
    expect(sh('ip', ['-n', n.host, '-6', 'addr', 'show', 'dev', mine[0]!.ifname]).trim()).toBe('');
    expect(h.data!.ifb).toBe(mine[0]!.ifname);
    const root = qdiscs(n.host, mine[0]!.ifname).find((q) => q.root);
    expect(root).toMatchObject({ kind: 'bfifo', handle: '1:' });
    expect(ingressOf(n.host, 'vh0')).toBe('ingress');
    const filters = JSON.parse(sh('tc', ['-n', n.host, '-j', 'filter', 'show', 'dev', 'vh0', 'ingress'])) as { protocol: string; options?: { actions?: { to_dev: string }[] } }[];
    expect(filters.every((f) => f.protocol === 'all')).toBe(true);
    expect(filters.flatMap((f) => f.options?.actions ?? []).map((a) => a.to_dev)).toEqual([mine[0]!.ifname]);

    await o.teardown(h, ctx('op-a'));
    await o.teardown(h, ctx('op-a'));
    await o.cleanup!(shared, ctx());
    expect(leftovers(n)).toEqual([]);
  });

  it('sends IPv4, IPv6 and ARP from the guest through the IFB', async () => {
    const n = net();
    const o = ops();
    const shared = await started(o);
    const h = handle<NetbufShared, NicData>(nicDevice(n), shared);
    await o.setup(h, ctx());
    const ifb = h.data!.ifb!;
    let before = rootPackets(n.host, ifb);
    expect(arping(n, 0, 3)).toBe(3);
    let after = rootPackets(n.host, ifb);
    expect(after - before).toBeGreaterThanOrEqual(3);
    before = after;
    expect(ping(n, 0, 5)).toBe(5);
    after = rootPackets(n.host, ifb);
    expect(after - before).toBeGreaterThanOrEqual(5);
    before = after;
    expect(ping(n, 0, 5, true)).toBe(5);
    after = rootPackets(n.host, ifb);
    expect(after - before).toBeGreaterThanOrEqual(5);
    await o.teardown(h, ctx());
    // After teardown traffic flows without the IFB.
    expect(ping(n, 0, 2)).toBe(2);
  });

  it('refuses an ingress qdisc someone else put on the NIC, naming the interface and the fix, and leaves it alone', async () => {
    const n = net();
    sh('tc', ['-n', n.host, 'qdisc', 'add', 'dev', 'vh0', 'ingress']);
    const o = ops();
    const shared = await started(o);
    const h = handle<NetbufShared, NicData>(nicDevice(n), shared);
    const err = await Promise.resolve(o.setup(h, ctx())).catch((e: unknown) => e);
    expect(isRemusError(err, 'OP_FAILED')).toBe(true);
    expect((err as Error).message).toContain('interface vh0');
    expect((err as Error).message).toContain(`tc -n ${n.host} qdisc del dev vh0 ingress`);
    await o.teardown(h, ctx());
    expect(ingressOf(n.host, 'vh0')).toBe('ingress');
    expect(ifbs(n.host)).toEqual([]);
  });

  it('never touches IFBs it did not create: untagged ones in the namespace and the kernel’s ifb0/ifb1', async () => {
    const n = net();
    sh('ip', ['-n', n.host, 'link', 'add', 'rbforeign', 'type', 'ifb']);
    sh('ip', ['-n', n.host, 'link', 'add', 'ifb0', 'type', 'ifb']);
    const hostIfbsBefore = ifbs(undefined);
    const o = ops();
    const shared = await started(o);
    const h = handle<NetbufShared, NicData>(nicDevice(n), shared);
    await o.setup(h, ctx('op-f'));
    expect(h.data!.ifb).not.toBe('rbforeign');
    await o.teardown(h, ctx('op-f'));
    expect(await o.reap!('op-f', [nicDevice(n)], ctx())).toEqual([]);
    expect(ifbs(n.host).map((i) => i.ifname).sort()).toEqual(['ifb0', 'rbforeign']);
    expect(ifbs(undefined)).toEqual(hostIfbsBefore);
  });

  it.each([
    ['native', 0],
    ['event', 1],
  ] as const)('sets up NICs with their own IFBs and shares one control channel per namespace (channel %s: %i tc processes)', async (channel, tcs) => {
    const n = net(3);
    const o = ops({ channel });
    const shared = await started(o);
    const hs = n.nics.map((_, i) => handle<NetbufShared, NicData>(nicDevice(n, i), shared));
    await Promise.all(hs.map((h) => o.setup(h, ctx())));
    expect(new Set(hs.map((h) => h.data!.ifb)).size).toBe(3);
    expect(new Set(hs.map((h) => h.data!.control!.channel)).size).toBe(1);
    expect(hs.map((h) => h.data!.control!.via)).toEqual(Array(3).fill(channel === 'native' ? 'native' : 'tc'));
    expect(childTcs()).toHaveLength(tcs);
    await Promise.all(hs.map((h) => o.teardown(h, ctx())));
    await o.cleanup!(shared, ctx());
    expect(leftovers(n)).toEqual([]);
  });
});

describe('teardown after a setup that failed', () => {
  it('succeeds when the NIC’s namespace vanished (everything in it is gone)', async () => {
    const n = net();
    const o = ops();
    const shared = await started(o);
    const h = handle<NetbufShared, NicData>(nicDevice(n), shared);
    await o.setup(h, ctx());
    sh('ip', ['netns', 'del', n.host]);
    await o.teardown(h, ctx());
    await o.teardown(h, ctx());
    expect(h.data).toMatchObject({ ifb: undefined, ingressAdded: false });
  });

  for (const failAt of SETUP_STEPS) {
    it(`leaves nothing behind when setup fails before step ${failAt}`, async () => {
      const n = net();
      sh('ip', ['-n', n.host, 'link', 'add', 'rbforeign', 'type', 'ifb']);
      const o = ops({}, {
        beforeStep: (step) => {
          if (step === failAt) throw new RemusError('OP_FAILED', `injected failure before ${step}`);
        },
      });
      const shared = await started(o);
      const h = handle<NetbufShared, NicData>(nicDevice(n), shared);
      await expect(Promise.resolve(o.setup(h, ctx()))).rejects.toThrow(`injected failure before ${failAt}`);
      await o.teardown(h, ctx());
      await o.teardown(h, ctx());
      await o.cleanup!(shared, ctx());
      expect(ifbs(n.host).map((i) => i.ifname)).toEqual(['rbforeign']);
      expect(ingressOf(n.host, 'vh0')).toBeUndefined();
      expect(childTcs()).toEqual([]);
    });
  }

  it('leaves nothing behind when a kernel command itself fails (qdisc rejected by the kernel)', async () => {
    const n = net();
    const o = createNetbuf({ lockName: LOCK }, { qdisc: standIn(['no-such-qdisc-kind']) });
    const shared = await started(o);
    const h = handle<NetbufShared, NicData>(nicDevice(n), shared);
    const err = await Promise.resolve(o.setup(h, ctx())).catch((e: unknown) => e);
    expect(isRemusError(err, 'OP_FAILED')).toBe(true);
    expect(h.data!.ifbCreated).toBe(true);
    await o.teardown(h, ctx());
    expect(leftovers(n)).toEqual([]);
  });

  it('tears down through the core when one NIC of two fails setup (interface vanished), leaving nothing', async () => {
    const n = net(2);
    const o = ops({}, {
      beforeStep: (step, h) => {
        if (step === 'add-ingress' && h.data!.ifname === 'vh1') sh('ip', ['-n', n.host, 'link', 'del', 'vh1']);
      },
    });
    const layer = createCheckpointDevices({ ops: [o], devices: [nicDevice(n, 0), nicDevice(n, 1)] });
    const err = await layer.setup().catch((e: unknown) => e);
    expect(isRemusError(err)).toBe(true);
    expect(JSON.stringify((err as RemusError).toJSON())).toContain('vh1');
    expect(leftovers({ ...n, nics: ['vh0'] })).toEqual([]);
  });
});

describe('checkpoint ops', () => {
  it('go through the shared channel without spawning a process, and fail with the kernel’s reason when the IFB is gone', async () => {
    const n = net(2);
    const o = ops();
    const shared = await started(o);
    const hs = [0, 1].map((i) => handle<NetbufShared, NicData>(nicDevice(n, i), shared));
    const setupSpawns = await spawnsDuring(async () => void (await Promise.all(hs.map((h) => o.setup(h, ctx())))));
    expect(setupSpawns).toBeGreaterThan(0); // the counter sees spawns
    const opSpawns = await spawnsDuring(async () => {
      for (let c = 1; c <= 20; c++) {
        await Promise.all(hs.map((h) => o.postsuspend!(h, ctx(undefined, undefined, c))));
        await Promise.all(hs.map((h) => o.commit!(h, ctx(undefined, undefined, c))));
      }
    });
    expect(opSpawns).toBe(0);
    expect(o.stats!(hs[0]!)).toEqual({ epochsClosed: 20, epochsReleased: 20, epochsHeld: 0 });

    sh('ip', ['-n', n.host, 'link', 'del', hs[1]!.data!.ifb!]);
    const err = await Promise.resolve(o.postsuspend!(hs[1]!, ctx())).catch((e: unknown) => e);
    expect(isRemusError(err, 'OP_FAILED')).toBe(true);
    expect((err as RemusError).details['errno']).toBe('ENODEV');
    // The channel survives a failed command: the other NIC still works.
    await o.postsuspend!(hs[0]!, ctx());
    await o.commit!(hs[0]!, ctx());
    await Promise.all(hs.map((h) => o.teardown(h, ctx())));
    await o.cleanup!(shared, ctx());
    expect(leftovers(n)).toEqual([]);
  });

  it('refuse to run before setup completed (STATE)', async () => {
    const o = ops();
    const shared = await started(o);
    const h = handle<NetbufShared, NicData>({ id: 'x', kind: 'nic', params: { ifname: 'vh0' } }, shared);
    await expect(Promise.resolve(o.commit!(h, ctx()))).rejects.toMatchObject({ code: 'STATE' });
  });

  it('run a full lifecycle through the core layer with a NIC in the host namespace of the test', async () => {
    const n = net();
    const events: string[] = [];
    const layer = createCheckpointDevices({ ops: [ops()], devices: [nicDevice(n)], onEvent: (e) => e.type === 'op-end' && events.push(`${e.op}:${e.outcome}`) });
    await layer.setup();
    for (let i = 0; i < 3; i++) {
      await layer.postsuspend();
      await layer.preresume();
      await layer.commit();
    }
    await layer.teardown();
    expect(events.filter((e) => !e.endsWith(':ok'))).toEqual([]);
    expect(events.filter((e) => e.startsWith('commit'))).toHaveLength(3);
    expect(leftovers(n)).toEqual([]);
  });
});

describe('match', () => {
  it('throws INVALID_ARGUMENT when the interface or the namespace does not exist', async () => {
    const n = net();
    const o = ops();
    const shared = await started(o);
    const missingIf = handle<NetbufShared, NicData>({ id: 'vifX', kind: 'nic', params: { ifname: 'vh9', netns: n.host } }, shared);
    await expect(Promise.resolve(o.match!(missingIf, ctx()))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('interface vh9') });
    const missingNs = handle<NetbufShared, NicData>({ id: 'vifY', kind: 'nic', params: { ifname: 'vh0', netns: `${n.host}-gone` } }, shared);
    await expect(Promise.resolve(o.match!(missingNs, ctx()))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('does not exist') });
    const badName = handle<NetbufShared, NicData>({ id: 'vifZ', kind: 'nic', params: { ifname: 'a b' } }, shared);
    await expect(Promise.resolve(o.match!(badName, ctx()))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('says no, with the reason, on this kernel without sch_plug (probed once, in a throwaway namespace)', async () => {
    const n = net();
    const o = nicNetbuf({ lockName: LOCK });
    const shared = await started(o);
    const spawns = await spawnsDuring(async () => {
      const verdict = await o.match!(handle<NetbufShared, NicData>(nicDevice(n), shared), ctx());
      expect(verdict).toEqual({ match: false, reason: expect.stringContaining('lacks sch_plug') });
    });
    const again = await spawnsDuring(async () => {
      const verdict = await o.match!(handle<NetbufShared, NicData>(nicDevice(n), shared), ctx());
      expect(verdict).toMatchObject({ match: false });
    });
    expect(again).toBeLessThan(spawns); // the probe ran once
    expect(leftovers(n)).toEqual([]);
  });

  it('lets the next subkind in the ops list take the NIC when sch_plug is missing', async () => {
    const n = net();
    const fallback: SubkindOps = { name: 'nic-fallback', kind: 'nic', setup: () => undefined, teardown: () => undefined };
    const layer = createCheckpointDevices({ ops: [nicNetbuf({ lockName: LOCK }), fallback], devices: [nicDevice(n)] });
    await layer.setup();
    expect(layer.assignments()[0]).toMatchObject({
      subkind: 'nic-fallback',
      declined: [{ subkind: 'nic-netbuf', reason: expect.stringContaining('lacks sch_plug') }],
    });
    await layer.teardown();
  });
});

describe('concurrency', () => {
  it('sets up NICs from two operations in this process and another process at once, each with its own IFB, and removes all of them', async () => {
    const n = net(6);
    const a = ops();
    const b = ops();
    const sa = await started(a);
    const sb = await started(b);
    const ha = [0, 1].map((i) => handle<NetbufShared, NicData>(nicDevice(n, i), sa));
    const hb = [2, 3].map((i) => handle<NetbufShared, NicData>(nicDevice(n, i), sb));
    const child = runChild(['setup-hold', n.host, 'vh4,vh5', 'op-child', LOCK]);
    await Promise.all([...ha.map((h) => a.setup(h, ctx('op-a'))), ...hb.map((h) => b.setup(h, ctx('op-b'))), child.ready]);
    const all = ifbs(n.host);
    expect(all).toHaveLength(6);
    expect(new Set(all.map((i) => i.ifname)).size).toBe(6);
    expect(all.map((i) => i.ifalias).sort()).toEqual([
      'remus-netbuf:op-a:vh0',
      'remus-netbuf:op-a:vh1',
      'remus-netbuf:op-b:vh2',
      'remus-netbuf:op-b:vh3',
      'remus-netbuf:op-child:vh4',
      'remus-netbuf:op-child:vh5',
    ]);
    await child.finish();
    await Promise.all([...ha.map((h) => a.teardown(h, ctx())), ...hb.map((h) => b.teardown(h, ctx()))]);
    await a.cleanup!(sa, ctx());
    await b.cleanup!(sb, ctx());
    expect(leftovers(n)).toEqual([]);
  });

  it('lets exactly one of two concurrent operations take the same NIC; the loser’s teardown leaves the winner’s buffer intact', async () => {
    const n = net();
    const a = ops();
    const b = ops();
    const ha = handle<NetbufShared, NicData>(nicDevice(n), await started(a));
    const hb = handle<NetbufShared, NicData>(nicDevice(n), await started(b));
    const results = await Promise.allSettled([a.setup(ha, ctx('op-a')), b.setup(hb, ctx('op-b'))]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const [winner, loser] = results[0]!.status === 'fulfilled' ? [ha, hb] : [hb, ha];
    const [wOps, lOps] = winner === ha ? [a, b] : [b, a];
    await lOps.teardown(loser, ctx());
    expect(ifbs(n.host).map((i) => i.ifname)).toEqual([winner.data!.ifb]);
    expect(ingressOf(n.host, 'vh0')).toBe('ingress');
    await wOps.postsuspend!(winner, ctx());
    await wOps.teardown(winner, ctx());
    await a.cleanup!(ha.shared, ctx());
    await b.cleanup!(hb.shared, ctx());
    expect(leftovers(n)).toEqual([]);
  });
});

describe('reap', () => {
  it('removes the IFBs and ingress qdiscs of a run killed with SIGKILL, by its tag, and nothing else', async () => {
    const n = net(3);
    const other = ops();
    const hOther = handle<NetbufShared, NicData>(nicDevice(n, 2), await started(other));
    await other.setup(hOther, ctx('op-other'));
    const child = runChild(['setup-hold', n.host, 'vh0,vh1', 'op-dead', LOCK]);
    await child.ready;
    child.kill();
    await child.exited;
    expect(ifbs(n.host)).toHaveLength(3);

    const o = ops();
    const devices = [nicDevice(n, 0), nicDevice(n, 1)];
    const lines = await o.reap!('op-dead', devices, ctx());
    expect(lines.filter((l) => l.startsWith('removed IFB'))).toHaveLength(2);
    expect(lines.filter((l) => l.startsWith('removed ingress qdisc of vh'))).toHaveLength(2);
    expect(await o.reap!('op-dead', devices, ctx())).toEqual([]);
    expect(ifbs(n.host).map((i) => i.ifalias)).toEqual(['remus-netbuf:op-other:vh2']);
    expect(ingressOf(n.host, 'vh0')).toBeUndefined();
    expect(ingressOf(n.host, 'vh2')).toBe('ingress');
    await other.teardown(hOther, ctx());
    await other.cleanup!(hOther.shared, ctx());
    expect(leftovers(n)).toEqual([]);
  });
});

describe('operator script instead of the built-in recipe', () => {
  it('runs the script with setup/teardown and the documented environment, and drives the qdisc on the IFB it reports', async () => {
    const n = net();
    const dir = mkdtempSync(join(tmpdir(), 'remus-nic-netbuf-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const log = join(dir, 'log');
    const script = join(dir, 'netbuf.sh');
    writeFileSync(
      script,
      `#!/bin/bash
set -e
echo "$1 vifname=$vifname IFB=$IFB netns=$REMUS_NETNS op=$REMUS_OPERATION dev=$REMUS_DEVICE tag=$REMUS_TAG limit=$REMUS_PLUG_LIMIT" >> ${log}
if [ "$1" = setup ]; then
  ip -n "$REMUS_NETNS" link add rbscript type ifb
  ip -n "$REMUS_NETNS" link set rbscript alias "$REMUS_TAG"
  tc -n "$REMUS_NETNS" qdisc add dev rbscript root handle 7: bfifo limit "$REMUS_PLUG_LIMIT"
  ip -n "$REMUS_NETNS" link set rbscript up
  echo "some chatter"
  echo "ifb=rbscript"
else
  ip -n "$REMUS_NETNS" link del "$IFB"
fi
`,
    );
    chmodSync(script, 0o755);
    const o = ops({ script, limitBytes: 123456 });
    const shared = await started(o);
    const h = handle<NetbufShared, NicData>(nicDevice(n), shared);
    await o.setup(h, ctx('op-s'));
    expect(h.data).toMatchObject({ ifb: 'rbscript', qdiscHandle: '7:' });
    await o.postsuspend!(h, ctx());
    await o.commit!(h, ctx());
    await o.teardown(h, ctx());
    await o.teardown(h, ctx());
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual([
      `setup vifname=vh0 IFB= netns=${n.host} op=op-s dev=nic0 tag=remus-netbuf:op-s:vh0 limit=123456`,
      `teardown vifname=vh0 IFB=rbscript netns=${n.host} op=op-s dev=nic0 tag=remus-netbuf:op-s:vh0 limit=123456`,
    ]);
    await o.cleanup!(shared, ctx());
    expect(leftovers(n)).toEqual([]);
  });

  it('fails setup with SCRIPT_FAILED when the script fails, and still runs its teardown', async () => {
    const n = net();
    const dir = mkdtempSync(join(tmpdir(), 'remus-nic-netbuf-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const log = join(dir, 'log');
    const script = join(dir, 'netbuf.sh');
    writeFileSync(script, `#!/bin/bash\necho "$1 IFB=$IFB" >> ${log}\n[ "$1" = teardown ] || { echo "no IFB for you" >&2; exit 3; }\n`);
    chmodSync(script, 0o755);
    const o = ops({ script });
    const h = handle<NetbufShared, NicData>(nicDevice(n), await started(o));
    await expect(Promise.resolve(o.setup(h, ctx()))).rejects.toMatchObject({ code: 'SCRIPT_FAILED', message: expect.stringContaining('no IFB for you') });
    await o.teardown(h, ctx());
    await o.teardown(h, ctx());
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual(['setup IFB=', 'teardown IFB=']);
  });

  it('refuses a device id the script could not take safely in REMUS_DEVICE (newline, $()), at config check and at setup, without running the script', async () => {
    const n = net();
    const dir = mkdtempSync(join(tmpdir(), 'remus-nic-netbuf-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const log = join(dir, 'log');
    const script = join(dir, 'netbuf.sh');
    writeFileSync(script, `#!/bin/bash\necho "ran $1" >> ${log}\nexit 1\n`);
    chmodSync(script, 0o755);
    const o = ops({ script });
    for (const id of ['nic0\nREMUS_TAG=evil', `nic$(touch ${join(dir, 'pwned')})`, 'nic`id`', 'nic 0', 'a/b']) {
      const device = { id, kind: 'nic', params: { ifname: 'vh0', netns: n.host } };
      // Before the host is touched: the config check names the device and REMUS_DEVICE.
      expect(checkDevices([o], [device]).map((e) => e.code)).toEqual(['INVALID_ARGUMENT']);
      expect(checkDevices([o], [device])[0]!.message).toContain('REMUS_DEVICE');
      // Called directly, setup refuses too; teardown has nothing to undo.
      const h = handle<NetbufShared, NicData>(device, await started(o));
      await expect(Promise.resolve(o.setup(h, ctx()))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await o.teardown(h, ctx());
    }
    // A plain id passes the check; buffer: false devices are not the script's.
    expect(checkDevices([o], [{ id: 'vif1.0', kind: 'nic', params: { ifname: 'vh0' } }])).toEqual([]);
    expect(checkDevices([o], [{ id: 'a b', kind: 'nic', params: { ifname: 'vh0', buffer: false } }])).toEqual([]);
    expect(existsSync(log)).toBe(false);
    expect(existsSync(join(dir, 'pwned'))).toBe(false);
    expect(leftovers(n)).toEqual([]);
  });
});

describe('options', () => {
  it('rejects bad options with INVALID_ARGUMENT', () => {
    expect(() => nicNetbuf({ limitBytes: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => nicNetbuf({ limitBytes: 2 ** 32 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => nicNetbuf({ script: 'relative.sh' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => nicNetbuf({ lockName: '../x' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

/** A child node process running fixtures/child.mjs (built dist); prints "ready" when set up. */
function runChild(args: string[]): { ready: Promise<void>; finish(): Promise<void>; kill(): void; exited: Promise<void> } {
  const file = new URL('./fixtures/child.mjs', import.meta.url).pathname;
  const child = spawn(process.execPath, [file, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('ready\n')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`child exited (${code}) before ready: ${out}`)));
  });
  return {
    ready,
    exited,
    kill: () => child.kill('SIGKILL'),
    async finish() {
      child.stdin!.end('done\n');
      await exited;
      expect(child.exitCode).toBe(0);
    },
  };
}

