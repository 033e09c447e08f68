// One named test per invariant of ../shared/design/device-layer.md.
import { describe, expect, it, vi } from 'vitest';
import {
  createCheckpointDevices,
  isRemusError,
  RemusError,
  type OpEvent,
  type SubkindOps,
} from '../src/index.js';
import { fakeSubkind, newWorld, nics } from './fakes.js';

async function rejection(p: Promise<unknown>): Promise<RemusError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(RemusError);
    return e as RemusError;
  }
  throw new Error('expected a rejection');
}

async function checkpoint(layer: ReturnType<typeof createCheckpointDevices>): Promise<void> {
  await layer.postsuspend();
  await layer.preresume();
  await layer.commit();
}

describe('invariant 1: completion exactly once', () => {
  it('setup settles once after every device settled, also with sync throws and late rejections', async () => {
    const world = newWorld();
    const onUnhandled = vi.fn();
    process.on('unhandledRejection', onUnhandled);
    const ops = fakeSubkind(world, {
      name: 'a',
      faults: [
        { op: 'setup', how: 'throw', devices: ['nic0'] },
        { op: 'setup', how: 'late-reject', devices: ['nic1'] },
      ],
      timeouts: { setup: 50 },
    });
    const layer = createCheckpointDevices({ ops: [ops], devices: nics(3) });
    const settled = vi.fn();
    const err = await rejection(layer.setup().finally(settled));
    expect(settled).toHaveBeenCalledTimes(1);
    expect(err.failures.map((f) => [f.device, f.code])).toEqual([
      ['nic0', 'OP_FAILED'],
      ['nic1', 'TIMEOUT'],
    ]);
    await new Promise((r) => setTimeout(r, 400)); // the late rejection fires after the phase
    expect(onUnhandled).not.toHaveBeenCalled();
    expect(settled).toHaveBeenCalledTimes(1);
    process.off('unhandledRejection', onUnhandled);
  });

  it('a checkpoint phase with synchronous ops does not complete before its last device', async () => {
    const order: string[] = [];
    const ops: SubkindOps = {
      name: 'sync',
      kind: 'nic',
      setup: () => undefined,
      teardown: () => undefined,
      postsuspend: (h) => void order.push(h.device.id),
    };
    const layer = createCheckpointDevices({ ops: [ops], devices: nics(5) });
    await layer.setup();
    await layer.postsuspend().then(() => order.push('done'));
    expect(order).toEqual(['nic0', 'nic1', 'nic2', 'nic3', 'nic4', 'done']);
    await layer.preresume();
    await layer.commit();
    await layer.teardown();
  });
});

describe('invariant 2: zero devices', () => {
  it('every phase settles at once with success and no subkind is initialised', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({ ops: [fakeSubkind(world, { name: 'a' })], devices: [] });
    await layer.setup();
    await checkpoint(layer);
    await layer.teardown();
    expect(world.calls).toEqual([]);
    expect(layer.state).toBe('torn-down');
  });
});

describe('invariant 3: match order', () => {
  it('the first subkind of the right kind that says yes takes the device; other kinds are never asked', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [
        fakeSubkind(world, { name: 'disk-x', kind: 'disk' }),
        fakeSubkind(world, { name: 'first', decline: ['nic0'] }),
        fakeSubkind(world, { name: 'second' }),
        fakeSubkind(world, { name: 'third' }),
      ],
      devices: nics(2),
    });
    await layer.setup();
    expect(layer.assignments().map((a) => [a.device, a.subkind])).toEqual([
      ['nic0', 'second'],
      ['nic1', 'first'],
    ]);
    expect(layer.assignments()[0]!.declined).toEqual([{ subkind: 'first', reason: 'first declines nic0' }]);
    expect(world.calls.some((c) => c.startsWith('disk-x'))).toBe(false);
    expect(world.calls.some((c) => c.startsWith('third'))).toBe(false); // lazy init: never reached
    await layer.teardown();
  });

  it('a device no subkind takes fails with DEVICE_NOT_SUPPORTED naming the device and the subkinds tried', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', decline: ['nic1'] }), fakeSubkind(world, { name: 'b', decline: ['nic1'] })],
      devices: nics(2),
    });
    const err = await rejection(layer.setup());
    expect(err.code).toBe('PHASE_FAILED');
    expect(err.failures).toHaveLength(1);
    const f = err.failures[0]!;
    expect(f.code).toBe('DEVICE_NOT_SUPPORTED');
    expect(f.device).toBe('nic1');
    expect(f.message).toContain('a (a declines nic1)');
    expect(f.message).toContain('b (b declines nic1)');
    expect(world.resources.size).toBe(0);
  });

  it('a device whose kind has no subkind at all is DEVICE_NOT_SUPPORTED with the kinds present', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({ ops: [fakeSubkind(world, { name: 'a' })], devices: [{ id: 'xvda', kind: 'disk' }] });
    const err = await rejection(layer.setup());
    expect(err.failures[0]!.code).toBe('DEVICE_NOT_SUPPORTED');
    expect(err.failures[0]!.message).toContain('no subkind of kind "disk"');
  });

  it('a match that throws is a failure, never read as "not mine"', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', faults: [{ op: 'match', how: 'throw', devices: ['nic0'] }] }), fakeSubkind(world, { name: 'b' })],
      devices: nics(1),
    });
    const err = await rejection(layer.setup());
    expect(err.failures.map((f) => [f.device, f.subkind, f.op, f.code])).toEqual([['nic0', 'a', 'match', 'OP_FAILED']]);
    expect(world.calls.filter((c) => c.startsWith('b:match'))).toEqual([]);
  });
});

describe('invariant 4: a failed setup leaves nothing behind', () => {
  it('the others finish, every matched device is torn down (also the failed one), every initialised subkind cleaned up', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', faults: [{ op: 'setup', how: 'reject', devices: ['nic1'] }] })],
      devices: nics(3),
    });
    await rejection(layer.setup());
    expect(world.calls.filter((c) => c.includes(':setup:'))).toHaveLength(3);
    expect(world.calls.filter((c) => c.includes(':teardown:')).sort()).toEqual(['a:teardown:nic0', 'a:teardown:nic1', 'a:teardown:nic2']);
    expect(world.calls.at(-1)).toBe('a:cleanup:-');
    expect(world.resources.size).toBe(0);
    expect(layer.state).toBe('torn-down');
    await layer.teardown(); // nothing left for the caller: a no-op
  });
});

describe('invariant 5: errors are never lost', () => {
  it('one error lists every device failure with device, subkind, op, code and cause, in device order', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [
        fakeSubkind(world, {
          name: 'a',
          faults: [
            { op: 'setup', how: 'hang', devices: ['nic3'] },
            { op: 'setup', how: 'throw', devices: ['nic0'] },
            { op: 'setup', how: 'reject', devices: ['nic2'] },
          ],
          timeouts: { setup: 30 },
        }),
      ],
      devices: nics(4),
    });
    const err = await rejection(layer.setup());
    expect(err.failures.map((f) => [f.device, f.subkind, f.op, f.code])).toEqual([
      ['nic0', 'a', 'setup', 'OP_FAILED'],
      ['nic2', 'a', 'setup', 'OP_FAILED'],
      ['nic3', 'a', 'setup', 'TIMEOUT'],
    ]);
    expect((err.failures[0]!.cause as Error).message).toBe('injected throw in setup of nic0');
    for (const id of ['nic0', 'nic2', 'nic3']) expect(err.message).toContain(id);
  });

  it('teardown failures after a failed setup are listed after the setup failures', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', faults: [{ op: 'setup', how: 'throw', devices: ['nic0'] }, { op: 'teardown', how: 'throw', devices: ['nic1'] }] })],
      devices: nics(2),
    });
    const err = await rejection(layer.setup());
    expect(err.failures.map((f) => [f.device, f.op])).toEqual([
      ['nic0', 'setup'],
      ['nic1', 'teardown'],
    ]);
  });
});

describe('invariant 6: checkpoint phases only between setup and teardown, in order', () => {
  it('a checkpoint op before setup is a STATE error, not a hang', async () => {
    const layer = createCheckpointDevices({ ops: [fakeSubkind(newWorld(), { name: 'a' })], devices: nics(1) });
    expect((await rejection(layer.commit())).code).toBe('STATE');
  });

  it('out-of-order and concurrent phases are STATE errors', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({ ops: [fakeSubkind(world, { name: 'a', delayMs: 20 })], devices: nics(2) });
    await layer.setup();
    expect((await rejection(layer.commit())).code).toBe('STATE');
    const p = layer.postsuspend();
    expect((await rejection(layer.postsuspend())).code).toBe('STATE');
    await p;
    expect((await rejection(layer.postsuspend())).code).toBe('STATE');
    await layer.preresume();
    await layer.commit();
    await layer.teardown();
    expect((await rejection(layer.postsuspend())).code).toBe('STATE');
    expect(world.calls.filter((c) => c.includes(':postsuspend:'))).toHaveLength(2);
  });

  it('checkpoint ops run in the order postsuspend, preresume, commit and absent ops are no-ops', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', omit: ['preresume'] })],
      devices: nics(1),
    });
    await layer.setup();
    await checkpoint(layer);
    await checkpoint(layer);
    await layer.teardown();
    expect(world.calls.filter((c) => /postsuspend|preresume|commit/.test(c))).toEqual([
      'a:postsuspend:nic0',
      'a:commit:nic0',
      'a:postsuspend:nic0',
      'a:commit:nic0',
    ]);
    expect(layer.checkpoint).toBe(2);
  });

  it('after a failed checkpoint phase only teardown is allowed', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', faults: [{ op: 'postsuspend', how: 'reject', devices: ['nic1'] }] })],
      devices: nics(2),
    });
    await layer.setup();
    const err = await rejection(layer.postsuspend());
    expect(err.failures.map((f) => [f.device, f.op, f.code])).toEqual([['nic1', 'postsuspend', 'OP_FAILED']]);
    expect(layer.state).toBe('failed');
    expect((await rejection(layer.preresume())).code).toBe('STATE');
    await layer.teardown();
    expect(world.resources.size).toBe(0);
  });
});

describe('invariant 7: teardown', () => {
  it('runs for every matched device even after failed phases, collects every error, then cleans up; a second call is a no-op', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [
        fakeSubkind(world, { name: 'a', faults: [{ op: 'teardown', how: 'throw', devices: ['nic0'] }, { op: 'commit', how: 'throw' }] }),
        fakeSubkind(world, { name: 'b', kind: 'disk', faults: [{ op: 'teardown', how: 'reject' }] }),
      ],
      devices: [...nics(2), { id: 'xvda', kind: 'disk' }],
    });
    await layer.setup();
    await layer.postsuspend();
    await layer.preresume();
    await rejection(layer.commit());
    const err = await rejection(layer.teardown());
    expect(err.failures.map((f) => [f.device, f.subkind, f.op])).toEqual([
      ['nic0', 'a', 'teardown'],
      ['xvda', 'b', 'teardown'],
    ]);
    expect(world.calls.filter((c) => c.includes(':teardown:')).sort()).toEqual(['a:teardown:nic0', 'a:teardown:nic1', 'b:teardown:xvda']);
    expect(world.calls.filter((c) => c.includes(':cleanup:')).sort()).toEqual(['a:cleanup:-', 'b:cleanup:-']);
    const before = world.calls.length;
    await layer.teardown();
    expect(world.calls.length).toBe(before);
  });

  it('a cleanup that throws is reported and the other cleanups still run', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', faults: [{ op: 'cleanup', how: 'throw' }] }), fakeSubkind(world, { name: 'b', kind: 'disk' })],
      devices: [...nics(1), { id: 'xvda', kind: 'disk' }],
    });
    await layer.setup();
    const err = await rejection(layer.teardown());
    expect(err.failures.map((f) => [f.subkind, f.op, f.device])).toEqual([['a', 'cleanup', undefined]]);
    expect(world.calls).toContain('b:cleanup:-');
  });

  it('teardown before setup touches nothing', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({ ops: [fakeSubkind(world, { name: 'a' })], devices: nics(2) });
    await layer.teardown();
    expect(world.calls).toEqual([]);
    expect((await rejection(layer.setup())).code).toBe('STATE');
  });
});

describe('invariant 8: time', () => {
  it('a hung op becomes TIMEOUT, its signal fires, and teardown still runs', async () => {
    const world = newWorld();
    let seen: AbortSignal | undefined;
    const base = fakeSubkind(world, { name: 'a' });
    const ops: SubkindOps = {
      ...base,
      timeouts: { preresume: 40 },
      preresume: (_h, ctx) => {
        seen = ctx.signal;
        return new Promise(() => undefined);
      },
    };
    const layer = createCheckpointDevices({ ops: [ops], devices: nics(1) });
    await layer.setup();
    await layer.postsuspend();
    const err = await rejection(layer.preresume());
    expect(err.failures[0]!.code).toBe('TIMEOUT');
    expect(seen?.aborted).toBe(true);
    expect(isRemusError(seen?.reason, 'TIMEOUT')).toBe(true);
    await layer.teardown();
    expect(world.calls).toContain('a:teardown:nic0');
  });

  it('the caller can abort the whole operation; pending ops settle ABORTED and teardown still runs', async () => {
    const world = newWorld();
    const ac = new AbortController();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', faults: [{ op: 'setup', how: 'hang', devices: ['nic1'] }] })],
      devices: nics(2),
      signal: ac.signal,
    });
    const p = layer.setup();
    setTimeout(() => ac.abort(new Error('operator pressed ^C')), 20);
    const err = await rejection(p);
    expect(err.failures.map((f) => [f.device, f.code])).toEqual([['nic1', 'ABORTED']]);
    expect(world.calls.filter((c) => c.includes(':teardown:')).sort()).toEqual(['a:teardown:nic0', 'a:teardown:nic1']);
    expect(world.resources.size).toBe(0);
  });

  it('per-op timeouts come from the subkind, then the caller, then the defaults', async () => {
    const world = newWorld();
    const hang = fakeSubkind(world, { name: 'a', faults: [{ op: 'commit', how: 'hang' }], timeouts: { commit: 30 } });
    const slow = fakeSubkind(world, { name: 'b', kind: 'disk', faults: [{ op: 'commit', how: 'hang' }] });
    const layer = createCheckpointDevices({
      ops: [hang, slow],
      devices: [...nics(1), { id: 'xvda', kind: 'disk' }],
      timeouts: { commit: 120 },
    });
    await layer.setup();
    await layer.postsuspend();
    await layer.preresume();
    const err = await rejection(layer.commit());
    expect(err.failures.map((f) => [f.device, f.code, f.details['timeoutMs']])).toEqual([
      ['nic0', 'TIMEOUT', 30],
      ['xvda', 'TIMEOUT', 120],
    ]);
    await layer.teardown();
  });
});

describe('invariant 9: observability', () => {
  it('every op start and end is reported with device, subkind, op, duration and outcome', async () => {
    const world = newWorld();
    const events: OpEvent[] = [];
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', faults: [{ op: 'commit', how: 'throw', devices: ['nic1'] }] })],
      devices: nics(2),
      onEvent: (e) => events.push(e),
    });
    await layer.setup();
    await layer.postsuspend();
    await layer.preresume();
    await rejection(layer.commit());
    await layer.teardown();
    const ends = events.filter((e) => e.type === 'op-end');
    const starts = events.filter((e) => e.type === 'op-start');
    expect(starts).toHaveLength(ends.length);
    // Phases follow each other; within a phase, ends come in settlement order.
    const phaseOrder = ['init', 'match', 'setup', 'postsuspend', 'preresume', 'commit', 'teardown', 'cleanup'];
    const byPhase = ends.map((e) => `${e.op}:${e.device ?? '-'}:${e.outcome}`);
    expect(ends.map((e) => phaseOrder.indexOf(e.op))).toEqual([...ends.map((e) => phaseOrder.indexOf(e.op))].sort((a, b) => a - b));
    expect([...byPhase].sort((a, b) => phaseOrder.indexOf(a.split(':')[0]!) - phaseOrder.indexOf(b.split(':')[0]!) || a.localeCompare(b))).toEqual([
      'init:-:ok',
      'match:nic0:ok',
      'match:nic1:ok',
      'setup:nic0:ok',
      'setup:nic1:ok',
      'postsuspend:nic0:ok',
      'postsuspend:nic1:ok',
      'preresume:nic0:ok',
      'preresume:nic1:ok',
      'commit:nic0:ok',
      'commit:nic1:error',
      'teardown:nic0:ok',
      'teardown:nic1:ok',
      'cleanup:-:ok',
    ]);
    for (const e of ends) {
      expect(e.subkind).toBe('a');
      expect(e.durationMs).toBeGreaterThanOrEqual(0);
    }
    expect(ends.find((e) => e.outcome === 'error')!.error!.device).toBe('nic1');
    expect(ends.filter((e) => e.op === 'commit').every((e) => e.checkpoint === 1)).toBe(true);
  });

  it('a listener that throws does not change the outcome', async () => {
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(newWorld(), { name: 'a' })],
      devices: nics(1),
      onEvent: () => {
        throw new Error('broken listener');
      },
    });
    await layer.setup();
    await checkpoint(layer);
    await layer.teardown();
    expect(layer.state).toBe('torn-down');
  });
});

describe('lazy init and subkind state', () => {
  it('init runs once per subkind before its first match; its value is every handle\'s shared state', async () => {
    const world = newWorld();
    const shared: unknown[] = [];
    const base = fakeSubkind(world, { name: 'a' });
    const layer = createCheckpointDevices({
      ops: [{ ...base, setup: (h, ctx) => (shared.push(h.shared), base.setup(h, ctx)) }],
      devices: nics(3),
    });
    await layer.setup();
    expect(world.calls.filter((c) => c === 'a:init:-')).toHaveLength(1);
    expect(world.calls.indexOf('a:init:-')).toBeLessThan(world.calls.findIndex((c) => c.startsWith('a:match')));
    expect(shared).toEqual([{ id: 'a' }, { id: 'a' }, { id: 'a' }]);
    await layer.teardown();
  });

  it('a failed init fails the devices that needed it, is not cleaned up, and other subkinds are', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', faults: [{ op: 'init', how: 'reject' }] }), fakeSubkind(world, { name: 'd', kind: 'disk' })],
      devices: [...nics(2), { id: 'xvda', kind: 'disk' }],
    });
    const err = await rejection(layer.setup());
    expect(err.failures.map((f) => [f.device, f.subkind, f.op])).toEqual([
      ['nic0', 'a', 'init'],
      ['nic1', 'a', 'init'],
    ]);
    expect(world.calls).not.toContain('a:cleanup:-');
    expect(world.calls).toContain('d:teardown:xvda');
    expect(world.calls).toContain('d:cleanup:-');
    expect(world.resources.size).toBe(0);
  });

  it('plan says which subkind would take each device without setting anything up', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [fakeSubkind(world, { name: 'a', decline: ['nic1'] }), fakeSubkind(world, { name: 'b', decline: ['nic1'] })],
      devices: nics(2),
    });
    const plan = await layer.plan();
    expect(plan.map((p) => [p.device, p.subkind, p.error?.code])).toEqual([
      ['nic0', 'a', undefined],
      ['nic1', undefined, 'DEVICE_NOT_SUPPORTED'],
    ]);
    expect(world.calls.some((c) => c.includes(':setup:'))).toBe(false);
    expect(world.resources.size).toBe(0);
  });

  it('every op sees the operation id', async () => {
    const seen = new Set<string>();
    const ops: SubkindOps = {
      name: 'a',
      kind: 'nic',
      init: (ctx) => void seen.add(ctx.operation),
      setup: (_h, ctx) => void seen.add(ctx.operation),
      teardown: (_h, ctx) => void seen.add(ctx.operation),
      commit: (_h, ctx) => void seen.add(ctx.operation),
    };
    const layer = createCheckpointDevices({ ops: [ops], devices: nics(2), operationId: 'op-42' });
    await layer.setup();
    await checkpoint(layer);
    await layer.teardown();
    expect([...seen]).toEqual(['op-42']);
    expect(createCheckpointDevices({ ops: [ops], devices: [] }).operationId).toMatch(/^r[0-9a-f]{12}$/);
  });
});

describe('input validation before anything is touched', () => {
  it('rejects malformed subkinds, duplicate names, duplicate device ids and bad operation ids', () => {
    const ok = fakeSubkind(newWorld(), { name: 'a' });
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as RemusError).code;
      }
      return undefined;
    };
    expect(code(() => createCheckpointDevices({ ops: [{ ...ok, setup: undefined } as unknown as SubkindOps], devices: [] }))).toBe('INVALID_SUBKIND');
    expect(code(() => createCheckpointDevices({ ops: [ok, ok], devices: [] }))).toBe('INVALID_SUBKIND');
    expect(code(() => createCheckpointDevices({ ops: [{ ...ok, kind: '' }], devices: [] }))).toBe('INVALID_SUBKIND');
    expect(code(() => createCheckpointDevices({ ops: [ok], devices: [...nics(1), ...nics(1)] }))).toBe('INVALID_ARGUMENT');
    expect(code(() => createCheckpointDevices({ ops: [ok], devices: [{ id: '', kind: 'nic' }] }))).toBe('INVALID_ARGUMENT');
    expect(code(() => createCheckpointDevices({ ops: [ok], devices: [], operationId: 'a b' }))).toBe('INVALID_ARGUMENT');
  });
});

describe('COLO reuse', () => {
  it('the same devices run once with a Remus ops list and once with COLO primary lists through the same engine', async () => {
    const world = newWorld();
    const devices = [...nics(1), { id: 'xvda', kind: 'disk' }];
    const remus = [fakeSubkind(world, { name: 'nic-netbuf' }), fakeSubkind(world, { name: 'disk-drbd', kind: 'disk' })];
    const colo = [fakeSubkind(world, { name: 'colo-proxy' }), fakeSubkind(world, { name: 'colo-qdisk', kind: 'disk' })];
    for (const ops of [remus, colo]) {
      const layer = createCheckpointDevices({ ops, devices });
      await layer.setup();
      await checkpoint(layer);
      await layer.teardown();
      expect(layer.assignments().map((a) => a.subkind)).toEqual(ops.map((o) => o.name));
    }
    expect(world.calls.filter((c) => c.includes(':commit:'))).toEqual([
      'nic-netbuf:commit:nic0',
      'disk-drbd:commit:xvda',
      'colo-proxy:commit:nic0',
      'colo-qdisk:commit:xvda',
    ]);
    expect(world.resources.size).toBe(0);
  });
});
