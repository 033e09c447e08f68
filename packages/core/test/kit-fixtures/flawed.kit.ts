// Run by conformance-detects.test.ts in a child vitest: the kit on a subkind with the flaw named in REMUS_FLAW.
import { describeSubkindConformance } from '../../src/testing/index.js';
import { memorySubkind, objects, type Flaw } from '../memory-subkind.js';

describeSubkindConformance({
  title: `flawed: ${process.env['REMUS_FLAW']}`,
  make: () => memorySubkind([process.env['REMUS_FLAW'] as Flaw]),
  device: () => ({ id: 'vif1.0', kind: 'nic' }),
  leftovers: () => [...objects.keys()],
  afterEach: () => objects.clear(),
});
