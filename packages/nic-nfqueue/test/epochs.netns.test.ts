/**
 * Output commit on this machine's kernel, in network namespaces (needs root):
 * packets a guest sends in epoch N reach the client only after commit N,
 * epoch N+1 stays held until commit N+1, and order is kept, for a routed
 * and a bridged host, over IPv4 and IPv6.
 */
import { statSync } from 'node:fs';
import { createCheckpointDevices, type CheckpointDevices } from '@remus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { nicNfqueue } from '../src/index.js';
import { childBufferProcesses, createLab, killStrayBufferProcesses, leftovers, type Lab, type Topology } from './netns-lab.js';
import { waitFor } from '@remus/test-lab';

let lab: Lab | undefined;
let layer: CheckpointDevices | undefined;

afterEach(async () => {
  await layer?.teardown().catch(() => undefined);
  layer = undefined;
  killStrayBufferProcesses();
  lab?.destroy();
  lab = undefined;
});

/** Sum of packets the host's kernel holds in NFQUEUE queues. */
function held(l: Lab): number {
  return [...l.queueTotals().values()].reduce((a, b) => a + b, 0);
}

/** Waits a little and checks that nothing more than `expected` reached the client. */
async function expectStillOnly(l: Lab, expected: readonly string[]): Promise<void> {
  // The held packets are counted in the kernel first; the pause only gives a leak time to show.
  await new Promise((r) => setTimeout(r, 150));
  expect(l.received()).toEqual(expected);
}

for (const topology of ['routed', 'bridged'] as const satisfies readonly Topology[]) {
  describe(`nic-nfqueue output commit, ${topology} (netns)`, () => {
    it(`holds epoch N until commit N and epoch N+1 until commit N+1, in order, IPv4 and IPv6 (${topology})`, async () => {
      lab = createLab(topology);
      await lab.startTraffic();
      const l = lab;
      layer = createCheckpointDevices({
        ops: [nicNfqueue()],
        devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } }],
      });
      await layer.setup();
      expect(layer.assignments()[0]?.subkind).toBe('nic-nfqueue');

      // Epoch 1: IPv4 and IPv6 interleaved. (The receiver reads IPv4 and IPv6
      // on two sockets, so order is checked within each family.)
      const seq = (p: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${p}-${i + 1}`);
      const e1v4 = seq('e1', 10);
      const e1v6 = seq('e1v6', 3);
      await l.send(e1v4.slice(0, 4));
      await l.send(e1v6, l.clientV6);
      await l.send(e1v4.slice(4));
      await waitFor(() => held(l) >= 13, 10_000, 'epoch 1 queued in the kernel');
      await expectStillOnly(l, []);
      await layer.postsuspend();
      await layer.preresume();

      // Epoch 2 starts when the guest resumes; its packets must wait for commit 2.
      const e2v4 = seq('e2', 6);
      const e2v6 = seq('e2v6', 2);
      await l.send(e2v4.slice(0, 3));
      await l.send(e2v6, l.clientV6);
      await l.send(e2v4.slice(3));
      await waitFor(() => held(l) >= 21, 10_000, 'epoch 2 queued in the kernel');
      await expectStillOnly(l, []);

      await layer.commit();
      await l.receiver!.waitFor(() => l.received().length >= 13, 10_000, 'epoch 1 after commit 1');
      expect(held(l)).toBeGreaterThanOrEqual(8);
      await new Promise((r) => setTimeout(r, 150));
      expect(byFamily(l.received())).toEqual({ v4: e1v4, v6: e1v6 });
      expect(nicStats(layer)).toMatchObject({ dropped: 0 });
      expect(nicStats(layer).released).toBeGreaterThanOrEqual(13);
      expect(nicStats(layer).held).toBeGreaterThanOrEqual(8);

      await layer.postsuspend();
      await layer.preresume();
      await layer.commit();
      await l.receiver!.waitFor(() => l.received().length >= 21, 10_000, 'epoch 2 after commit 2');
      expect(byFamily(l.received())).toEqual({ v4: [...e1v4, ...e2v4], v6: [...e1v6, ...e2v6] });
      // Every epoch-1 packet arrived before any epoch-2 packet.
      const r = l.received();
      expect(Math.max(...r.filter((p) => p.startsWith('e1')).map((p) => r.indexOf(p)))).toBeLessThan(
        Math.min(...r.filter((p) => p.startsWith('e2')).map((p) => r.indexOf(p))),
      );

      // An epoch with no output commits fine.
      await layer.postsuspend();
      await layer.preresume();
      await layer.commit();
      expect(held(l)).toBe(0);

      await layer.teardown();
      layer = undefined;
      expect(leftovers(l)).toEqual([]);
      // With the rules gone the guest's output flows unbuffered again.
      await l.send(['after']);
      await l.receiver!.waitFor(() => l.received().includes('after'), 10_000, 'unbuffered packet after teardown');
    });

    it(`buffers output to the host itself and leaves traffic from elsewhere alone (${topology})`, async () => {
      // IPv4 only: a dual-stack guest may emit IPv6 neighbour discovery at any time, which is (rightly) held too and would spoil exact counts.
      lab = createLab(topology, { ipv6: false });
      await lab.startTraffic();
      const l = lab;
      layer = createCheckpointDevices({
        ops: [nicNfqueue()],
        devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } }],
      });
      await layer.setup();
      // Guest -> host address: queued like forwarded output.
      await l.send(['to-host'], l.hostV4);
      await waitFor(() => held(l) >= 1, 10_000, 'host-bound packet queued');
      const heldBefore = held(l);
      // Traffic entering the host elsewhere (from the client) is not queued.
      const { execFileSync } = await import('node:child_process');
      execFileSync('ip', [
        'netns',
        'exec',
        l.client,
        process.execPath,
        '-e',
        `const d=require('dgram').createSocket('udp4');d.send('x',9,'${l.hostV4}',()=>d.close())`,
      ]);
      await new Promise((r) => setTimeout(r, 150));
      expect(held(l)).toBe(heldBefore);
      await layer.postsuspend();
      await layer.preresume();
      await layer.commit();
      expect(held(l)).toBe(0);
      expect(nicStats(layer)).toMatchObject({ released: heldBefore, held: 0, dropped: 0 });
    });
  });
}

describe('nic-nfqueue boundaries (netns)', () => {
  it('commit N releases up to boundary N: not a later one, nothing without one, and older ones are forgotten', async () => {
    lab = createLab('routed');
    const l = lab;
    await l.startTraffic();
    // Direct op calls: the core never runs two postsuspends before a commit, a pipelined caller might.
    const ops = nicNfqueue();
    const signal = new AbortController().signal;
    const ctx = { signal, checkpoint: 0, epoch: 0, operation: `bound${process.pid}` };
    const at = (checkpoint: number) => ({ ...ctx, checkpoint });
    const shared = await ops.init!(ctx);
    const handle = { device: { id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } }, shared, data: undefined };
    try {
      await ops.setup(handle, ctx);
      await l.send(['b1-1', 'b1-2']);
      await waitFor(() => held(l) >= 2, 10_000, 'epoch 1 held');
      await ops.postsuspend!(handle, at(1));
      await l.send(['b2-1']);
      await waitFor(() => held(l) >= 3, 10_000, 'epoch 2 held');
      await ops.postsuspend!(handle, at(2));
      await ops.commit!(handle, at(1));
      await l.receiver!.waitFor(() => l.received().length >= 2, 10_000, 'epoch 1');
      await new Promise((r) => setTimeout(r, 150));
      expect(l.received()).toEqual(['b1-1', 'b1-2']);
      await ops.commit!(handle, at(2));
      await l.receiver!.waitFor(() => l.received().length >= 3, 10_000, 'epoch 2');
      expect(l.received()).toEqual(['b1-1', 'b1-2', 'b2-1']);
      // A commit for a checkpoint whose boundary was never recorded releases nothing.
      await l.send(['b3-1']);
      await waitFor(() => held(l) >= 1, 10_000, 'epoch 3 held');
      await ops.commit!(handle, at(3));
      await new Promise((r) => setTimeout(r, 150));
      expect(l.received()).toEqual(['b1-1', 'b1-2', 'b2-1']);
      // A boundary left by a failed checkpoint (4) is forgotten when checkpoint 5 commits.
      await ops.postsuspend!(handle, at(4));
      await ops.postsuspend!(handle, at(5));
      await ops.commit!(handle, at(5));
      await l.receiver!.waitFor(() => l.received().length >= 4, 10_000, 'epoch 3 at commit 5');
    } finally {
      await ops.teardown(handle, ctx);
      await ops.cleanup!(shared, ctx);
    }
    expect(leftovers(l)).toEqual([]);
  });
});

describe('nic-nfqueue empty epochs (netns)', () => {
  it('commits an epoch that held nothing without a round trip to the buffer process; a non-empty one waits for it and releases', async () => {
    lab = createLab('routed');
    await lab.startTraffic();
    const l = lab;
    layer = createCheckpointDevices({ ops: [nicNfqueue()], devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } }] });
    await layer.setup();
    // The device's buffer process: the one in the host's namespace (init also starts one in the default namespace).
    const hostNs = statSync(`/run/netns/${l.host}`).ino;
    const buffer = childBufferProcesses().find((p) => statSync(`/proc/${p}/ns/net`).ino === hostNs);
    expect(buffer).toBeGreaterThan(0);
    const stopped = async (f: () => Promise<void>, ms: number): Promise<'settled' | 'pending'> => {
      // The buffer process cannot answer while stopped: whatever settles meanwhile needed no answer from it.
      process.kill(buffer!, 'SIGSTOP');
      try {
        return await Promise.race([f().then(() => 'settled' as const), new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);
      } finally {
        process.kill(buffer!, 'SIGCONT');
      }
    };
    // Checkpoint 1: no traffic.
    await layer.postsuspend();
    await layer.preresume();
    expect(await stopped(() => layer!.commit(), 1000)).toBe('settled');
    // Checkpoint 2: two packets held; its commit must reach the buffer process, then they arrive.
    await l.send(['n1', 'n2']);
    await waitFor(() => [...l.queueTotals().values()].reduce((a, b) => a + b, 0) >= 2, 10_000, 'epoch 2 queued');
    await layer.postsuspend();
    await layer.preresume();
    let commit: Promise<void> | undefined;
    expect(await stopped(() => (commit = layer!.commit()), 400)).toBe('pending');
    await commit;
    await l.receiver!.waitFor(() => l.received().length >= 2, 10_000, 'epoch 2 after commit 2');
    expect(l.received()).toEqual(['n1', 'n2']);
    // Epochs count both kinds of commit.
    expect(nicStats(layer).epochs).toBe(2);
  });
});

function byFamily(payloads: readonly string[]): { v4: string[]; v6: string[] } {
  return { v4: payloads.filter((p) => !p.includes('v6')), v6: payloads.filter((p) => p.includes('v6')) };
}

/** The device's figures, from the subkind's stats through the layer. */
function nicStats(l: CheckpointDevices): Readonly<Record<string, number>> {
  const s = l.stats().find((x) => x.device === 'vif1.0');
  if (!s) throw new Error('no stats for vif1.0');
  return s.stats;
}
