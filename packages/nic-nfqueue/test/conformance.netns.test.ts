/**
 * The core's conformance kit on a real routed lab (needs root and network
 * namespaces): lifecycle through the engine, teardown twice, teardown after
 * no or an aborted setup, cleanup right after init, a foreign device
 * declined, and nothing left behind (rules, bound queues, buffer processes).
 */
import { describeSubkindConformance } from '@remus/core/testing';
import { nicNfqueue } from '../src/index.js';
import { createLab, killStrayBufferProcesses, leftovers, type Lab } from './netns-lab.js';

let lab: Lab | undefined;

describeSubkindConformance({
  title: 'subkind conformance: nic-nfqueue (netns)',
  make: () => nicNfqueue(),
  beforeEach: () => {
    lab = createLab('routed');
  },
  afterEach: () => {
    killStrayBufferProcesses();
    lab?.destroy();
    lab = undefined;
  },
  device: () => ({ id: 'vif1.0', kind: 'nic', params: { ifname: lab!.vif, netns: lab!.host } }),
  // A NIC without a host-side interface (e.g. a QEMU user-mode NIC) is not this subkind's.
  foreignDevice: () => ({ id: 'slirp0', kind: 'nic', params: {} }),
  leftovers: () => leftovers(lab!),
  checkpoints: 3,
});
