// The one set of bounded, abortable waits: real timers, real emitters.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { RemusError, nextEvent, pollUntil, sleep, withDeadline, abortError, isRemusError } from '../src/index.js';

async function failure(p: Promise<unknown>): Promise<RemusError> {
  try {
    await p;
  } catch (e) {
    expect(isRemusError(e)).toBe(true);
    return e as RemusError;
  }
  throw new Error('expected a failure');
}

describe('sleep', () => {
  it('waits, and rejects ABORTED naming what when aborted', async () => {
    const t0 = performance.now();
    await sleep(20);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(18);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 10);
    const e = await failure(sleep(10_000, ac.signal, 'DRBD to connect'));
    expect(e.code).toBe('ABORTED');
    expect(e.message).toContain('DRBD to connect');
  });
  it('refuses times Node cannot hold (they would fire after 1 ms)', () => {
    expect(() => sleep(3e9)).toThrow(/2147483647/);
    expect(() => sleep(-1)).toThrow(RemusError);
    expect(() => sleep(Number.NaN)).toThrow(RemusError);
  });
  it('an abort whose reason is a RemusError keeps that error (an outer TIMEOUT stays a TIMEOUT)', async () => {
    const ac = new AbortController();
    const reason = new RemusError('TIMEOUT', 'outer deadline');
    ac.abort(reason);
    expect(abortError(ac.signal, 'x')).toBe(reason);
    expect(await failure(sleep(1000, ac.signal))).toBe(reason);
  });
});

describe('withDeadline', () => {
  it('resolves with the work, and TIMEOUT names what and the limit and aborts the work', async () => {
    expect(await withDeadline(async () => 7, { what: 'x', timeoutMs: 1000 })).toBe(7);
    let innerAborted = false;
    const e = await failure(
      withDeadline(
        (signal) =>
          new Promise((resolve) => {
            signal.addEventListener('abort', () => {
              innerAborted = true;
              setTimeout(resolve, 5); // finishes late: its result must be dropped
            });
          }),
        { what: 'QEMU to exit', timeoutMs: 30, origin: { device: 'd1', subkind: 's', op: 'teardown' } },
      ),
    );
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toContain('QEMU to exit');
    expect(e.message).toContain('30 ms');
    expect([e.device, e.subkind, e.op]).toEqual(['d1', 's', 'teardown']);
    expect(innerAborted).toBe(true);
  });
  it("the caller's abort rejects ABORTED; a throwing work rejects with its error", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('user pressed ^C')), 10);
    const e = await failure(withDeadline((s) => sleep(10_000, s), { what: 'y', timeoutMs: 10_000, signal: ac.signal }));
    expect(e.code).toBe('ABORTED');
    const boom = new RemusError('OP_FAILED', 'boom');
    expect(await failure(withDeadline(() => { throw boom; }, { what: 'z', timeoutMs: 100 }))).toBe(boom);
  });
});

describe('pollUntil', () => {
  it('resolves with the first value that is not undefined or false', async () => {
    let n = 0;
    expect(await pollUntil(() => (++n >= 3 ? `state ${n}` : false), { what: 'w', timeoutMs: 1000, intervalMs: 1 })).toBe('state 3');
  });
  it('TIMEOUT says what was last seen; a throwing probe rejects at once', async () => {
    const e = await failure(pollUntil(() => undefined, { what: 'DRBD r0 to be Connected', timeoutMs: 40, intervalMs: 5, describe: () => 'cs:WFConnection' }));
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toContain('DRBD r0 to be Connected');
    expect(e.message).toContain('cs:WFConnection');
    let calls = 0;
    const boom = new RemusError('OP_FAILED', 'probe failed');
    const t0 = performance.now();
    expect(await failure(pollUntil(() => { calls++; throw boom; }, { what: 'p', timeoutMs: 5000, intervalMs: 1 }))).toBe(boom);
    expect(calls).toBe(1);
    expect(performance.now() - t0).toBeLessThan(1000);
  });
  it('is abortable between probes', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 20);
    expect((await failure(pollUntil(() => false, { what: 'p', timeoutMs: 10_000, intervalMs: 5, signal: ac.signal }))).code).toBe('ABORTED');
  });
});

describe('nextEvent', () => {
  it('resolves with the arguments of the next matching event and removes its listeners', async () => {
    const em = new EventEmitter();
    const p = nextEvent(em, 'state', { what: 'state', timeoutMs: 1000, filter: (s) => s === 'colo', rejectOn: ['error'] });
    em.emit('state', 'setup');
    em.emit('state', 'colo', 2);
    expect(await p).toEqual(['colo', 2]);
    expect(em.listenerCount('state')).toBe(0);
    expect(em.listenerCount('error')).toBe(0);
  });
  it('rejects on a rejectOn event with the error as cause, on timeout, and leaves no listener', async () => {
    const em = new EventEmitter();
    const p = nextEvent(em, 'ready', { what: 'QMP greeting', timeoutMs: 1000, rejectOn: ['error', 'close'] });
    em.emit('error', new Error('ECONNRESET'));
    const e = await failure(p);
    expect(e.message).toContain('ECONNRESET');
    const t = await failure(nextEvent(em, 'ready', { what: 'QMP greeting', timeoutMs: 20 }));
    expect(t.code).toBe('TIMEOUT');
    expect(em.eventNames()).toEqual([]);
  });
});
