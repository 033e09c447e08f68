/**
 * The core's conformance kit against nic-netbuf, in network namespaces on
 * this machine's kernel (needs root). No sch_plug here: the stand-in qdisc
 * takes the plug's place; lab.test.ts proves the plug itself.
 */
import { describeSubkindConformance } from '@remus/core/testing';
import { createNetbuf } from '../src/subkinds.js';
import { standIn } from './fixtures/stand-in.mjs';
import { leftovers, makeNet, nicDevice, type TestNet } from './helpers.js';

let net: TestNet | undefined;

describeSubkindConformance({
  title: 'nic-netbuf conformance (namespaces, stand-in qdisc)',
  make: () => createNetbuf({ lockName: `remus-nic-netbuf-kit-${process.pid}` }, { qdisc: standIn(['bfifo', 'limit', '100000']) }),
  device: () => nicDevice(net!),
  foreignDevice: () => ({ id: 'not-buffered', kind: 'nic', params: { ifname: 'vh0', netns: net!.host, buffer: false } }),
  beforeEach: () => {
    net = makeNet(1);
  },
  afterEach: () => {
    net?.destroy();
    net = undefined;
  },
  leftovers: () => leftovers(net!),
  checkpoints: 5,
});
