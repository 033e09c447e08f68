/**
 * The buffer process client's waits (issue 12: core's withDeadline): every
 * request is bounded and abortable, and an abort whose reason is already a
 * RemusError (the engine's op TIMEOUT) keeps that error. Needs root (the
 * buffer process opens a NETLINK_NETFILTER socket in this namespace).
 */
import { RemusError } from '@remus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { BufferProcess, InProcessBuffer } from '../src/buffer-client.js';

let bp: BufferProcess | undefined;

afterEach(async () => {
  await bp?.stop();
  bp = undefined;
});

const start = (signal = new AbortController().signal): Promise<BufferProcess> =>
  BufferProcess.start({ netns: undefined, ip: 'ip', timeoutMs: 10_000, signal });

describe('buffer process client waits', () => {
  it('answers a request, times out a request it gives no time or too little, and keeps a RemusError abort reason', async () => {
    bp = await start();
    const signal = new AbortController().signal;
    const ok = await bp.request({ op: 'unbind', tag: 'remus:test:none' }, signal, 5000);
    expect(ok.ok).toBe(true);

    // The process is stopped (SIGSTOP) so that it cannot answer before the
    // time limit: a reply racing a 0 ms timer made this test flaky in CI.
    const pid = bp.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      await expect(bp.request({ op: 'stats' }, signal, 0)).rejects.toMatchObject({ code: 'TIMEOUT' });
      await expect(bp.request({ op: 'stats' }, signal, 50)).rejects.toMatchObject({ code: 'TIMEOUT' });
    } finally {
      process.kill(pid, 'SIGCONT');
    }

    const engine = new AbortController();
    engine.abort(new RemusError('TIMEOUT', 'commit: no result within 5 ms'));
    await expect(bp.request({ op: 'stats' }, engine.signal, 5000)).rejects.toMatchObject({ code: 'TIMEOUT' });

    const user = new AbortController();
    const pending = bp.request({ op: 'stats' }, user.signal, 5000);
    user.abort(new Error('stop'));
    // Either the reply won the race or the abort did; an abort is ABORTED, never a hang.
    await pending.then(
      (r) => expect(r.ok).toBe(true),
      (e: unknown) => expect(e).toMatchObject({ code: 'ABORTED' }),
    );
    // Still usable after a timed-out and an aborted request.
    expect((await bp.request({ op: 'stats' }, signal, 5000)).ok).toBe(true);
  });

  it('refuses to start with an aborted signal and stops within its grace time', async () => {
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(start(ac.signal)).rejects.toMatchObject({ code: 'ABORTED' });
    bp = await start();
    const pid = bp.pid!;
    await bp.stop(2000);
    expect(bp.alive).toBe(false);
    expect(() => process.kill(pid, 0)).toThrow();
    bp = undefined;
  });
});

describe('in-process buffer waits', () => {
  it('answers in order, keeps a RemusError abort reason, refuses an aborted open, and fails every request once stopped', async () => {
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    expect(() => InProcessBuffer.open(ac.signal)).toThrow(expect.objectContaining({ code: 'ABORTED' }));

    const signal = new AbortController().signal;
    const ip = InProcessBuffer.open(signal);
    try {
      expect(ip.alive).toBe(true);
      expect(ip.pid).toBe(process.pid);
      // Handled one at a time, in the order sent (as a buffer process handles its lines).
      const order: string[] = [];
      await Promise.all([
        ip.request({ op: 'unbind', tag: 'remus:test:none' }, signal, 5000).then(() => order.push('unbind')),
        ip.request({ op: 'stats' }, signal, 5000).then(() => order.push('stats')),
        ip.request({ op: 'mark', queue: 65000, checkpoint: 1 }, signal, 5000).catch(() => order.push('mark refused')),
      ]);
      expect(order).toEqual(['unbind', 'stats', 'mark refused']);
      // A queue it never bound: OP_FAILED naming it.
      await expect(ip.request({ op: 'release', queue: 65000, checkpoint: 1 }, signal, 5000)).rejects.toMatchObject({
        code: 'OP_FAILED',
        message: expect.stringMatching(/queue 65000 is not bound/),
      });

      const engine = new AbortController();
      engine.abort(new RemusError('TIMEOUT', 'commit: no result within 5 ms'));
      await expect(ip.request({ op: 'release', queue: 65000, checkpoint: 2 }, engine.signal, 5000)).rejects.toMatchObject({ code: 'TIMEOUT' });
      await expect(ip.request({ op: 'stats' }, engine.signal, 5000)).rejects.toMatchObject({ code: 'TIMEOUT' });
    } finally {
      await ip.stop();
    }
    expect(ip.alive).toBe(false);
    await expect(ip.request({ op: 'stats' }, signal, 5000)).rejects.toMatchObject({ code: 'OP_FAILED', message: expect.stringMatching(/stopped/) });
    await ip.stop(); // idempotent
  });
});
