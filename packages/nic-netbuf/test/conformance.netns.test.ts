/**
 * The core's conformance kit against nic-netbuf, in network namespaces on
 * this machine's kernel (needs root). No sch_plug here: the stand-in qdisc
 * takes the plug's place; lab.test.ts proves the plug itself. The reap test
 * runs the built plugin in a child that the kit SIGKILLs (test/fixtures/kit-crash.mjs).
 */
import { describeSubkindConformance } from '@remus/core/testing';
import { createNetbuf } from '../src/subkinds.js';
import { standIn } from './fixtures/stand-in.mjs';
import { leftovers, makeNet, nicDevice, type TestNet } from './helpers.js';

let net: TestNet | undefined;
const lockName = `remus-nic-netbuf-kit-${process.pid}`;
process.env.REMUS_NETBUF_KIT_LOCK = lockName;

describeSubkindConformance({
  title: 'nic-netbuf conformance (namespaces, stand-in qdisc)',
  make: () => createNetbuf({ lockName }, { qdisc: standIn(['bfifo', 'limit', '100000']) }),
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
  crash: { module: new URL('./fixtures/kit-crash.mjs', import.meta.url), export: 'makeKitNetbuf' },
});
