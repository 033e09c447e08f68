/**
 * Back-pressure and queue numbers on a real kernel (needs root and network
 * namespaces): at the packet cap and at the byte cap new packets are dropped
 * and counted, never released early; concurrent operations get distinct
 * queues; a queue number a leftover rule references is never taken.
 */
import { createCheckpointDevices, type CheckpointDevices } from '@remus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { nicNfqueue } from '../src/index.js';
import { boundQueues, createLab, remusRules, killStrayBufferProcesses, leftovers, type Lab } from './netns-lab.js';
import { sh, waitFor } from '@remus/test-lab';

let lab: Lab | undefined;
const layers: CheckpointDevices[] = [];

afterEach(async () => {
  for (const l of layers.splice(0)) await l.teardown().catch(() => undefined);
  killStrayBufferProcesses();
  lab?.destroy();
  lab = undefined;
});

function track(l: CheckpointDevices): CheckpointDevices {
  layers.push(l);
  return l;
}

const held = (l: Lab): number => [...l.queueTotals().values()].reduce((a, b) => a + b, 0);

async function checkpoint(layer: CheckpointDevices): Promise<void> {
  await layer.postsuspend();
  await layer.preresume();
  await layer.commit();
}

describe('nic-nfqueue caps (netns)', () => {
  it('at the packet cap the kernel drops new packets; they are counted and the held ones go out at commit', async () => {
    lab = createLab('routed', { ipv6: false });
    const l = lab;
    await l.startTraffic();
    const layer = track(
      createCheckpointDevices({ ops: [nicNfqueue({ maxPackets: 5 })], devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } }] }),
    );
    await layer.setup();
    const sent = Array.from({ length: 8 }, (_, i) => `cap-${i + 1}`);
    await l.send(sent);
    // "sent" means the guest's kernel took them; the host's kernel may meet the last three a moment later.
    // Committing before it did would give them the next epoch's empty queue instead of the cap.
    await waitFor(() => held(l) === 5 && l.queueDropped() === 3, 10_000, 'five packets held and three dropped by the kernel at the cap');
    await checkpoint(layer);
    await l.receiver!.waitFor((x) => x.filter((s) => s.startsWith('rx ')).length >= 5, 10_000, 'the five held packets');
    await new Promise((r) => setTimeout(r, 150));
    expect(l.received()).toEqual(sent.slice(0, 5));
    // The kernel's counters reach the figures with the buffer's next report (every 250 ms while figures change);
    // a commit's reply carries them as last read, so it may be one report behind.
    await waitFor(() => layer.stats()[0]!.stats.queueFullDropped === 3, 5_000, "the kernel's three queue-full drops in the figures");
    expect(layer.stats()[0]!.stats).toMatchObject({ released: 5, queueFullDropped: 3, dropped: 3, held: 0 });
  });

  it('at the byte cap the buffer drops new packets; they are counted and the held ones go out at commit', async () => {
    lab = createLab('routed', { ipv6: false });
    const l = lab;
    await l.startTraffic();
    // Each datagram is 20 (IP) + 8 (UDP) + 5 bytes = 33 bytes: three fit in 100.
    const layer = track(
      createCheckpointDevices({ ops: [nicNfqueue({ maxBytes: 100 })], devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } }] }),
    );
    await layer.setup();
    const sent = ['byt-1', 'byt-2', 'byt-3', 'byt-4', 'byt-5'];
    await l.send(sent);
    await waitFor(() => layer.stats()[0]!.stats.capDropped === 2, 10_000, 'two packets dropped at the byte cap');
    expect(held(l)).toBe(3);
    await checkpoint(layer);
    await l.receiver!.waitFor((x) => x.filter((s) => s.startsWith('rx ')).length >= 3, 10_000, 'the three held packets');
    await new Promise((r) => setTimeout(r, 150));
    expect(l.received()).toEqual(sent.slice(0, 3));
    expect(layer.stats()[0]!.stats).toMatchObject({ released: 3, releasedBytes: 99, capDropped: 2, dropped: 2, heldBytes: 0 });
  });
});

describe('nic-nfqueue bursts (netns)', () => {
  it('a burst of 1000 small packets in one epoch is held whole and released complete and in order', async () => {
    lab = createLab('routed', { ipv6: false });
    const l = lab;
    await l.startTraffic();
    const layer = track(createCheckpointDevices({ ops: [nicNfqueue()], devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } }] }));
    await layer.setup();
    const sent = Array.from({ length: 1000 }, (_, i) => `burst-${i + 1}`);
    await l.send(sent);
    await waitFor(() => held(l) === 1000, 10_000, '1000 packets held');
    await new Promise((r) => setTimeout(r, 150));
    expect(l.received()).toEqual([]);
    await checkpoint(layer);
    await l.receiver!.waitFor(() => l.received().length >= 1000, 10_000, 'the burst after commit');
    expect(l.received()).toEqual(sent);
    expect(layer.stats()[0]!.stats).toMatchObject({ released: 1000, dropped: 0, held: 0 });
  });
});

describe('nic-nfqueue queue numbers (netns)', () => {
  it('concurrent operations in one namespace get distinct queues, and a number a leftover rule uses is skipped', async () => {
    lab = createLab('routed');
    const l = lab;
    // A second guest NIC, and a stale rule (as a crashed run might leave) that references the first queue number.
    const vif2 = `${l.vif.slice(0, -1)}w`;
    sh('ip', ['link', 'add', `${l.vif.slice(0, -1)}x`, 'netns', l.guest, 'type', 'veth', 'peer', 'name', vif2, 'netns', l.host]);
    sh('ip', ['netns', 'exec', l.host, 'iptables', '-t', 'mangle', '-A', 'FORWARD', '-i', 'nowhere0', '-j', 'NFQUEUE', '--queue-num', '47100']);
    const opsA = nicNfqueue();
    const opsB = nicNfqueue();
    const a = track(createCheckpointDevices({ ops: [opsA], devices: [{ id: 'a', kind: 'nic', params: { ifname: l.vif, netns: l.host } }] }));
    const b = track(createCheckpointDevices({ ops: [opsB], devices: [{ id: 'b', kind: 'nic', params: { ifname: vif2, netns: l.host } }] }));
    await Promise.all([a.setup(), b.setup()]);
    const qa = a.stats()[0]!.stats.queue;
    const qb = b.stats()[0]!.stats.queue;
    expect(qa).not.toBe(qb);
    expect([qa, qb]).not.toContain(47100);
    expect(boundQueues(l.host).map((x) => Number(x.split(/\s+/)[0])).sort()).toEqual([qa, qb].sort());
    await checkpoint(a);
    await checkpoint(b);
    await Promise.all([a.teardown(), b.teardown()]);
    expect(leftovers(l)).toEqual([]);
  });
});

describe('nic-nfqueue modes (netns)', () => {
  it('auto mode queues a bridge port by physdev and a routed interface by input interface; bridged on a routed port is an error', async () => {
    lab = createLab('bridged', { ipv6: false });
    const l = lab;
    const bridged = track(createCheckpointDevices({ ops: [nicNfqueue()], devices: [{ id: 'br', kind: 'nic', params: { ifname: l.vif, netns: l.host } }] }));
    await bridged.setup();
    const rules = remusRules(l.host);
    expect(rules).toHaveLength(2);
    expect(rules.every((r) => r.includes(`--physdev-in ${l.vif}`))).toBe(true);
    // The bridge device itself is no bridge port: routed, it is matched by input interface; bridged is an error.
    const routed = track(
      createCheckpointDevices({ ops: [nicNfqueue()], devices: [{ id: 'rt', kind: 'nic', params: { ifname: l.bridge!, netns: l.host, mode: 'routed' } }] }),
    );
    await routed.setup();
    expect(remusRules(l.host).filter((r) => r.includes(`-i ${l.bridge!} `))).toHaveLength(2);
    const wrong = createCheckpointDevices({
      ops: [nicNfqueue()],
      devices: [{ id: 'x', kind: 'nic', params: { ifname: l.bridge!, netns: l.host, mode: 'bridged' } }],
    });
    await expect(wrong.setup()).rejects.toSatisfy((e: { failures?: { code: string; message: string }[] }) =>
      (e.failures ?? []).some((f) => /not a bridge port/.test(f.message + String((f as { cause?: Error }).cause?.message))),
    );
    await routed.teardown();
    await bridged.teardown();
    expect(leftovers(l)).toEqual([]);
  });
});
