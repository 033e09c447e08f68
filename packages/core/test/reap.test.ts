// Crash recovery through the engine: each subkind's reap, bounded, with events and wrapped errors.
import { describe, expect, it } from 'vitest';
import { RemusError, reapDevices, type OpEvent, type SubkindOps } from '../src/index.js';

const base = { kind: 'nic', setup() {}, teardown() {} };
const dev = (id: string) => ({ id, kind: 'nic', params: {} });

describe('reapDevices', () => {
  it("runs each named subkind's reap once with its devices, and reports lines, errors and events", async () => {
    const seen: [string, string, string[]][] = [];
    const events: OpEvent[] = [];
    const ops: SubkindOps[] = [
      { ...base, name: 'a', reap: (op, devices) => (seen.push(['a', op, devices.map((d) => d.id)]), [`removed ifb of ${op}`]) },
      { ...base, name: 'b', reap: () => { throw new Error('tc refused'); } },
      { ...base, name: 'c' }, // no reap: skipped
      { ...base, name: 'slow', timeouts: { reap: 30 }, reap: () => new Promise(() => undefined) },
    ];
    const r = await reapDevices(
      ops,
      'r0123',
      [
        { device: dev('n1'), subkind: 'a' },
        { device: dev('n2'), subkind: 'a' },
        { device: dev('n3'), subkind: 'b' },
        { device: dev('n4'), subkind: 'c' },
        { device: dev('n5'), subkind: 'slow' },
        { device: dev('n6'), subkind: 'gone' },
      ],
      { onEvent: (e) => events.push(e) },
    );
    expect(seen).toEqual([['a', 'r0123', ['n1', 'n2']]]);
    expect(r.removed).toEqual([{ subkind: 'a', lines: ['removed ifb of r0123'] }]);
    expect(r.errors.map((e) => [e.code, e.subkind, e.op])).toEqual([
      ['OP_FAILED', 'b', 'reap'],
      ['TIMEOUT', 'slow', 'reap'],
    ]);
    expect(r.errors[0]!.message).toContain('tc refused');
    expect(r.unknownSubkinds).toEqual(['gone']);
    expect(events.filter((e) => e.type === 'op-end').map((e) => [e.subkind, e.op, e.outcome])).toEqual(
      expect.arrayContaining([
        ['a', 'reap', 'ok'],
        ['b', 'reap', 'error'],
        ['slow', 'reap', 'timeout'],
      ]),
    );
  });
  it('a reap that returns something other than lines is an error; a bad operation id is refused', async () => {
    const ops: SubkindOps[] = [{ ...base, name: 'a', reap: () => 'not lines' as never }];
    const r = await reapDevices(ops, 'r1', [{ device: dev('n1'), subkind: 'a' }]);
    expect(r.errors[0]!.message).toContain('array of strings');
    await expect(reapDevices(ops, '../etc', [])).rejects.toBeInstanceOf(RemusError);
  });
});
