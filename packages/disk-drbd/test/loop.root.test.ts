// Needs root: makes a real loop device from a scratch file (this host has no
// DRBD module) and checks the subkind declines it. Cleans up the loop device
// and the file even when the test fails.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, ftruncateSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createCheckpointDevices, type DeviceHandle } from '@remus/core';
import { diskDrbd } from '../src/index.js';
import { ctx } from './fixtures.js';

let dir: string;
let loop: string | undefined;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), `remus-disk-drbd-loop-${process.pid}-`));
  const file = join(dir, 'disk.img');
  const fd = openSync(file, 'w');
  ftruncateSync(fd, 4 * 1024 * 1024);
  closeSync(fd);
  loop = execFileSync('losetup', ['--find', '--show', file], { encoding: 'utf8' }).trim();
});
afterAll(() => {
  if (loop) execFileSync('losetup', ['-d', loop]);
  rmSync(dir, { recursive: true, force: true });
});

it('a loop device that is not DRBD is "not mine", with its major in the reason', async () => {
  const ops = diskDrbd();
  const shared = await ops.init!(ctx());
  try {
    const h: DeviceHandle<any, any> = { device: { id: 'xvda', kind: 'disk', params: { path: loop } }, shared, data: undefined };
    expect(await ops.match!(h, ctx())).toEqual({ match: false, reason: expect.stringMatching(/is block device 7:\d+, not a DRBD device \(major 147\)/) });
  } finally {
    await ops.cleanup!(shared, ctx());
  }
});

it('the core reports DEVICE_NOT_SUPPORTED with that reason when disk-drbd is the only disk subkind', async () => {
  const layer = createCheckpointDevices({ ops: [diskDrbd()], devices: [{ id: 'xvda', kind: 'disk', params: { path: loop } }] });
  const e = (await layer.setup().catch((x: unknown) => x)) as Error & { code: string; failures: { code: string; message: string }[] };
  expect(e.code).toBe('PHASE_FAILED');
  expect(e.failures[0]?.code).toBe('DEVICE_NOT_SUPPORTED');
  expect(e.failures[0]?.message).toMatch(/not a DRBD device/);
  await layer.teardown();
});
