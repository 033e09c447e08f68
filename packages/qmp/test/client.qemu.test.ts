/**
 * The QMP client against real QEMU processes (qemu-system-x86_64 from apt,
 * `-machine none`, no guest). Each QEMU is killed by PID after its test.
 */
import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { RemusError } from '@remus/core';
import { QmpError, QmpPool, QmpSchema, connectQmp, isQmpError, type QmpClient } from '../src/index.js';
import { startQemu, type TestQemu } from './qemu.js';

const running: TestQemu[] = [];
const clients: QmpClient[] = [];
async function qemu(options?: Parameters<typeof startQemu>[0]): Promise<TestQemu> {
  const q = await startQemu(options);
  running.push(q);
  return q;
}
async function connect(...args: Parameters<typeof connectQmp>): Promise<QmpClient> {
  const c = await connectQmp(...args);
  clients.push(c);
  return c;
}
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(running.splice(0).map((q) => q.stop()));
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Handles that keep the event loop alive, by kind (sockets, timers), for leak checks. */
function resources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

describe('QMP client on a real QEMU', () => {
  it('connects over a unix socket, reads the greeting and negotiates capabilities', async () => {
    const q = await qemu();
    const c = await connect(q.qmp[0]!);
    expect(c.greeting.version.qemu.major).toBeGreaterThanOrEqual(7);
    expect(c.greeting.capabilities).toContain('oob');
    // Commands other than qmp_capabilities only work after negotiation.
    expect(await c.execute('query-status')).toMatchObject({ status: 'prelaunch', running: false });
  });

  it('connects over TCP', async () => {
    const port = await freePort();
    const q = await qemu({ tcpPort: port });
    const c = await connect(`tcp:127.0.0.1:${port}`);
    expect(await c.execute('query-status')).toMatchObject({ running: false });
    expect(c.address).toEqual({ host: '127.0.0.1', port });
    void q;
  });

  it("surfaces QEMU's errors with their class and description", async () => {
    const q = await qemu();
    const c = await connect(q.qmp[0]!);
    const e1 = await c.execute('object-del', { id: 'no-such-object' }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(QmpError);
    expect(e1).toMatchObject({ code: 'qmp/QMP_FAILED', errorClass: 'GenericError', command: 'object-del' });
    expect((e1 as QmpError).desc).toBe("object 'no-such-object' not found");
    expect((e1 as QmpError).details).toMatchObject({ class: 'GenericError', desc: "object 'no-such-object' not found" });
    const e2 = await c.execute('no-such-command').catch((e: unknown) => e);
    expect(isQmpError(e2, 'CommandNotFound')).toBe(true);
    // The connection stays usable after errors.
    expect(await c.execute('query-status')).toMatchObject({ running: false });
  });

  it('matches concurrent commands to their answers by id', async () => {
    const q = await qemu();
    const c = await connect(q.qmp[0]!);
    const ids = Array.from({ length: 40 }, (_, i) => `remus-qmp-obj${i}`);
    const adds = ids.map((id) => c.execute('object-add', { 'qom-type': 'iothread', id }));
    // Interleave failing commands: each fails alone.
    const bad = ids.map((id) => c.execute('object-del', { id: `${id}-missing` }).then(() => 'ok', (e: QmpError) => e.desc));
    expect(await Promise.all(adds)).toEqual(ids.map(() => ({})));
    expect(await Promise.all(bad)).toEqual(ids.map((id) => `object '${id}-missing' not found`));
    const listed = await c.execute<{ name: string }[]>('qom-list', { path: '/objects' });
    expect(listed.map((p) => p.name).filter((n) => n.startsWith('remus-qmp-obj')).sort()).toEqual([...ids].sort());
    await Promise.all(ids.map((id) => c.execute('object-del', { id })));
    expect(c.pendingCount).toBe(0);
  });

  it('runs HMP commands through human-monitor-command and returns their text', async () => {
    const q = await qemu();
    const c = await connect(q.qmp[0]!);
    expect(await c.hmp('info version')).toMatch(/^7\.|^\d+\.\d+/);
    // HMP errors are text, not QMP errors.
    expect(await c.hmp('object_del no-such-object')).toMatch(/not found/);
  });

  it('delivers events as a typed stream, to waiters and listeners', async () => {
    const q = await qemu();
    const c = await connect(q.qmp[0]!);
    const seen: string[] = [];
    const off = c.onEvent((e) => seen.push(e.event));
    const stream = c.events({ names: ['RESUME', 'STOP'] });
    const resumed = c.waitForEvent('RESUME', { timeoutMs: 10_000 });
    await c.execute('cont');
    const r = await resumed;
    expect(r.event).toBe('RESUME');
    expect(typeof r.timestamp.seconds).toBe('number');
    await c.execute('stop');
    const first = await stream.next();
    const second = await stream.next();
    expect([first.value?.event, second.value?.event]).toEqual(['RESUME', 'STOP']);
    await stream.return!();
    expect((await stream.next()).done).toBe(true);
    off();
    expect(seen).toEqual(['RESUME', 'STOP']);
  });

  it('a waiter for an event that never comes times out and leaves no listener', async () => {
    const q = await qemu();
    const c = await connect(q.qmp[0]!);
    const e = await c.waitForEvent('COLO_EXIT', { timeoutMs: 200 }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'TIMEOUT' });
    const ac = new AbortController();
    const w = c.waitForEvent('COLO_EXIT', { timeoutMs: 10_000, signal: ac.signal });
    ac.abort();
    await expect(w).rejects.toMatchObject({ code: 'ABORTED' });
  });

  it('when QEMU dies: pending commands fail with QMP_FAILED, streams end, nothing reconnects', async () => {
    const q = await qemu();
    const c = await connect(q.qmp[0]!);
    const stream = c.events();
    const next = stream.next();
    const waiter = c.waitForEvent('COLO_EXIT', { timeoutMs: 30_000 });
    q.process.kill('SIGKILL');
    await expect(waiter).rejects.toMatchObject({ code: 'qmp/QMP_FAILED' });
    expect((await next).done).toBe(true);
    const why = await c.whenClosed();
    expect(why.code).toBe('qmp/QMP_FAILED');
    expect(c.closed).toBe(true);
    await expect(c.execute('query-status')).rejects.toMatchObject({ code: 'qmp/QMP_FAILED', errorClass: undefined });
  });

  it('close rejects pending commands and leaks no socket, timer or listener', async () => {
    const q = await qemu();
    const before = resources();
    const c = await connectQmp(q.qmp[0]!);
    const stream = c.events();
    const pending = c.execute('query-qmp-schema');
    const waiter = c.waitForEvent('STOP', { timeoutMs: 60_000 });
    await c.close();
    await expect(pending).rejects.toBeInstanceOf(QmpError);
    await expect(waiter).rejects.toMatchObject({ code: 'qmp/QMP_FAILED' });
    expect((await stream.next()).done).toBe(true);
    await c.close(); // idempotent
    // No handle kind grew (other code's timers may come and go, so fewer is fine). libuv releases a
    // closed handle a few ticks after 'close'; give it a bounded moment.
    const grown = () => Object.entries(resources()).filter(([k, n]) => n > (before[k] ?? 0));
    for (let i = 0; i < 50 && grown().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(grown()).toEqual([]);
    // The monitor is free again: a new client gets answers.
    const again = await connect(q.qmp[0]!);
    expect(await again.execute('query-status')).toMatchObject({ running: false });
  });

  it('refuses a missing socket with QMP_FAILED and an aborted connect with ABORTED', async () => {
    const q = await qemu();
    await expect(connectQmp(`${q.dir}/missing.sock`)).rejects.toMatchObject({ code: 'qmp/QMP_FAILED' });
    const ac = new AbortController();
    ac.abort();
    await expect(connectQmp(q.qmp[0]!, { signal: ac.signal })).rejects.toMatchObject({ code: 'ABORTED' });
    await expect(connectQmp('not an address')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('a busy monitor (another client holds it) times out instead of hanging', async () => {
    const q = await qemu();
    await connect(q.qmp[0]!);
    await expect(connectQmp(q.qmp[0]!, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'TIMEOUT' });
  });

  it('probes the schema: commands, events and enum values behind a command', async () => {
    const q = await qemu();
    const c = await connect(q.qmp[0]!);
    const s = await QmpSchema.query(c);
    expect(s.hasCommand('x-colo-lost-heartbeat')).toBe(true);
    expect(s.hasCommand('x-blockdev-change')).toBe(true);
    expect(s.hasCommand('no-such-command')).toBe(false);
    expect(s.hasEvent('COLO_EXIT')).toBe(true);
    expect(s.enumValues('blockdev-add', ['driver'])).toEqual(expect.arrayContaining(['replication', 'quorum', 'nbd', 'qcow2']));
    expect(s.enumValues('migrate-set-capabilities', ['capabilities', 'capability'])).toContain('x-colo');
    expect(s.enumValues('block-export-add', ['type'])).toContain('nbd');
    expect(s.enumValues('blockdev-add', ['no-such-member'])).toBeUndefined();
    expect(s.enumValues('no-such-command', ['driver'])).toBeUndefined();
  });
});

describe('QMP pool', () => {
  it('shares one connection per monitor and closes it with the last lease', async () => {
    const q = await qemu();
    const pool = new QmpPool();
    const [a, b] = await Promise.all([pool.acquire(q.qmp[0]!), pool.acquire(`unix:${q.qmp[0]!}`)]);
    expect(a.client).toBe(b.client);
    expect(pool.size).toBe(1);
    await a.release();
    await a.release(); // idempotent
    expect(a.client.closed).toBe(false);
    expect(await b.client.execute('query-status')).toMatchObject({ running: false });
    await b.release();
    expect(b.client.closed).toBe(true);
    expect(pool.size).toBe(0);
  });

  it('opens a fresh connection after QEMU closed the old one', async () => {
    const q1 = await qemu();
    const pool = new QmpPool();
    const a = await pool.acquire(q1.qmp[0]!);
    await q1.stop();
    await a.client.whenClosed();
    expect(pool.size).toBe(0);
    await a.release();
    const q2 = await qemu();
    const b = await pool.acquire(q2.qmp[0]!);
    expect(await b.client.execute('query-status')).toMatchObject({ running: false });
    await b.release();
  });

  it('an acquire that fails leaves no entry behind', async () => {
    const pool = new QmpPool();
    await expect(pool.acquire('/nonexistent/remus-qmp.sock')).rejects.toBeInstanceOf(RemusError);
    expect(pool.size).toBe(0);
  });
});
