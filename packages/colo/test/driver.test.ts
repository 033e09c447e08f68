/**
 * The driver's bounds, liveness checks and the id scheme, without a QEMU
 * (driver.qemu.test.ts runs the driver on real QEMUs; tools/colo-lab runs it
 * end to end with a guest).
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ColoPair, DEFAULT_WATCHDOG, coloIds, processAlive, watchdogBoundMs } from '../src/index.js';

describe('COLO driver', () => {
  it('connect gives up within its bound when a QMP socket never answers, leaving nothing open', async () => {
    const t0 = performance.now();
    const e = await ColoPair.connect(
      {
        primary: { qmp: '/nonexistent/colo-lab/p.qmp', devices: [] },
        secondary: { qmp: '/nonexistent/colo-lab/s.qmp', devices: [] },
        migrationUri: 'tcp:127.0.0.1:1',
      },
      600,
    ).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: expect.stringMatching(/^(qmp\/QMP_FAILED|TIMEOUT)$/) });
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('states the watchdog bound for a hung peer', () => {
    expect(watchdogBoundMs()).toBe((DEFAULT_WATCHDOG.intervalMs + DEFAULT_WATCHDOG.probeTimeoutMs) * DEFAULT_WATCHDOG.misses + DEFAULT_WATCHDOG.intervalMs);
    expect(watchdogBoundMs({ intervalMs: 100, probeTimeoutMs: 500, misses: 2 })).toBe(1300);
  });

  it('tells a live process from one that is gone', async () => {
    expect(processAlive(process.pid)).toBe(true);
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const pid = child.pid!;
    await new Promise((r) => child.once('spawn', r));
    expect(processAlive(pid)).toBe(true);
    const gone = new Promise((r) => child.once('exit', r));
    process.kill(pid, 'SIGKILL');
    await gone;
    expect(processAlive(pid)).toBe(false);
  });

  it('refuses pids that cannot be processes', () => {
    for (const pid of [0, -1, 1.5, Number.NaN]) expect(processAlive(pid)).toBe(false);
  });

  it('names every QEMU id from operation and device alone: tagged, unique, node names within 31 characters', () => {
    const a = coloIds('op1', 'nic0');
    expect(coloIds('op1', 'nic0')).toEqual(a);
    const all = [...Object.values(a.primaryNic), ...Object.values(a.secondaryNic), a.secondaryDisk.export];
    expect(all.every((id) => id.startsWith('colo.op1.nic0.'))).toBe(true);
    expect(new Set(all).size).toBe(all.length);
    expect(a.primaryDisk.node).toMatch(/^colo-[0-9a-f]{16}-rep$/);
    expect(a.primaryDisk.node.length).toBeLessThanOrEqual(31);
    expect(coloIds('op2', 'nic0').primaryDisk.node).not.toBe(a.primaryDisk.node);
    expect(coloIds('op1', 'nic1').primaryDisk.node).not.toBe(a.primaryDisk.node);
  });
});
