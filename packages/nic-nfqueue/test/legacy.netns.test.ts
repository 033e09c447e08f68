/**
 * The same output commit with the legacy iptables backend (needs root and
 * network namespaces): rules are found, released and removed the same way
 * whichever backend the host's firewall uses.
 */
import { createCheckpointDevices, type CheckpointDevices } from '@remus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { nicNfqueue } from '../src/index.js';
import { createLab, killStrayBufferProcesses, leftovers, remusRules, type Lab } from './netns-lab.js';
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

describe('nic-nfqueue with iptables-legacy (netns)', () => {
  it('holds an epoch until its commit and removes its legacy rules at teardown (bridged)', async () => {
    lab = createLab('bridged');
    const l = lab;
    await l.startTraffic();
    layer = createCheckpointDevices({
      ops: [nicNfqueue({ iptables: 'iptables-legacy', ip6tables: 'ip6tables-legacy' })],
      devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } }],
    });
    await layer.setup();
    expect(remusRules(l.host).filter((r) => r.includes('legacy'))).toHaveLength(2);
    await l.send(['lg-1', 'lg-2']);
    await l.send(['lg-v6-1'], l.clientV6);
    await waitFor(() => [...l.queueTotals().values()].some((n) => n >= 3), 10_000, 'three packets held');
    await new Promise((r) => setTimeout(r, 150));
    expect(l.received()).toEqual([]);
    await layer.postsuspend();
    await layer.preresume();
    await layer.commit();
    await l.receiver!.waitFor(() => l.received().length >= 3, 10_000, 'the epoch after its commit');
    expect([...l.received()].sort()).toEqual(['lg-1', 'lg-2', 'lg-v6-1']);
    await layer.teardown();
    layer = undefined;
    expect(leftovers(l)).toEqual([]);
  });

  it('reap with default options finds and removes rules a legacy-configured run left', async () => {
    lab = createLab('routed');
    const l = lab;
    const device = { id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } };
    layer = createCheckpointDevices({ ops: [nicNfqueue({ iptables: 'iptables-legacy', ip6tables: 'ip6tables-legacy' })], devices: [device] });
    await layer.setup();
    // The "crash": the buffer process dies, the rules stay.
    process.kill(layer.stats()[0]!.stats.bufferPid!, 'SIGKILL');
    const removed = await nicNfqueue().reap!(layer.operationId, [device], { signal: new AbortController().signal, checkpoint: 0, epoch: 0, operation: 'reaper' });
    expect(removed).toHaveLength(2);
    expect(removed.every((r) => r.includes('legacy'))).toBe(true);
    expect(remusRules(l.host)).toEqual([]);
    await layer.teardown();
    layer = undefined;
    expect(leftovers(l)).toEqual([]);
  });
});
