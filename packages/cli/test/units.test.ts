// Pure parts of the CLI: percentiles, device totals, the status line, the
// journal on disk, and the demo's output-commit check.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { countViolations } from '../src/demo/demo.js';
import { Journal, listJournals, processStart, stillRunning } from '../src/journal.js';
import { percentile, statusLine, sumStats } from '../src/progress.js';
import { tempDir } from '@remus/test-lab';

describe('figures', () => {
  it('percentile takes the nearest rank and is NaN for no values', () => {
    const v = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(percentile(v, 0.5)).toBe(50);
    expect(percentile(v, 0.99)).toBe(99);
    expect(percentile([7], 0.99)).toBe(7);
    expect(percentile([], 0.5)).toBeNaN();
  });

  it('sums device stats per key', () => {
    expect(sumStats([{ stats: { held: 2, released: 10, queue: 47100 } }, { stats: { held: 1, released: 5, dropped: 1, queue: 47101 } }, { stats: {} }])).toEqual({ held: 3, released: 15, dropped: 1 });
  });

  it('the status line shows rate, pause percentiles and device totals', () => {
    const line = statusLine({ checkpoints: 12, rate: 39.84, pauseP50Ms: 1.234, pauseP99Ms: 3.4, commitLatencyP50Ms: 2, commitLatencyP99Ms: 3, durationMs: 300, devices: { held: 4, released: 99 } });
    expect(line).toBe('checkpoints 12  rate 39.8/s  pause p50 1.23 ms p99 3.40 ms  commit p50 2.00 ms  held 4 released 99');
  });
});

describe('journal', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is on disk after every change and tells a live run from a dead one', () => {
    dir = tempDir('journal').dir;
    const j = Journal.create(dir, 'rtest1', 'run', [{ package: '@remus/nic-nfqueue', from: '/x', subkinds: { 'nic-nfqueue': {} } }], [{ id: 'd', kind: 'nic' }]);
    j.addCgroup('/sys/fs/cgroup/freezer/remus-rtest1');
    j.addNetns('ns1');
    const [found] = listJournals(dir);
    expect(found?.data).toMatchObject({ format: 1, operation: 'rtest1', pid: process.pid, cgroups: ['/sys/fs/cgroup/freezer/remus-rtest1'], netns: ['ns1'] });
    expect(stillRunning(process.pid, found?.data?.pidStart)).toBe(true);
    // Same pid, another start time: a different process.
    expect(stillRunning(process.pid, '1')).toBe(false);
    expect(stillRunning(2 ** 22 + 1, undefined)).toBe(false);
    expect(processStart(process.pid)).toMatch(/^\d+$/);
    j.remove();
    expect(listJournals(dir)).toEqual([]);
  });

  it('reports an unreadable journal instead of skipping it', async () => {
    dir = tempDir('journal').dir;
    const { writeFileSync } = await import('node:fs');
    writeFileSync(`${dir}/broken.json`, '{');
    expect(listJournals(dir)[0]?.error).toBeDefined();
  });
});

describe('the demo output-commit check', () => {
  const frozen = new Map([
    [1, 100],
    [2, 200],
  ]);
  const acked = new Map([
    [1, 150],
    [2, 250],
  ]);
  it('accepts a reply received after its epoch was acknowledged', () => {
    expect(countViolations([{ g: 90, r: 151 }, { g: 150, r: 260 }], frozen, acked)).toBe(0);
  });
  it('flags a reply received before its epoch was acknowledged', () => {
    expect(countViolations([{ g: 90, r: 140 }], frozen, acked)).toBe(1);
    expect(countViolations([{ g: 120, r: 240 }], frozen, acked)).toBe(1);
  });
  it('flags a reply of an epoch that was never checkpointed', () => {
    expect(countViolations([{ g: 210, r: 400 }], frozen, acked)).toBe(1);
  });
});
