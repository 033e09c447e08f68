/**
 * The backup receiver over a real Unix socket and real files: a checkpoint
 * becomes the restore point only when complete and its checksum matches;
 * torn, damaged, out-of-order and oversized transfers never replace it.
 * (No criu needed: the images are opaque bytes to the receiver.)
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CriuErrors, Frame, FrameReader, createCheckpointReceiver, createCriuBackup, encodeFrame, filePayload, verifyRestorePoint, type CriuBackup } from '../src/index.js';

let root: string;
let backup: CriuBackup | undefined;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'rmcriu-backup-'));
});
afterEach(async () => {
  await backup?.close();
  backup = undefined;
  rmSync(root, { recursive: true, force: true });
});

async function start(extra: Partial<Parameters<typeof createCriuBackup>[0]> = {}): Promise<CriuBackup> {
  backup = await createCriuBackup({ dir: join(root, 'cp'), listen: { path: join(root, 'b.sock') }, ...extra });
  return backup;
}

describe('the unauthenticated listener stays on this machine (issue 15)', () => {
  it('an address other machines can reach is refused before anything is made; loopback binds, and allowRemote opts in', async () => {
    for (const listen of ['0.0.0.0:0', '[::]:0', '10.1.2.3:7790']) {
      await expect(createCriuBackup({ dir: join(root, 'no'), listen }), listen).rejects.toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: expect.stringMatching(/restored as root.*no authentication.*loopback address or a Unix socket/),
      });
    }
    expect(existsSync(join(root, 'no')), 'no checkpoint directory made').toBe(false);
    const local = await createCriuBackup({ dir: join(root, 'lo'), listen: '127.0.0.1:0' });
    await local.close();
    const remote = await createCriuBackup({ dir: join(root, 'any'), listen: '0.0.0.0:0', allowRemote: true });
    await remote.close();
  });
});

/** A primary's side of the protocol: sends frames, collects ACK/NACK frames. */
async function dial(): Promise<{ socket: Socket; next: () => Promise<{ type: number; checkpoint: number; text: string }> }> {
  const socket = connect(join(root, 'b.sock'));
  await new Promise((r, j) => socket.once('connect', r).once('error', j));
  const reader = new FrameReader();
  const got: { type: number; checkpoint: number; text: string }[] = [];
  const waiters: ((v: { type: number; checkpoint: number; text: string }) => void)[] = [];
  socket.on('data', (c: Buffer) => {
    for (const f of reader.push(c)) {
      const v = { type: f.type, checkpoint: f.checkpoint, text: f.payload.toString('utf8') };
      const w = waiters.shift();
      if (w) w(v);
      else got.push(v);
    }
  });
  const next = () =>
    new Promise<{ type: number; checkpoint: number; text: string }>((resolve, reject) => {
      const v = got.shift();
      if (v) return resolve(v);
      const t = setTimeout(() => reject(new Error('no answer from the backup')), 5000);
      waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  return { socket, next };
}

function checkpointFrames(n: number, parent: number | null, files: Record<string, Buffer>, o: { damage?: boolean; omitEnd?: boolean } = {}): Buffer[] {
  const hash = createHash('sha256');
  const out = [encodeFrame(Frame.BEGIN, n, Buffer.from(JSON.stringify({ parent, epoch: 0 })))];
  for (const [name, data] of Object.entries(files)) {
    const p = filePayload(name, data);
    hash.update(p);
    const sent = Buffer.from(p);
    if (o.damage) sent[sent.length - 1] ^= 0xff;
    out.push(encodeFrame(Frame.FILE, n, sent));
  }
  if (!o.omitEnd) out.push(encodeFrame(Frame.END, n, hash.digest()));
  return out;
}

const img = (s: string): Buffer => Buffer.from(s.repeat(100));

describe('criu backup receiver', () => {
  it('makes a complete checkpoint the restore point, incremental over its parent, and prunes older chains', async () => {
    const b = await start();
    const { socket, next } = await dial();
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a'), 'core-1.img': img('c') })) socket.write(f);
    expect(await next()).toMatchObject({ type: Frame.ACK, checkpoint: 1 });
    expect(b.restorePoint()?.checkpoint).toBe(1);
    for (const f of checkpointFrames(2, 1, { 'pages-1.img': img('b') })) socket.write(f);
    expect(await next()).toMatchObject({ type: Frame.ACK, checkpoint: 2 });
    expect(b.restorePoint()?.checkpoint).toBe(2);
    expect(readFileSync(join(root, 'cp', '2', 'parent', 'core-1.img'))).toEqual(img('c'));
    expect(verifyRestorePoint(join(root, 'cp'))).toEqual([2, 1]);
    for (const f of checkpointFrames(3, null, { 'pages-1.img': img('d') })) socket.write(f);
    expect(await next()).toMatchObject({ type: Frame.ACK, checkpoint: 3 });
    expect(readdirSync(join(root, 'cp')).filter((e) => /^\d+$/.test(e))).toEqual(['3']);
    socket.destroy();
  });

  it('refuses images damaged in transit (checksum) and keeps checkpoint N-1 as the restore point', async () => {
    const b = await start();
    const { socket, next } = await dial();
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a') })) socket.write(f);
    expect((await next()).type).toBe(Frame.ACK);
    for (const f of checkpointFrames(2, 1, { 'pages-1.img': img('b') }, { damage: true })) socket.write(f);
    const nack = await next();
    expect(nack).toMatchObject({ type: Frame.NACK, checkpoint: 2 });
    expect(nack.text).toContain(CriuErrors.CHECKSUM_MISMATCH);
    expect(b.restorePoint()?.checkpoint).toBe(1);
    expect(existsSync(join(root, 'cp', '.staging-2'))).toBe(false);
    // The link stays usable: the next (full) checkpoint is accepted.
    for (const f of checkpointFrames(3, null, { 'pages-1.img': img('c') })) socket.write(f);
    expect(await next()).toMatchObject({ type: Frame.ACK, checkpoint: 3 });
    socket.destroy();
  });

  it('refuses checkpoints while a failover from its directory runs or ran (its lock): the restore point does not move under a restore', async () => {
    const b = await start();
    const { socket, next } = await dial();
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a') })) socket.write(f);
    expect((await next()).type).toBe(Frame.ACK);
    writeFileSync(join(root, 'cp', '.failover'), '1\n');
    for (const f of checkpointFrames(2, null, { 'pages-1.img': img('b') })) socket.write(f);
    const nack = await next();
    expect(nack).toMatchObject({ type: Frame.NACK, checkpoint: 2 });
    expect(nack.text).toContain('STATE');
    expect(b.restorePoint()?.checkpoint).toBe(1);
    expect(verifyRestorePoint(join(root, 'cp'))).toEqual([1]);
    socket.destroy();
  });

  it('discards a transfer torn by a closed connection; the restore point stays', async () => {
    const refused: number[] = [];
    const b = await start({ onRefused: (n) => refused.push(n) });
    const first = await dial();
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a') })) first.socket.write(f);
    expect((await first.next()).type).toBe(Frame.ACK);
    for (const f of checkpointFrames(2, 1, { 'pages-1.img': img('b') }, { omitEnd: true })) first.socket.write(f);
    await new Promise((r) => setTimeout(r, 100));
    first.socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(refused).toEqual([2]);
    expect(b.restorePoint()?.checkpoint).toBe(1);
    expect(readdirSync(join(root, 'cp')).some((e) => e.startsWith('.staging'))).toBe(false);
  });

  it('refuses an increment over a checkpoint that is not the restore point, a checkpoint not after it, and oversized checkpoints', async () => {
    const b = await start({ maxCheckpointBytes: 1000 });
    const { socket, next } = await dial();
    for (const f of checkpointFrames(1, 7, { 'pages-1.img': img('a') })) socket.write(f);
    expect((await next()).text).toContain(CriuErrors.TRANSFER_REFUSED);
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a') })) socket.write(f);
    expect((await next()).type).toBe(Frame.ACK);
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a') })) socket.write(f);
    expect((await next()).type).toBe(Frame.NACK);
    for (const f of checkpointFrames(2, 1, { 'pages-1.img': Buffer.alloc(2000) })) socket.write(f);
    expect((await next()).text).toContain('exceeds 1000 bytes');
    expect(b.restorePoint()?.checkpoint).toBe(1);
    socket.destroy();
  });

  it('a new primary run (a new connection numbering from 1 again) starts a new chain after the restore point; within a connection the order still holds', async () => {
    let seen!: () => void;
    const lost = new Promise<void>((r) => (seen = r));
    const b = await start({ onPrimaryLost: () => seen() });
    const a = await dial();
    for (const n of [1, 2, 3]) {
      for (const f of checkpointFrames(n, n === 1 ? null : n - 1, { 'pages-1.img': img(String(n)) })) a.socket.write(f);
      expect(await a.next()).toMatchObject({ type: Frame.ACK, checkpoint: n });
    }
    a.socket.destroy();
    await lost; // the backup takes one primary at a time: it saw this one go
    const c = await dial();
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('x') })) c.socket.write(f);
    expect(await c.next()).toMatchObject({ type: Frame.ACK, checkpoint: 1 });
    expect(b.restorePoint()?.checkpoint).toBe(4);
    for (const f of checkpointFrames(2, 1, { 'pages-1.img': img('y') })) c.socket.write(f);
    expect(await c.next()).toMatchObject({ type: Frame.ACK, checkpoint: 2 });
    expect(b.restorePoint()?.checkpoint).toBe(5);
    expect(verifyRestorePoint(join(root, 'cp'))).toEqual([5, 4]);
    expect(readFileSync(join(root, 'cp', '5', 'pages-1.img'))).toEqual(img('y'));
    // Within the connection, a full checkpoint not after the last one is still refused.
    for (const f of checkpointFrames(2, null, { 'pages-1.img': img('z') })) c.socket.write(f);
    expect((await c.next()).type).toBe(Frame.NACK);
    expect(b.restorePoint()?.checkpoint).toBe(5);
    c.socket.destroy();
  });

  it('closes a connection whose frame header declares more than the frame cap, or names a path', async () => {
    const b = await start({ maxFrameBytes: 4096 });
    const a = await dial();
    a.socket.write(encodeFrame(Frame.BEGIN, 1, Buffer.from('{"parent":null}')));
    a.socket.write(encodeFrame(Frame.FILE, 1, filePayload('pages-1.img', Buffer.alloc(5000))).subarray(0, 16));
    expect((await a.next()).text).toContain(CriuErrors.FRAME_TOO_LARGE);
    await new Promise((r) => a.socket.once('close', r));
    const c = await dial();
    c.socket.write(encodeFrame(Frame.BEGIN, 1, Buffer.from('{"parent":null}')));
    c.socket.write(encodeFrame(Frame.FILE, 1, filePayload('../../etc/passwd', Buffer.from('x'))));
    expect((await c.next()).text).toContain(CriuErrors.FRAME_INVALID);
    expect(b.restorePoint()).toBeUndefined();
  });

  it('verifyRestorePoint finds an image damaged on disk and names it', async () => {
    await start();
    const { socket, next } = await dial();
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a'), 'core-1.img': img('c') })) socket.write(f);
    expect((await next()).type).toBe(Frame.ACK);
    socket.destroy();
    const file = join(root, 'cp', '1', 'core-1.img');
    const data = readFileSync(file);
    data[10] ^= 1;
    writeFileSync(file, data);
    expect(() => verifyRestorePoint(join(root, 'cp'))).toThrow(/core-1.img does not match its checksum/);
  });

  it('reports a primary lost when its connection closes, once, with the restore point; a connection that never delivered a checkpoint is not a primary', async () => {
    const lost: unknown[] = [];
    await start({ onPrimaryLost: (e) => lost.push(e) });
    const stranger = await dial();
    stranger.socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(lost).toEqual([]);
    const { socket, next } = await dial();
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a') })) socket.write(f);
    expect((await next()).type).toBe(Frame.ACK);
    socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(lost).toMatchObject([{ kind: 'closed', restorePoint: { checkpoint: 1 } }]);
  });

  it('reports a primary lost when it is silent past the bound, and PINGs keep a live one', async () => {
    const lost: { kind: string; silentMs: number }[] = [];
    await start({ idleTimeoutMs: 400, onPrimaryLost: (e) => lost.push(e) });
    const { socket, next } = await dial();
    for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a') })) socket.write(f);
    expect((await next()).type).toBe(Frame.ACK);
    const ping = setInterval(() => socket.write(encodeFrame(Frame.PING, 0)), 100);
    await new Promise((r) => setTimeout(r, 900));
    expect(lost).toEqual([]);
    clearInterval(ping);
    await new Promise((r) => setTimeout(r, 900));
    expect(lost).toEqual([{ kind: 'silent', silentMs: 400, restorePoint: expect.objectContaining({ checkpoint: 1 }) }]);
    expect(socket.destroyed || socket.readableEnded).toBe(true);
  });

  it('backup disk full (root: mounts a real 64 KiB tmpfs): the checkpoint is refused with the write error, the restore point stays, the next one that fits is accepted', async () => {
    const mnt = join(root, 'small');
    execFileSync('mkdir', ['-p', mnt]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'rmcriu-test', mnt]);
    try {
      const b = await createCriuBackup({ dir: join(mnt, 'cp'), listen: { path: join(root, 'b.sock') } });
      backup = b;
      const { socket, next } = await dial();
      for (const f of checkpointFrames(1, null, { 'pages-1.img': img('a') })) socket.write(f);
      expect((await next()).type).toBe(Frame.ACK);
      for (const f of checkpointFrames(2, 1, { 'pages-1.img': Buffer.alloc(200_000, 7) })) socket.write(f);
      const nack = await next();
      expect(nack).toMatchObject({ type: Frame.NACK, checkpoint: 2 });
      expect(nack.text).toContain('ENOSPC');
      expect(b.restorePoint()?.checkpoint).toBe(1);
      expect(readdirSync(join(mnt, 'cp')).some((e) => e.startsWith('.staging'))).toBe(false);
      for (const f of checkpointFrames(3, null, { 'pages-1.img': img('b') })) socket.write(f);
      expect(await next()).toMatchObject({ type: Frame.ACK, checkpoint: 3 });
      socket.destroy();
      await b.close();
      backup = undefined;
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});


describe('checkpoints carried as whole records over a channel of the caller (remus agent, issue 15)', () => {
  const record = (...a: Parameters<typeof checkpointFrames>): Buffer => Buffer.concat(checkpointFrames(...a));
  const code = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      return (e as { code: string }).code;
    }
    return 'stored';
  };

  it('stores a full record as the restore point, an increment over it with its parent link, and a later full record starts a new chain (older pruned)', () => {
    const r = createCheckpointReceiver({ dir: join(root, 'rx') });
    expect(r.restorePoint()).toBeUndefined();
    expect(r.store(record(7, null, { 'pages-1.img': img('a'), 'core-1.img': img('c') }))).toMatchObject({ checkpoint: 1, parent: null, bytes: 200 });
    expect(r.store(record(8, 7, { 'pages-1.img': img('b') }))).toMatchObject({ checkpoint: 2, parent: 1 });
    expect(readFileSync(join(root, 'rx', '2', 'parent', 'core-1.img'))).toEqual(img('c'));
    expect(verifyRestorePoint(join(root, 'rx'))).toEqual([2, 1]);
    // A new session of the sender numbers from 1 again and starts with a full dump: a new chain after the restore point.
    expect(r.store(record(1, null, { 'pages-1.img': img('d') }))).toMatchObject({ checkpoint: 3, parent: null });
    expect(r.store(record(2, 1, { 'pages-1.img': img('e') }))).toMatchObject({ checkpoint: 4, parent: 3 });
    expect(readdirSync(join(root, 'rx')).filter((e) => /^\d+$/.test(e)).sort()).toEqual(['3', '4']);
  });

  it('refuses an increment over anything but the record stored last, damaged images, a torn record, and frames of another checkpoint; the restore point stays and nothing is left staged', () => {
    const dir = join(root, 'rx');
    const r = createCheckpointReceiver({ dir });
    expect(code(() => r.store(record(2, 1, { 'pages-1.img': img('a') })))).toBe(CriuErrors.TRANSFER_REFUSED);
    r.store(record(1, null, { 'pages-1.img': img('a') }));
    expect(code(() => r.store(record(3, 1, { 'pages-1.img': img('b') })).toString())).toBe('stored');
    expect(code(() => r.store(record(5, 1, { 'pages-1.img': img('b') })))).toBe(CriuErrors.TRANSFER_REFUSED);
    expect(code(() => r.store(record(4, 3, { 'pages-1.img': img('b') }, { damage: true })))).toBe(CriuErrors.CHECKSUM_MISMATCH);
    const whole = record(4, 3, { 'pages-1.img': img('b') });
    expect(code(() => r.store(whole.subarray(0, whole.length - 5)))).toBe(CriuErrors.FRAME_INVALID);
    expect(code(() => r.store(record(4, 3, { 'pages-1.img': img('b') }, { omitEnd: true })))).toBe(CriuErrors.FRAME_INVALID);
    const mixed = [...checkpointFrames(4, 3, { 'pages-1.img': img('b') })];
    mixed.splice(1, 0, encodeFrame(Frame.FILE, 9, filePayload('core-1.img', img('x'))));
    expect(code(() => r.store(Buffer.concat(mixed)))).toBe(CriuErrors.FRAME_INVALID);
    expect(code(() => r.store(Buffer.concat([whole, encodeFrame(Frame.PING, 0)])))).toBe(CriuErrors.FRAME_INVALID);
    expect(code(() => r.store(record(4, 3, { '../escape.img': img('b') })))).toBe(CriuErrors.FRAME_INVALID);
    expect(r.restorePoint()?.checkpoint).toBe(2);
    expect(readdirSync(dir).filter((e) => e.startsWith('.staging'))).toEqual([]);
    // The chain is intact: the next increment over the sender's 3 is stored.
    expect(r.store(whole)).toMatchObject({ checkpoint: 3, parent: 2 });
    expect(verifyRestorePoint(dir)).toEqual([3, 2, 1]);
  });

  it('refuses records while a failover from its directory ran (its lock), and a record above the size cap', () => {
    const dir = join(root, 'rx');
    const r = createCheckpointReceiver({ dir, maxCheckpointBytes: 1000 });
    r.store(record(1, null, { 'pages-1.img': img('a') }));
    expect(code(() => r.store(record(2, null, { 'pages-1.img': Buffer.alloc(1001) })))).toBe(CriuErrors.TRANSFER_REFUSED);
    writeFileSync(join(dir, '.failover'), '1\n');
    expect(code(() => r.store(record(2, 1, { 'pages-1.img': img('b') })))).toBe('STATE');
    expect(r.restorePoint()?.checkpoint).toBe(1);
  });
});
