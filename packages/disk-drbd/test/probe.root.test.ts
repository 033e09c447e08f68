// Needs root (mknod, via FakeDrbd). The operator's probe script replaces the
// built-in probe, with Xen's block-drbd-probe exit codes; real scripts here.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeviceHandle } from '@remus/core';
import { diskDrbd, openProcDrbd } from '../src/index.js';
import { ctx, FakeDrbd, minorText, procText } from './fixtures.js';

let fake: FakeDrbd;
beforeEach(() => {
  fake = new FakeDrbd();
});
afterEach(() => fake.remove());

/** A probe that records its arguments, prints a line on stderr and exits with `code`. */
function probe(code: number, say = ''): { file: string; args: () => string } {
  const file = join(fake.dir, `probe-${code}.sh`);
  const argsFile = join(fake.dir, `probe-${code}.args`);
  writeFileSync(file, `#!/bin/sh\nprintf '%s\\n' "$@" > '${argsFile}'\n${say ? `echo '${say}' >&2\n` : ''}exit ${code}\n`);
  chmodSync(file, 0o755);
  return { file, args: () => readFileSync(argsFile, 'utf8') };
}

async function matchWith(file: string, path = fake.devicePath) {
  const ops = diskDrbd({ probe: file, stateSource: () => openProcDrbd(fake.statusFile), drbdsetup: '/bin/false' });
  const shared = await ops.init!(ctx());
  const h: DeviceHandle<any, any> = { device: { id: 'xvda', kind: 'disk', params: { path } }, shared, data: undefined };
  try {
    return await Promise.resolve(ops.match!(h, ctx())).then(
      (v) => ({ ok: v, error: undefined as (Error & { code?: string }) | undefined }),
      (e: Error & { code?: string }) => ({ ok: undefined, error: e }),
    );
  } finally {
    await ops.cleanup!(shared, ctx());
  }
}

describe('operator probe script (Xen exit codes)', () => {
  it('exit 0: the device is taken, and the probe got the device path as its one argument', async () => {
    // The kernel state says Secondary: with a probe, the probe decides at match, not the built-in checks.
    fake.write(procText(minorText(7, { ro: 'Secondary/Secondary' })));
    const p = probe(0);
    expect((await matchWith(p.file)).ok).toBe(true);
    expect(p.args()).toBe(`${fake.devicePath}\n`);
  });

  it('exit 1: "not mine", with the probe and its words in the reason', async () => {
    const r = await matchWith(probe(1, 'no drbd here').file);
    expect(r.ok).toEqual({ match: false, reason: expect.stringMatching(/says .* is not a DRBD device \(no drbd here\)/) });
  });

  for (const [code, meaning] of [
    [2, /an unknown error/],
    [3, /not configured for the Remus protocol/],
    [4, /not Connected or not Primary/],
  ] as const) {
    it(`exit ${code}: a DEVICE_NOT_READY error saying what the probe reported, never "not mine"`, async () => {
      const r = await matchWith(probe(code, 'resource r0 is WFConnection').file);
      expect(r.error?.code).toBe('DEVICE_NOT_READY');
      expect(r.error?.message).toMatch(meaning);
      expect(r.error?.message).toMatch(/resource r0 is WFConnection/);
      expect(r.error?.message).toMatch(/Fix: /);
    });
  }

  it('another exit code: SCRIPT_FAILED', async () => {
    const r = await matchWith(probe(9, 'crashed').file);
    expect(r.error?.code).toBe('SCRIPT_FAILED');
  });

  it('exit 0 for a path that is not a DRBD device: an error, the probe and the path disagree', async () => {
    const r = await matchWith(probe(0).file, fake.plainFile);
    expect(r.error?.code).toBe('DEVICE_NOT_READY');
    expect(r.error?.message).toMatch(/said .* is a ready DRBD device, but .* not a block device/);
  });
});
