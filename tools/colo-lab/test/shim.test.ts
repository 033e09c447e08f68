/**
 * The test-only TCG shim, on a real QEMU (no guest: `-machine none`): it
 * announces itself, keeps its counters file, and refuses loudly (exit 97)
 * whenever its preconditions do not hold, so it can never apply silently
 * where it was not meant to.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHIM_BANNER, SHIM_REFUSE_EXIT, buildShim, detectAccel, readShimStats } from '../src/index.js';

let dir: string;
let shim: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), `colo-lab-shim-${process.pid}-`));
  shim = await buildShim(join(dir, 'shim.so'));
}, 120_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs QEMU with the shim; kills it by pid after `lingerMs` if it is still running. */
function runQemu(args: string[], env: Record<string, string>, lingerMs = 3000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', ...args], {
      env: { ...process.env, LD_PRELOAD: shim, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, lingerMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

const GOOD = ['-name', 'shimtest,debug-threads=on', '-smp', '1', '-accel', 'tcg'];

describe('TCG workaround shim on a real QEMU', () => {
  it('announces itself and writes its counters when its preconditions hold', async () => {
    const stats = join(dir, 'good.stats');
    const r = await runQemu(GOOD, { COLO_SHIM_ROLE: 'secondary', COLO_SHIM_STATS: stats }, 2500);
    expect(r.output).toContain(SHIM_BANNER);
    expect(r.output).toContain('role secondary');
    expect(existsSync(stats)).toBe(true);
    expect(readShimStats(stats)).toMatchObject({ role: 'secondary', unownedWaits: 0, kicks: 0 });
  });

  it.each([
    ['without debug-threads=on', ['-name', 'shimtest', '-smp', '1', '-accel', 'tcg'], 'debug-threads=on'],
    ['with two vCPUs', ['-name', 'shimtest,debug-threads=on', '-smp', '2', '-accel', 'tcg'], '-smp 1'],
    ['with KVM', ['-name', 'shimtest,debug-threads=on', '-smp', '1', '-accel', 'kvm'], 'KVM'],
  ])('refuses loudly %s', async (_what, args, why) => {
    const r = await runQemu(args, { COLO_SHIM_ROLE: 'primary' });
    expect(r.code).toBe(SHIM_REFUSE_EXIT);
    expect(r.output).toMatch(/colo-tcg-shim: REFUSING/);
    expect(r.output).toContain(why);
  });

  it('refuses without a role', async () => {
    const r = await runQemu(GOOD, { COLO_SHIM_ROLE: '' });
    expect(r.code).toBe(SHIM_REFUSE_EXIT);
    expect(r.output).toContain('COLO_SHIM_ROLE');
  });

  it('stays out of programs that are not QEMU', async () => {
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn('ip', ['-V'], { env: { ...process.env, LD_PRELOAD: shim, COLO_SHIM_ROLE: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (out += d.toString()));
      c.on('exit', (code) => resolve({ code, out }));
    });
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('colo-tcg-shim');
  });
});

describe('accelerator choice', () => {
  it('REMUS_COLO_ACCEL overrides detection and is validated', () => {
    const saved = process.env.REMUS_COLO_ACCEL;
    try {
      process.env.REMUS_COLO_ACCEL = 'kvm';
      expect(detectAccel()).toBe('kvm');
      process.env.REMUS_COLO_ACCEL = 'tcg';
      expect(detectAccel()).toBe('tcg');
      process.env.REMUS_COLO_ACCEL = 'xen';
      expect(() => detectAccel()).toThrow(/kvm or tcg/);
    } finally {
      if (saved === undefined) delete process.env.REMUS_COLO_ACCEL;
      else process.env.REMUS_COLO_ACCEL = saved;
    }
  });
});
