// The backup protocol against hostile and careless peers (issue 14 items 2
// and 3): each attack from the issue reproduced and refused with its code.
// Real sockets; the hostile side is a raw client speaking frames by hand.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCheckpointDevices, nextEvent, openEpochStore, pollUntil, runCheckpointLoop, sleep, type DomainAdapter } from '@remus/core';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { BackupErrors, BackupLink, BackupServer, FrameType, encodeFrame, encodeHeader, type BackupServerOptions } from '../src/index.js';
import { duplexPair, rawPeer, type RawPeer } from './helpers.js';

const servers: BackupServer[] = [];
const peers: RawPeer[] = [];
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (const p of peers.splice(0)) p.socket.destroy();
  for (const s of servers.splice(0)) await s.close();
  for (const c of cleanups.splice(0)) c();
});

async function backup(o: BackupServerOptions = {}): Promise<BackupServer> {
  const s = await BackupServer.listen({ host: '127.0.0.1', port: 0 }, o);
  servers.push(s);
  return s;
}
async function peer(s: BackupServer, o: { read?: boolean } = {}): Promise<RawPeer> {
  const p = await rawPeer(s.address, o);
  peers.push(p);
  return p;
}
const state = (checkpoint: number, body: string, epoch = 0): Buffer => encodeFrame(FrameType.STATE, epoch, checkpoint, Buffer.from(body));

/** A hostile backup: answers each state frame with whatever `answer` returns. */
async function fakeBackup(answer: (checkpoint: number, epoch: number) => Buffer): Promise<{ server: Server; port: number }> {
  const server = createServer((s: Socket) => {
    let buf = Buffer.alloc(0);
    s.on('error', () => undefined);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 28 && buf.length >= 28 + buf.readUInt32BE(24)) {
        const n = buf.readUInt32BE(24);
        s.write(answer(buf.readUInt32BE(16) * 2 ** 32 + buf.readUInt32BE(20), buf.readUInt32BE(8) * 2 ** 32 + buf.readUInt32BE(12)));
        buf = buf.subarray(28 + n);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await nextEvent(server, 'listening', { what: 'fake backup', timeoutMs: 5000 });
  cleanups.push(() => server.close());
  return { server, port: (server.address() as { port: number }).port };
}

/** A domain that is nothing but the link (the checkpoint loop drives it). */
function linkDomain(link: BackupLink): DomainAdapter {
  return {
    name: 'link only',
    suspend: () => undefined,
    save: (ctx) => link.send(ctx.checkpoint, Buffer.from(`state ${ctx.checkpoint}`), ctx.epoch),
    resume: () => undefined,
    waitAck: (ctx) => link.waitAck(ctx.checkpoint, ctx.signal),
  };
}

/** A device that counts commits (the output releases). */
function commitCounter(): { ops: Parameters<typeof createCheckpointDevices>[0]['ops'][number]; commits: () => number } {
  let commits = 0;
  const noop = (): void => undefined;
  return {
    ops: { name: 'counter', kind: 'nic', setup: noop, teardown: noop, postsuspend: noop, preresume: noop, commit: () => void commits++ },
    commits: () => commits,
  };
}

describe('the unauthenticated listener stays on this machine (issue 15)', () => {
  it('listen refuses an address other machines can reach, before binding anything; a loopback one, a Unix socket and allowRemote bind', async () => {
    for (const host of ['0.0.0.0', '::', '10.1.2.3']) {
      const err = await BackupServer.listen({ host, port: 0 }).then(
        (s) => (servers.push(s), undefined),
        (e: unknown) => e,
      );
      expect(err, host).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/no authentication.*loopback address or a Unix socket.*remus agent/) });
    }
    // Nothing was bound: the port the refused call named is still free for anyone.
    const probe = createServer();
    await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(0, '0.0.0.0', resolve));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    await expect(BackupServer.listen({ host: '0.0.0.0', port })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const again = createServer();
    await new Promise<void>((resolve, reject) => again.once('error', reject).listen(port, '0.0.0.0', resolve));
    await new Promise((r) => again.close(r));

    for (const host of ['127.0.0.1', '127.9.9.9', '::1', 'localhost']) {
      const s = await BackupServer.listen({ host, port: 0 });
      servers.push(s);
      expect('port' in s.address && s.address.port > 0, host).toBe(true);
    }
    const dir = mkdtempSync(join(tmpdir(), 'remus-backup-local-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    servers.push(await BackupServer.listen({ path: join(dir, 'b.sock') }));
    const remote = await BackupServer.listen({ host: '0.0.0.0', port: 0 }, { allowRemote: true });
    servers.push(remote);
    expect(remote.address).toMatchObject({ host: '0.0.0.0' });
  });
});

describe('the primary accepts only the ack of the checkpoint it sent last', () => {
  it('an ack of 0xFFFFFFFF fails the checkpoint loudly and no output is released, then or later', async () => {
    const fake = await fakeBackup((cp) => encodeHeader(FrameType.ACK, 0, cp === 1 ? 1 : 0xffffffff, 0));
    const link = await BackupLink.connect({ host: '127.0.0.1', port: fake.port }, AbortSignal.timeout(5000));
    const counter = commitCounter();
    const devices = createCheckpointDevices({ ops: [counter.ops], devices: [{ id: 'n0', kind: 'nic' }] });
    await devices.setup();
    const run = runCheckpointLoop({ devices, domain: linkDomain(link), intervalMs: 1, maxCheckpoints: 5 });
    await expect(run).rejects.toMatchObject({ code: 'CHECKPOINT_FAILED', details: { checkpoint: 2, step: 'ack', committed: 1 } });
    await run.catch((e: { cause?: { code?: string } }) => expect(e.cause?.code).toBe(BackupErrors.ACK_UNEXPECTED));
    expect(counter.commits()).toBe(1);
    // The link stays broken: a later checkpoint cannot be sent or acknowledged.
    expect(link.broken?.code).toBe(BackupErrors.ACK_UNEXPECTED);
    expect(() => link.send(3, Buffer.from('x'))).toThrow(expect.objectContaining({ code: BackupErrors.ACK_UNEXPECTED }));
    await expect(link.waitAck(3, AbortSignal.timeout(1000))).rejects.toMatchObject({ code: BackupErrors.ACK_UNEXPECTED });
  });

  it('an ack under another epoch, a duplicate ack and an unasked ack are refused', async () => {
    for (const [answer, expected] of [
      [(cp: number) => encodeHeader(FrameType.ACK, 6, cp, 0), BackupErrors.ACK_UNEXPECTED],
      [(cp: number) => Buffer.concat([encodeHeader(FrameType.ACK, 7, cp, 0), encodeHeader(FrameType.ACK, 7, cp, 0)]), BackupErrors.ACK_UNEXPECTED],
      [(cp: number) => encodeHeader(FrameType.ACK, 7, cp - 1, 0), BackupErrors.ACK_UNEXPECTED],
    ] as const) {
      const fake = await fakeBackup(answer);
      const link = await BackupLink.connect({ host: '127.0.0.1', port: fake.port }, AbortSignal.timeout(5000), { epoch: 7 });
      link.send(1, Buffer.from('one'));
      // (The duplicate case acks checkpoint 1 first; the second ack breaks the link.)
      await link.waitAck(1, AbortSignal.timeout(5000)).catch(() => undefined);
      await pollUntil(() => link.broken, { what: 'the link to break', timeoutMs: 5000, intervalMs: 2 });
      expect(link.broken?.code).toBe(expected);
      link.close();
    }
  });

  it('a REFUSE from the backup carries its code to the primary', async () => {
    const s = await backup();
    const link = await BackupLink.connect(s.address, AbortSignal.timeout(5000));
    link.send(1, Buffer.from('one'));
    await link.waitAck(1, AbortSignal.timeout(5000));
    const other = await BackupLink.connect(s.address, AbortSignal.timeout(5000));
    other.send(1, Buffer.from('intruder'));
    await expect(other.waitAck(1, AbortSignal.timeout(5000))).rejects.toMatchObject({ code: BackupErrors.BUSY });
    expect(s.latest.toString()).toBe('one');
    link.close();
  });

  it('the link itself refuses to send out of order', async () => {
    const s = await backup();
    const link = await BackupLink.connect(s.address, AbortSignal.timeout(5000));
    expect(() => link.send(2, Buffer.from('x'))).toThrow(expect.objectContaining({ code: BackupErrors.CHECKPOINT_OUT_OF_ORDER }));
    const l2 = await BackupLink.connect(s.address, AbortSignal.timeout(5000));
    l2.send(1, Buffer.from('a'));
    // Before checkpoint 1 is acknowledged, 2 may not go.
    expect(() => l2.send(2, Buffer.from('b'))).toThrow(expect.objectContaining({ code: BackupErrors.CHECKPOINT_OUT_OF_ORDER }));
    l2.close();
  });
});

describe('the backup accepts only checkpoint N+1 of the connection it is bound to', () => {
  it('out-of-order checkpoints 5, 3, 4000000000, 0 are refused and the stored state stays', async () => {
    const s = await backup();
    const p = await peer(s);
    p.socket.write(state(1, 'one'));
    expect(await p.frame(1)).toMatchObject({ type: FrameType.ACK, checkpoint: 1 });
    p.socket.write(state(5, 'five'));
    await p.untilClosed();
    expect(p.refusal()).toBe(BackupErrors.CHECKPOINT_OUT_OF_ORDER);
    for (const cp of [3, 4_000_000_000, 0]) {
      const q = await peer(s);
      q.socket.write(state(cp, `cp ${cp}`));
      await q.untilClosed();
      expect(q.refusal()).toBe(BackupErrors.CHECKPOINT_OUT_OF_ORDER);
      expect(q.frames.filter((f) => f.type === FrameType.ACK)).toEqual([]);
    }
    expect(s.latest.toString()).toBe('one');
    expect(s.stats).toMatchObject({ acked: 1, lastCheckpoint: 1, refused: 4 });
  });

  it('a second connection is refused and does not replace the stored state; the bound one goes on', async () => {
    const s = await backup();
    const a = await peer(s);
    a.socket.write(state(1, 'primary 1'));
    await a.frame(1);
    const b = await peer(s);
    b.socket.write(state(1, 'intruder'));
    await b.untilClosed();
    expect(b.refusal()).toBe(BackupErrors.BUSY);
    expect(s.latest.toString()).toBe('primary 1');
    a.socket.write(state(2, 'primary 2'));
    expect(await a.frame(2)).toMatchObject({ type: FrameType.ACK, checkpoint: 2 });
    expect(s.latest.toString()).toBe('primary 2');
  });

  it('a higher epoch takes over, a lower one is refused, also across a restart with an epoch store', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'remus-backup-epoch-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const epochs = openEpochStore(join(dir, 'epoch.json'));
    const s = await backup({ epochs });
    const old = await peer(s);
    old.socket.write(state(1, 'epoch 3', 3));
    await old.frame(1);
    const next = await peer(s);
    next.socket.write(state(1, 'epoch 4', 4));
    expect(await next.frame(1)).toMatchObject({ type: FrameType.ACK, epoch: 4, checkpoint: 1 });
    await old.untilClosed();
    expect(old.refusal()).toBe('EPOCH_STALE');
    expect(s.latest.toString()).toBe('epoch 4');
    await s.close();
    const restarted = await backup({ epochs: openEpochStore(join(dir, 'epoch.json')) });
    const stale = await peer(restarted);
    stale.socket.write(state(1, 'epoch 3 again', 3));
    await stale.untilClosed();
    expect(stale.refusal()).toBe('EPOCH_STALE');
    expect(restarted.stats.acked).toBe(0);
  });

  it('an ack or a garbage header from the primary is refused', async () => {
    const s = await backup();
    const p = await peer(s);
    p.socket.write(encodeHeader(FrameType.ACK, 0, 1, 0));
    await p.untilClosed();
    expect(p.refusal()).toBe(BackupErrors.FRAME_INVALID);
    const q = await peer(s);
    q.socket.write(Buffer.from('GET / HTTP/1.1\r\nHost: backup.example\r\n\r\n'));
    await q.untilClosed();
    expect(q.refusal()).toBe(BackupErrors.FRAME_INVALID);
  });
});

describe('the backup is bounded', () => {
  it('a frame above the per-frame cap is refused at its header, before any buffer is made', async () => {
    const s = await backup({ maxFrameBytes: 1 << 20 });
    const p = await peer(s);
    p.socket.write(encodeHeader(FrameType.STATE, 0, 1, (1 << 20) + 1));
    await p.untilClosed();
    expect(p.refusal()).toBe(BackupErrors.FRAME_TOO_LARGE);
    expect(s.stats.memoryBytes).toBe(0);
  });

  it('a frame that would take the backup over its total memory cap is refused', async () => {
    const s = await backup({ maxFrameBytes: 1 << 20, maxMemoryBytes: (1 << 20) + (1 << 19) });
    const p = await peer(s);
    p.socket.write(encodeFrame(FrameType.STATE, 0, 1, Buffer.alloc(1 << 20, 1)));
    await p.frame(1);
    p.socket.write(encodeHeader(FrameType.STATE, 0, 2, 1 << 20));
    await p.untilClosed();
    expect(p.refusal()).toBe(BackupErrors.MEMORY_LIMIT);
    expect(s.latest.length).toBe(1 << 20);
    expect(s.stats.memoryBytes).toBe(1 << 20);
  });

  it('20 partial 8 MiB frames on 20 connections hold no buffer: one is bound, the rest refused', async () => {
    const s = await backup({ maxConnections: 32 });
    const ps = await Promise.all(Array.from({ length: 20 }, () => peer(s)));
    ps[0]?.socket.write(encodeHeader(FrameType.STATE, 0, 1, 8 << 20));
    await pollUntil(() => s.stats.memoryBytes > 0, { what: 'the first frame to be admitted', timeoutMs: 5000, intervalMs: 2 });
    for (const p of ps.slice(1)) p.socket.write(Buffer.concat([encodeHeader(FrameType.STATE, 0, 1, 8 << 20), Buffer.alloc(1 << 20)]));
    for (const p of ps.slice(1)) await p.untilClosed();
    expect(ps.slice(1).map((p) => p.refusal())).toEqual(Array(19).fill(BackupErrors.BUSY));
    // Only the bound connection's one frame is reserved.
    expect(s.stats.memoryBytes).toBe(8 << 20);
  });

  it('connections above the limit are refused at once', async () => {
    const s = await backup({ maxConnections: 2 });
    await peer(s);
    await peer(s);
    const third = await peer(s);
    await third.untilClosed();
    expect(third.refusal()).toBe(BackupErrors.CONNECTION_LIMIT);
    expect(s.stats.connections).toBe(2);
  });

  it('an idle connection is dropped after the idle timeout', async () => {
    const s = await backup({ idleTimeoutMs: 200 });
    const refused: string[] = [];
    s.on('refused', (e: { code: string }) => refused.push(e.code));
    const p = await peer(s);
    await p.untilClosed();
    expect(p.refusal()).toBe(BackupErrors.IDLE_TIMEOUT);
    expect(refused).toEqual([BackupErrors.IDLE_TIMEOUT]);
  });

  it('the link keeps a bound connection alive across checkpoint intervals longer than the idle timeout', async () => {
    const s = await backup({ idleTimeoutMs: 200 });
    const link = await BackupLink.connect(s.address, AbortSignal.timeout(5000), { keepAliveMs: 50 });
    link.send(1, Buffer.from('one'));
    await link.waitAck(1, AbortSignal.timeout(5000));
    await sleep(600);
    expect(link.broken).toBeUndefined();
    link.send(2, Buffer.from('two'));
    await link.waitAck(2, AbortSignal.timeout(5000));
    expect(s.stats.refused).toBe(0);
    link.close();
  });

  it('a keepalive does not bind or keep alive a connection that sent no checkpoint', async () => {
    const s = await backup();
    const p = await peer(s);
    p.socket.write(encodeHeader(FrameType.PING, 0, 0, 0));
    await p.untilClosed();
    expect(p.refusal()).toBe(BackupErrors.FRAME_INVALID);
  });

  it('a truncated frame is dropped after the frame timeout even while bytes trickle in', async () => {
    const s = await backup({ idleTimeoutMs: 10_000, frameTimeoutMs: 300 });
    const p = await peer(s);
    p.socket.write(encodeHeader(FrameType.STATE, 0, 1, 1000));
    const trickle = setInterval(() => p.socket.write(Buffer.alloc(1)), 20);
    cleanups.push(() => clearInterval(trickle));
    await p.untilClosed();
    expect(p.refusal()).toBe(BackupErrors.FRAME_TIMEOUT);
    expect(s.stats.memoryBytes).toBe(0);
  });

  it('a client that never reads its acks cannot grow the backup: it stops reading from it', async () => {
    // A unix socket: its buffers are fixed (~200 KiB), where TCP's receive buffer autotunes up to
    // tcp_rmem's maximum (32 MiB here) and could swallow every ack of the run before backpressure shows.
    const dir = mkdtempSync(join(tmpdir(), 'remus-backup-acks-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const s = await BackupServer.listen({ path: join(dir, 'backup.sock') }, { maxPendingAckBytes: 16 * 1024 });
    servers.push(s);
    const p = await peer(s, { read: false });
    const n = 200_000;
    const frames = Buffer.concat(Array.from({ length: n }, (_, i) => encodeHeader(FrameType.STATE, 0, i + 1, 0)));
    p.socket.write(frames);
    // Let it run until the acks stop moving.
    let last = -1;
    await pollUntil(
      () => {
        const now = s.stats.acked;
        const still = now === last;
        last = now;
        return still;
      },
      { what: 'acks to stop', timeoutMs: 10_000, intervalMs: 200 },
    );
    expect(s.stats.acked).toBeLessThan(n);
    // Held acks: the cap plus what one read chunk may add (64 KiB of frames -> 64 KiB of acks).
    expect(s.stats.pendingAckBytes).toBeLessThanOrEqual(16 * 1024 + 64 * 1024 + 28);
    // Reading resumes the flow.
    p.socket.on('data', () => undefined);
    p.socket.resume();
    await pollUntil(() => s.stats.acked === n, { what: 'every ack', timeoutMs: 20_000, intervalMs: 20 });
  });
});

describe('over any connected Duplex', () => {
  it('a link and a backup talk over an in-memory stream pair (no socket)', async () => {
    const s = BackupServer.create();
    servers.push(s);
    const [a, b] = duplexPair();
    s.accept(b);
    const link = BackupLink.over(a, { epoch: 2 });
    for (let cp = 1; cp <= 3; cp++) {
      link.send(cp, Buffer.from(`state ${cp}`));
      await link.waitAck(cp, AbortSignal.timeout(5000));
    }
    expect(s.latest.toString()).toBe('state 3');
    expect(s.stats).toMatchObject({ acked: 3, lastCheckpoint: 3, lastEpoch: 2 });
    link.close();
    await pollUntil(() => s.stats.connections === 0, { what: 'the backup to see the close', timeoutMs: 5000, intervalMs: 5 });
  });

  it('the checkpoint loop runs over it and commits each checkpoint after its ack', async () => {
    const s = BackupServer.create();
    servers.push(s);
    const [a, b] = duplexPair();
    s.accept(b);
    const link = BackupLink.over(a);
    const counter = commitCounter();
    const devices = createCheckpointDevices({ ops: [counter.ops], devices: [{ id: 'n0', kind: 'nic' }] });
    await devices.setup();
    const r = await runCheckpointLoop({ devices, domain: linkDomain(link), intervalMs: 1, maxCheckpoints: 20 });
    expect(r.checkpoints).toBe(20);
    expect(counter.commits()).toBe(20);
    expect(s.latest.toString()).toBe('state 20');
    link.close();
  });

  it('waitAck is bounded by its signal', async () => {
    const [a] = duplexPair();
    const link = BackupLink.over(a);
    link.send(1, Buffer.from('x'));
    await expect(link.waitAck(1, AbortSignal.timeout(50))).rejects.toBeDefined();
    link.close();
  });
});
