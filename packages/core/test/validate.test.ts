// Time and count limits Node can hold; devices' params checked before anything is touched.
import { describe, expect, it } from 'vitest';
import {
  MAX_TIMER_MS,
  RemusError,
  checkDevices,
  createCheckpointDevices,
  validateCount,
  validateDuration,
  validateOpsList,
  type SubkindOps,
} from '../src/index.js';

describe('durations and counts', () => {
  it('accepts what Node timers hold and refuses the rest naming the value and the range', () => {
    expect(validateDuration(MAX_TIMER_MS, 't')).toBe(MAX_TIMER_MS);
    expect(validateDuration(0.5, 't')).toBe(0.5);
    for (const bad of [3e9, -1, Number.NaN, Infinity, '100', null]) {
      expect(() => validateDuration(bad, 'intervalMs')).toThrow(/intervalMs .* from 0 to 2147483647/);
    }
    expect(validateCount(3, 'n')).toBe(3);
    for (const bad of [1.5, 0, '0x3', 2 ** 60, Number.NaN]) expect(() => validateCount(bad, '--checkpoints')).toThrow(/--checkpoints/);
  });
  it("a subkind's timeouts are checked with the op named", () => {
    const ops = (timeouts: unknown) => [{ name: 's', kind: 'nic', setup() {}, teardown() {}, timeouts } as unknown as SubkindOps];
    expect(() => validateOpsList(ops({ setup: 60_000 }))).not.toThrow();
    expect(() => validateOpsList(ops({ setup: 3e9 }))).toThrow(/subkind s: timeouts.setup/);
    expect(() => validateOpsList(ops({ setpu: 10 }))).toThrow(/did you mean "setup"/);
  });
  it('the layer refuses timeouts Node cannot hold', () => {
    expect(() => createCheckpointDevices({ ops: [], devices: [], timeouts: { commit: 3e9 } })).toThrow(/timeouts.commit/);
  });
});

describe('checkDevices', () => {
  const nicA: SubkindOps = {
    name: 'nic-a',
    kind: 'nic',
    params: ['ifname', 'netns'],
    checkParams(d) {
      const ifname = d.params?.['ifname'];
      if (ifname !== undefined && typeof ifname !== 'string') throw new RemusError('INVALID_ARGUMENT', `param ifname must be a string`);
    },
    setup() {},
    teardown() {},
  };
  const nicB: SubkindOps = { name: 'nic-b', kind: 'nic', params: ['ifname', 'queue'], setup() {}, teardown() {} };
  const disk: SubkindOps = { name: 'disk-x', kind: 'disk', setup() {}, teardown() {} };

  it('reports every problem at once, with the closest known name', () => {
    const problems = checkDevices(
      [nicA, nicB, disk],
      [
        { id: 'n0', kind: 'nic', params: { ifnmae: 'eth0', queue: 1 } },
        { id: 'n1', kind: 'nic', params: { ifname: 5 } },
        { id: 'd0', kind: 'disk', params: { anything: 1 } }, // disk-x declares no params: not checked
        { id: 'x0', kind: 'nci' },
      ],
      { kinds: true },
    );
    expect(problems.map((p) => [p.code, p.device])).toEqual([
      ['INVALID_ARGUMENT', 'n0'],
      ['INVALID_ARGUMENT', 'n1'],
      ['DEVICE_NOT_SUPPORTED', 'x0'],
    ]);
    expect(problems[0]!.message).toContain('did you mean "ifname"');
    expect(problems[1]!.message).toContain('ifname must be a string');
    expect(problems[1]!.subkind).toBe('nic-a');
    expect(problems[2]!.message).toContain('did you mean "nic"');
  });
  it('the layer refuses bad params when it is created, before any op runs', () => {
    let setups = 0;
    const counting = { ...nicA, setup: () => void setups++ };
    expect(() => createCheckpointDevices({ ops: [counting], devices: [{ id: 'n0', kind: 'nic', params: { ifnmae: 'x' } }] })).toThrow(
      /did you mean "ifname"/,
    );
    expect(setups).toBe(0);
  });
});

describe('checkOptionNames', () => {
  it('refuses misspelt options naming the closest known one, and non-objects', async () => {
    const { checkOptionNames } = await import('../src/index.js');
    expect(() => checkOptionNames({ limitBytes: 1 }, ['limitBytes', 'script'], 'nic-x')).not.toThrow();
    expect(() => checkOptionNames(undefined, ['a'], 'nic-x')).not.toThrow();
    expect(() => checkOptionNames({ limtBytes: 1, scrpt: '/x' }, ['limitBytes', 'script'], 'nic-x')).toThrow(
      /nic-x: unknown options "limtBytes" \(did you mean "limitBytes"\?\), "scrpt" \(did you mean "script"\?\)/,
    );
    expect(() => checkOptionNames([], ['a'], 'nic-x')).toThrow(/must be an object/);
  });
});
