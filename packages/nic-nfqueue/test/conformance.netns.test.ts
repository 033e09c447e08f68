/**
 * The core's conformance kit on real routed and bridged labs (needs root and
 * network namespaces): lifecycle through the engine, teardown twice,
 * teardown after no or an aborted setup, reap after a "crash", cleanup right
 * after init, a foreign device declined, and nothing left behind (rules,
 * bound queues, buffer processes).
 */
import { describeSubkindConformance } from '@remus/core/testing';
import { nicNfqueue } from '../src/index.js';
import { createLab, killStrayBufferProcesses, leftovers, type Lab, type Topology } from './netns-lab.js';

for (const topology of ['routed', 'bridged'] as const satisfies readonly Topology[]) {
  let lab: Lab | undefined;
  describeSubkindConformance({
    title: `subkind conformance: nic-nfqueue, ${topology} (netns)`,
    make: () => nicNfqueue(),
    beforeEach: () => {
      lab = createLab(topology);
    },
    afterEach: () => {
      killStrayBufferProcesses();
      lab?.destroy();
      lab = undefined;
    },
    device: () => ({ id: 'vif1.0', kind: 'nic', params: { ifname: lab!.vif, netns: lab!.host } }),
    // A NIC the config says not to buffer (e.g. a QEMU user-mode NIC) is not this subkind's. (Without
    // `ifname` a NIC is no longer foreign: like nic-netbuf, the device id is the interface, #12.3.)
    foreignDevice: () => ({ id: 'slirp0', kind: 'nic', params: { buffer: false } }),
    leftovers: () => leftovers(lab!),
    checkpoints: 3,
  });
}
