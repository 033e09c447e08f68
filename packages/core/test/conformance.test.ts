// The conformance kit, run against a well-behaved in-memory subkind: with a
// foreign device given, and with the kit's default foreign device.
import { describeSubkindConformance } from '../src/testing/index.js';
import { memorySubkind, objects } from './memory-subkind.js';

describeSubkindConformance({
  title: 'conformance kit on a correct in-memory subkind',
  make: () => memorySubkind(),
  device: () => ({ id: 'vif1.0', kind: 'nic' }),
  foreignDevice: () => ({ id: 'eth9', kind: 'nic', params: { foreign: true } }),
  leftovers: () => [...objects.keys()],
  afterEach: () => objects.clear(),
});

describeSubkindConformance({
  title: 'conformance kit on a correct in-memory subkind, default foreign device',
  make: () => memorySubkind(),
  device: () => ({ id: 'vif1.0', kind: 'nic' }),
  leftovers: () => [...objects.keys()],
  afterEach: () => objects.clear(),
});
