// One AbortSignal serves an arbiter for days (keepalives every third of the
// TTL, campaign polls): each call must give back what it took from it. Node 20
// keeps every AbortSignal.any composite in its source signals for as long as
// they live, so one composite per call was a leak of ~100 bytes per RPC.
// Nothing listens on the endpoint here: every attempt fails at once.
import { getEventListeners } from 'node:events';
import { expect, it, vi } from 'vitest';
import { EtcdClient } from '../src/index.js';

it('calls that fail leave nothing on the caller\'s signal and create no composite signal', async () => {
  const client = new EtcdClient({ endpoints: ['127.0.0.1:1'], callTimeoutMs: 2000 });
  const caller = new AbortController();
  const any = vi.spyOn(AbortSignal, 'any');
  const codes: string[] = [];
  try {
    for (let i = 0; i < 20; i++) {
      await client.range({ key: Buffer.from('k') }, caller.signal).then(
        () => codes.push('answered'),
        (e: { code?: string }) => codes.push(String(e.code)),
      );
    }
    expect(any).not.toHaveBeenCalled();
  } finally {
    any.mockRestore();
    client.close();
  }
  expect(codes).toEqual(Array(20).fill('ARBITER_FAILED'));
  expect(getEventListeners(caller.signal, 'abort')).toHaveLength(0);
});

it('the time limit of one attempt still ends a call that gets no answer', async () => {
  // A listener that accepts and never answers: the attempt ends at the time limit, the error says so.
  const { createServer } = await import('node:net');
  const silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const port = (silent.address() as { port: number }).port;
  const client = new EtcdClient({ endpoints: [`127.0.0.1:${port}`], callTimeoutMs: 300 });
  const caller = new AbortController();
  const t0 = performance.now();
  try {
    const e = await client.range({ key: Buffer.from('k') }, caller.signal).then(() => undefined, (x: Error & { code?: string }) => x);
    expect(e?.code).toBe('ARBITER_FAILED');
    expect(String(e?.message)).toContain(`127.0.0.1:${port}`);
    expect(performance.now() - t0).toBeLessThan(5000);
  } finally {
    client.close();
    silent.close();
  }
  expect(getEventListeners(caller.signal, 'abort')).toHaveLength(0);
});
