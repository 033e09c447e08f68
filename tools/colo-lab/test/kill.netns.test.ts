// QemuProcess.kill on a real QEMU (no guest) in a namespace of its own: it
// resolves once QEMU is gone; given no time to see the exit, it says so
// (TIMEOUT naming the pid) instead of returning as if QEMU were gone.
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { createNamespace, processAlive, tempDir, waitFor } from '@remus/test-lab';
import { spawnQemu } from '../src/index.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function qemu() {
  const ns = createNamespace('rcolok');
  const t = tempDir('colo-kill');
  cleanups.push(ns.destroy, t.remove);
  return spawnQemu(ns.name, ['-S', '-nodefaults', '-display', 'none', '-machine', 'none'], join(t.dir, 'qemu.log'));
}

it('kill() resolves once QEMU is gone, and again at once', async () => {
  const q = qemu();
  await waitFor(() => processAlive(q.pid), 10_000, 'QEMU to run');
  await q.kill();
  expect(q.gone).toBe(true);
  expect(processAlive(q.pid)).toBe(false);
  await q.kill();
});

it('kill() that cannot see the exit within its bound rejects with TIMEOUT naming the pid (it never passes for gone silently)', async () => {
  const q = qemu();
  await waitFor(() => processAlive(q.pid), 10_000, 'QEMU to run');
  const killing = q.kill(0);
  // Keep the event loop busy until both the 0 ms bound and QEMU's exit are due: timers run before the exit is read, so the bound wins.
  for (const until = Date.now() + 100; Date.now() < until; );
  await expect(killing).rejects.toMatchObject({ code: 'TIMEOUT', message: expect.stringContaining(String(q.pid)) });
  await q.exited;
  expect(q.gone).toBe(true);
});
