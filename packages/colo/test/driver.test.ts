/**
 * The driver's bounds and liveness checks, without a pair (the pair itself
 * is exercised end to end in colo-pair.netns.test.ts).
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ColoPair, DEFAULT_WATCHDOG, processAlive, watchdogBoundMs } from '../src/index.js';

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
    expect(e).toMatchObject({ code: expect.stringMatching(/^(QMP_FAILED|TIMEOUT)$/) });
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
});
