// Run by conformance-detects.test.ts in a child vitest: the kit on the subkind named in REMUS_KIT_CASE,
// either the in-memory one with one flaw, or one of the correct subkinds the kit must not flag.
import { readdirSync } from 'node:fs';
import { RemusError } from '../../src/index.js';
import { describeSubkindConformance, type ConformanceOptions } from '../../src/testing/index.js';
import { memorySubkind, objects, type Flaw } from '../memory-subkind.js';
import { lockDir, lockSubkind } from './lock-subkind.mjs';

const kase = process.env['REMUS_KIT_CASE'] ?? '';
const memory: Omit<ConformanceOptions, 'make'> = {
  device: () => ({ id: 'vif1.0', kind: 'nic', params: { mem: 1 } }),
  leftovers: () => [...objects.keys()],
  afterEach: () => objects.clear(),
};

const cases: Record<string, ConformanceOptions> = {
  // A correct subkind that declares postsuspend's limit (1 500 ms) above the kit's own (100 ms) and takes 300 ms.
  'declared-timeouts': { ...memory, make: () => memorySubkind([], { slowPostsuspendMs: 300 }), timeoutMs: 100, checkpoints: 2 },
  // A correct subkind whose device handle (a listening socket) only a real crash closes.
  'holds-handles': {
    make: () => lockSubkind(),
    device: () => ({ id: 'vif1.0', kind: 'nic' }),
    leftovers: () => readdirSync(lockDir()),
    crash: { module: new URL('./lock-subkind.mjs', import.meta.url), export: 'lockSubkind' },
  },
  // A match that throws for a param-less device, behind a checkParams that refuses such a device first
  // (the core never calls match for it): the kit's default foreign device must not flag it.
  'checkparams-refuses-foreign': {
    ...memory,
    make: () => ({
      ...memorySubkind(['match-throws-foreign']),
      checkParams: (d) => {
        if (d.params?.['mem'] === undefined) throw new RemusError('INVALID_ARGUMENT', `device ${d.id}: params.mem is required`);
      },
    }),
  },
  // The same without `crash`: the in-process stand-in leaves the handle open.
  'holds-handles-in-process': { make: () => lockSubkind(), device: () => ({ id: 'vif1.0', kind: 'nic' }), leftovers: () => readdirSync(lockDir()) },
};

describeSubkindConformance({ title: `case: ${kase}`, ...(cases[kase] ?? { ...memory, make: () => memorySubkind([kase as Flaw]) }) });
