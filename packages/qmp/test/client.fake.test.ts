/**
 * Fault injection the real QEMU cannot produce on demand: a stub QMP server
 * that answers late, out of order or never. Everything else is tested
 * against real QEMU in client.qemu.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { QmpPool, connectQmp } from '../src/index.js';

const GREETING = JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'stub' }, capabilities: [] } });

let server: Server | undefined;
let dir: string | undefined;
afterEach(async () => {
  if (server) await new Promise<void>((r) => server!.close(() => r()));
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** A stub monitor: `answer(cmd, socket)` decides what to send for each command. */
async function stub(answer: (msg: { execute: string; id: unknown; arguments?: unknown }, s: Socket) => void, greet = true): Promise<string> {
  dir = mkdtempSync(join(tmpdir(), `remus-qmp-stub-${process.pid}-`));
  const path = join(dir, 'stub.sock');
  server = createServer((s) => {
    s.setEncoding('utf8');
    if (greet) s.write(GREETING + '\r\n');
    let buf = '';
    s.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (msg.execute === 'qmp_capabilities') s.write(JSON.stringify({ return: {}, id: msg.id }) + '\r\n');
        else answer(msg, s);
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server!.listen(path, r));
  return path;
}

describe('QMP client against a stub monitor (fault injection)', () => {
  it('times a command out per its own limit and discards the late answer', async () => {
    const path = await stub((m, s) => {
      const delay = m.execute === 'slow' ? 300 : 0;
      setTimeout(() => s.write(JSON.stringify({ return: m.execute, id: m.id }) + '\r\n'), delay);
    });
    const c = await connectQmp(path);
    const slow = c.execute('slow', undefined, { timeoutMs: 50 });
    await expect(slow).rejects.toMatchObject({ code: 'TIMEOUT', details: { command: 'slow', timeoutMs: 50 } });
    await new Promise((r) => setTimeout(r, 350)); // the late answer arrives and is dropped
    expect(await c.execute('fast')).toBe('fast');
    expect(c.pendingCount).toBe(0);
    await c.close();
  });

  it('matches answers that come back out of order', async () => {
    const held: { id: unknown; execute: string; s: Socket }[] = [];
    const path = await stub((m, s) => {
      held.push({ id: m.id, execute: m.execute, s });
      if (held.length === 3) for (const h of held.reverse()) h.s.write(JSON.stringify({ return: h.execute, id: h.id }) + '\r\n');
    });
    const c = await connectQmp(path);
    expect(await Promise.all([c.execute('a'), c.execute('b'), c.execute('c')])).toEqual(['a', 'b', 'c']);
    await c.close();
  });

  it('an abort rejects the waiting command with ABORTED', async () => {
    const path = await stub(() => undefined);
    const c = await connectQmp(path);
    const ac = new AbortController();
    const p = c.execute('never', undefined, { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'ABORTED' });
    expect(c.pendingCount).toBe(0);
    await c.close();
  });

  it('a server that never greets times the connection out', async () => {
    const path = await stub(() => undefined, false);
    await expect(connectQmp(path, { timeoutMs: 200 })).rejects.toMatchObject({ code: 'TIMEOUT' });
  });

  it('garbage from the server closes the connection with QMP_FAILED', async () => {
    const path = await stub((_m, s) => s.write('this is not json\r\n'));
    const c = await connectQmp(path);
    await expect(c.execute('x')).rejects.toMatchObject({ code: 'qmp/QMP_FAILED' });
    expect(c.closed).toBe(true);
  });

  it('a pooled acquire aborted while the monitor never greets returns at once and closes the attempt', async () => {
    const path = await stub(() => undefined, false);
    let open = 0;
    server!.on('connection', (s) => {
      open++;
      s.on('close', () => open--);
    });
    const pool = new QmpPool();
    const ac = new AbortController();
    const p = pool.acquire(path, { timeoutMs: 5_000, signal: ac.signal });
    await new Promise((r) => setTimeout(r, 100));
    expect(open).toBe(1);
    const t0 = performance.now();
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'ABORTED' });
    expect(performance.now() - t0).toBeLessThan(1_000); // not the 5 s connect limit
    expect(pool.size).toBe(0);
    for (let i = 0; i < 50 && open > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(open).toBe(0);
  });

  it('an aborted acquirer does not abort the attempt another acquirer still waits for', async () => {
    let greetLater: Socket | undefined;
    const path = await stub(() => undefined, false);
    server!.on('connection', (s) => (greetLater = s));
    const pool = new QmpPool();
    const ac = new AbortController();
    const first = pool.acquire(path, { timeoutMs: 5_000, signal: ac.signal });
    const second = pool.acquire(path);
    await new Promise((r) => setTimeout(r, 100));
    ac.abort();
    await expect(first).rejects.toMatchObject({ code: 'ABORTED' });
    greetLater!.write(GREETING + '\r\n');
    const lease = await second;
    expect(lease.client.closed).toBe(false);
    await lease.release();
    expect(lease.client.closed).toBe(true);
    expect(pool.size).toBe(0);
  });
});
