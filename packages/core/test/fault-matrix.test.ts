// The fault-injection matrix: each op fails by throwing, rejecting or hanging
// past its timeout, at the first, a middle and the last device, with 0, 1 and
// several devices. After each case: which teardowns and cleanups ran, nothing
// is left, and the error lists every failure.
import { describe, expect, it } from 'vitest';
import { createCheckpointDevices, RemusError, type OpName } from '../src/index.js';
import { fakeSubkind, newWorld, nics, type How } from './fakes.js';

const HOWS: How[] = ['throw', 'reject', 'hang'];
const DEVICE_OPS: OpName[] = ['match', 'setup', 'postsuspend', 'preresume', 'commit', 'teardown'];
const SUBKIND_OPS: OpName[] = ['init', 'cleanup'];
const COUNTS = [0, 1, 5];
const TIMEOUT = 25;
const timeouts = Object.fromEntries(
  ['init', 'cleanup', 'match', 'setup', 'teardown', 'postsuspend', 'preresume', 'commit'].map((op) => [op, TIMEOUT]),
);

type Where = 'first' | 'middle' | 'last';
function pick(n: number, where: Where): string {
  const i = where === 'first' ? 0 : where === 'last' ? n - 1 : Math.floor(n / 2);
  return `nic${i}`;
}

/** Runs a whole operation (setup, one checkpoint, teardown) and returns the first rejection, if any. */
async function runOperation(n: number, op: OpName, how: How, device: string | undefined) {
  const world = newWorld();
  const layer = createCheckpointDevices({
    ops: [fakeSubkind(world, { name: 'fake', faults: [{ op, how, ...(device ? { devices: [device] } : {}) }] })],
    devices: nics(n),
    timeouts,
  });
  let error: RemusError | undefined;
  try {
    await layer.setup();
    await layer.postsuspend();
    await layer.preresume();
    await layer.commit();
  } catch (e) {
    error = e as RemusError;
  }
  try {
    await layer.teardown();
  } catch (e) {
    error ??= e as RemusError;
  }
  const teardowns = world.calls.filter((c) => c.startsWith('fake:teardown:')).map((c) => c.split(':')[2]);
  const cleanups = world.calls.filter((c) => c === 'fake:cleanup:-').length;
  return { world, layer, error, teardowns, cleanups };
}

const expectedCode = (how: How): string => (how === 'hang' ? 'TIMEOUT' : 'OP_FAILED');

describe('fault matrix: per-device ops', () => {
  for (const op of DEVICE_OPS) {
    for (const how of HOWS) {
      for (const n of COUNTS) {
        const places: Where[] = n === 0 ? ['first'] : n === 1 ? ['first'] : ['first', 'middle', 'last'];
        for (const where of places) {
          it(`${op} ${how}s at the ${where} of ${n} device(s)`, async () => {
            const target = n === 0 ? undefined : pick(n, where);
            const r = await runOperation(n, op, how, target ?? 'none');
            if (n === 0) {
              expect(r.error).toBeUndefined();
              expect(r.world.calls).toEqual([]);
              return;
            }
            // The error lists exactly the failing device, with code, op and subkind.
            expect(r.error?.code).toBe('PHASE_FAILED');
            expect(r.error!.failures.map((f) => [f.device, f.subkind, f.op, f.code])).toEqual([
              [target, 'fake', op, expectedCode(how)],
            ]);
            // Teardown reached every matched device: all of them, except one whose match failed.
            const matched = nics(n).map((d) => d.id).filter((id) => !(op === 'match' && id === target));
            expect([...r.teardowns].sort()).toEqual([...matched].sort());
            expect(r.cleanups).toBe(1);
            // Nothing left but what a failing teardown itself failed to remove.
            const left = [...r.world.resources];
            expect(left).toEqual(op === 'teardown' ? [`fake:${target}`] : []);
            expect(r.layer.state).toBe('torn-down');
          });
        }
      }
    }
  }
});

describe('fault matrix: per-subkind ops', () => {
  for (const op of SUBKIND_OPS) {
    for (const how of HOWS) {
      for (const n of COUNTS) {
        it(`${op} ${how}s with ${n} device(s)`, async () => {
          const r = await runOperation(n, op, how, undefined);
          if (n === 0) {
            expect(r.error).toBeUndefined();
            expect(r.world.calls).toEqual([]);
            return;
          }
          expect(r.error?.code).toBe('PHASE_FAILED');
          if (op === 'init') {
            // Every device needed the subkind: each is listed; nothing was matched, set up or cleaned up.
            expect(r.error!.failures.map((f) => [f.device, f.op, f.code])).toEqual(
              nics(n).map((d) => [d.id, 'init', expectedCode(how)]),
            );
            expect(r.teardowns).toEqual([]);
            expect(r.cleanups).toBe(0);
          } else {
            expect(r.error!.failures.map((f) => [f.device, f.subkind, f.op, f.code])).toEqual([
              [undefined, 'fake', 'cleanup', expectedCode(how)],
            ]);
            expect([...r.teardowns].sort()).toEqual(nics(n).map((d) => d.id).sort());
          }
          const left = [...r.world.resources];
          // A failed cleanup leaves the subkind's shared state (reported above); a failed init made none.
          expect(left).toEqual(op === 'cleanup' ? ['fake:init'] : []);
        });
      }
    }
  }
});

describe('fault matrix: several failures at once', () => {
  it('failures at the first, a middle and the last device are all listed, in device order', async () => {
    const world = newWorld();
    const layer = createCheckpointDevices({
      ops: [
        fakeSubkind(world, {
          name: 'fake',
          faults: [
            { op: 'postsuspend', how: 'hang', devices: ['nic4'] },
            { op: 'postsuspend', how: 'reject', devices: ['nic2'] },
            { op: 'postsuspend', how: 'throw', devices: ['nic0'] },
          ],
        }),
      ],
      devices: nics(5),
      timeouts,
    });
    await layer.setup();
    const err = await layer.postsuspend().then(
      () => undefined,
      (e: RemusError) => e,
    );
    expect(err!.failures.map((f) => [f.device, f.code])).toEqual([
      ['nic0', 'OP_FAILED'],
      ['nic2', 'OP_FAILED'],
      ['nic4', 'TIMEOUT'],
    ]);
    await layer.teardown();
    expect(world.resources.size).toBe(0);
  });
});
