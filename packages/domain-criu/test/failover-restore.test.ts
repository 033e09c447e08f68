/**
 * failover() when `criu restore` itself fails after it started something: a
 * stand-in criu (fault injection only; the real restore is proven in the
 * kernel lab) starts a process, writes it to --pidfile and exits 1, as a
 * restore that failed half-way. The failover must reject with
 * criu/RESTORE_FAILED carrying criu's own error line, leave nothing running,
 * release its lock, and reach criu again on a retry.
 * The restore point is a real one, received by createCriuBackup.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive } from '@remus/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { CriuErrors, Frame, FrameReader, createCriuBackup, encodeFrame, failover, filePayload } from '../src/index.js';

let root: string;
const started: number[] = [];
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'rmcriu2-fo-'));
});
afterEach(() => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  rmSync(root, { recursive: true, force: true });
});

/** Checkpoint 1 received by a real backup receiver; resolves when it is the restore point. */
async function restorePoint(dir: string): Promise<void> {
  const sock = join(root, 'b.sock');
  const backup = await createCriuBackup({ dir, listen: { path: sock } });
  try {
    const socket = connect(sock);
    await new Promise((r, j) => socket.once('connect', r).once('error', j));
    const reader = new FrameReader();
    const answer = new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no answer from the backup')), 5000);
      socket.on('data', (c: Buffer) => {
        for (const f of reader.push(c)) {
          if (f.type === Frame.ACK || f.type === Frame.NACK) {
            clearTimeout(t);
            resolve(f.type);
          }
        }
      });
    });
    const hash = createHash('sha256');
    socket.write(encodeFrame(Frame.BEGIN, 1, Buffer.from(JSON.stringify({ parent: null, epoch: 0 }))));
    for (const [name, data] of Object.entries({ 'inventory.img': Buffer.from('inv'.repeat(50)), 'pages-1.img': Buffer.alloc(8192, 7) })) {
      const p = filePayload(name, data);
      hash.update(p);
      socket.write(encodeFrame(Frame.FILE, 1, p));
    }
    socket.write(encodeFrame(Frame.END, 1, hash.digest()));
    expect(await answer).toBe(Frame.ACK);
    socket.destroy();
  } finally {
    await backup.close();
  }
}

/** A stand-in criu whose `restore` starts a sleep, records it in --pidfile, logs criu's error and exits 1. */
function failingCriu(): { path: string; calls: string } {
  const path = join(root, 'criu');
  const calls = join(root, 'calls');
  writeFileSync(
    path,
    `#!/bin/sh
echo "$*" >> '${calls}'
pf=; log=; prev=
for a in "$@"; do
  [ "$prev" = --pidfile ] && pf=$a
  [ "$prev" = -o ] && log=$a
  prev=$a
done
setsid sleep 300 </dev/null >/dev/null 2>&1 &
echo $! > "$pf"
echo $! >> '${calls}.pids'
echo "Error (criu/cr-restore.c:1469): Can't fork for 4242: File exists" >> "$log"
echo "Error (criu/cr-restore.c:2537): Restoring FAILED." >> "$log"
exit 1
`,
  );
  chmodSync(path, 0o755);
  return { path, calls };
}

/** True while `pid` runs (a zombie does not count). */
const running = (pid: number): boolean => processAlive(pid);

it('a restore that fails half-way: RESTORE_FAILED with criu\'s error, nothing left running, no lock, retry reaches criu', async () => {
  const dir = join(root, 'cp');
  await restorePoint(dir);
  const fake = failingCriu();
  const ready = { criu: fake.path, softDirty: true };

  const err = await failover({ restorePoint: dir, ready }).then(
    () => undefined,
    (e: unknown) => e as { code: string; message: string },
  );
  expect(err?.code).toBe(CriuErrors.RESTORE_FAILED);
  expect(err?.message).toContain("Can't fork for 4242");
  // The process the failed restore started is gone; its pid file too.
  const pids = readFileSync(`${fake.calls}.pids`, 'utf8').trim().split('\n').map(Number);
  started.push(...pids);
  expect(pids).toHaveLength(1);
  await expect.poll(() => running(pids[0] as number), { timeout: 5000 }).toBe(false);
  expect(existsSync(join(dir, '.restore-1.pid'))).toBe(false);
  expect(existsSync(join(dir, '.failover'))).toBe(false);

  // A retry is allowed and reaches criu again (it fails the same way).
  await expect(failover({ restorePoint: dir, ready })).rejects.toMatchObject({ code: CriuErrors.RESTORE_FAILED });
  const calls = readFileSync(fake.calls, 'utf8').trim().split('\n');
  expect(calls).toHaveLength(2);
  expect(calls[0]).toMatch(/^restore -D \S+ .*-d --tcp-established/);
}, 30_000);
