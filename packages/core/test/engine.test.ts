// The engine on its own: one phase, settled once, whatever the ops do.
import { describe, expect, it } from 'vitest';
import { runPhase, type OpEvent, type PhaseSpec } from '../src/index.js';

function spec<T>(targets: T[], call: PhaseSpec<T>['call'], extra: Partial<PhaseSpec<T>> = {}): PhaseSpec<T> {
  return {
    op: 'commit',
    targets,
    call,
    origin: (t) => ({ device: String(t), subkind: 's' }),
    timeoutOf: () => 50,
    checkpoint: 1,
    operation: 'test',
    ...extra,
  };
}

describe('runPhase', () => {
  it('zero targets resolve at once with no failures', async () => {
    const r = await runPhase(spec([], () => undefined));
    expect(r).toEqual({ values: [], errors: [], failed: 0 });
  });

  it('an op that "calls back twice" (a thenable settling twice) counts once', async () => {
    const events: OpEvent[] = [];
    const twice = {
      then(ok: (v: unknown) => void, fail: (e: unknown) => void) {
        ok('first');
        ok('second');
        fail(new Error('and a rejection'));
      },
    };
    const r = await runPhase(spec([1, 2], (t) => (t === 1 ? twice : 'plain'), { onEvent: (e) => events.push(e) }));
    expect(r.values).toEqual(['first', 'plain']);
    expect(r.failed).toBe(0);
    expect(events.filter((e) => e.type === 'op-end')).toHaveLength(2);
  });

  it('timeouts are per group: a short-timeout op times out while a long one still completes', async () => {
    const r = await runPhase(
      spec(['short', 'long'], (t) => new Promise((res) => setTimeout(() => res(t), 60)), {
        timeoutOf: (t) => (t === 'short' ? 20 : 500),
      }),
    );
    expect(r.errors[0]?.code).toBe('TIMEOUT');
    expect(r.errors[1]).toBeUndefined();
    expect(r.values[1]).toBe('long');
  });

  it('an already aborted signal starts nothing and fails every target ABORTED', async () => {
    const ac = new AbortController();
    ac.abort();
    let calls = 0;
    const r = await runPhase(spec([1, 2, 3], () => void calls++, { signal: ac.signal }));
    expect(calls).toBe(0);
    expect(r.errors.map((e) => e?.code)).toEqual(['ABORTED', 'ABORTED', 'ABORTED']);
  });

  it('the op signal of a timed-out op fires with a TIMEOUT reason', async () => {
    let signal: AbortSignal | undefined;
    await runPhase(spec([1], (_t, ctx) => ((signal = ctx.signal), new Promise(() => undefined)), { timeoutOf: () => 10 }));
    expect(signal?.aborted).toBe(true);
    expect((signal?.reason as { code?: string }).code).toBe('TIMEOUT');
  });
});

describe('errors', () => {
  it('describe any cause, also error-like and prototype-less objects (test runners serialise causes so)', async () => {
    const { describeCause, RemusError } = await import('../src/index.js');
    const bare = Object.assign(Object.create(null) as object, { message: 'from a serialised cause' });
    expect(describeCause(bare)).toBe('from a serialised cause');
    expect(describeCause(Object.create(null))).toBe('[object Object]');
    const e = new RemusError('OP_FAILED', 'outer', { cause: bare });
    expect(e.toJSON()['cause']).toBe('from a serialised cause');
  });
});

describe('runPhase: signals made on demand', () => {
  it('an op that reads ctx.signal after its timeout sees it aborted with a TIMEOUT reason; ops that never read it still time out', async () => {
    let later: AbortSignal | undefined;
    const r = await runPhase(
      spec(['reads-late', 'never-reads'], (t, ctx) =>
        new Promise((resolve) => {
          if (t === 'reads-late') setTimeout(() => { later = ctx.signal; resolve(undefined); }, 120);
        }),
      ),
    );
    expect(r.errors.map((e) => e?.code)).toEqual(['TIMEOUT', 'TIMEOUT']);
    await new Promise((res) => setTimeout(res, 150));
    expect(later!.aborted).toBe(true);
    expect((later!.reason as { code?: string }).code).toBe('TIMEOUT');
  });
  it('an op that reads ctx.signal early sees it fire on the caller abort', async () => {
    const ac = new AbortController();
    let fired = false;
    const p = runPhase(
      spec(['a'], (_t, ctx) => new Promise((resolve) => ctx.signal.addEventListener('abort', () => { fired = true; resolve(undefined); })), {
        signal: ac.signal,
        timeoutOf: () => 10_000,
      }),
    );
    setTimeout(() => ac.abort(), 10);
    const r = await p;
    expect(r.errors[0]?.code).toBe('ABORTED');
    expect(fired).toBe(true);
  });
});

describe('runPhase: contexts copy like plain objects', () => {
  it('{ ...ctx } and Object.assign keep the signal (an own, enumerable property)', async () => {
    let copied: { signal?: AbortSignal; checkpoint?: number } = {};
    await runPhase(spec(['a'], (_t, ctx) => { copied = { ...ctx }; }));
    expect(copied.signal).toBeInstanceOf(AbortSignal);
    expect(copied.checkpoint).toBe(1);
    expect(Object.keys(copied).sort()).toEqual(['checkpoint', 'epoch', 'operation', 'signal']);
  });
});
