// Pure parts of the CLI: percentiles, device totals, the status line, the
// journal on disk, and the demo's output-commit check.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { firstReplyFromBackup, judgeOutputCommit } from '../src/demo/criu-failover.js';
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

describe("the CRIU failover's output-commit check", () => {
  // Checkpoints as `remus run --json` prints them: suspended at 100 (frozen 10 ms later), acked at 150; then 200/210/250.
  const committed = [
    { checkpoint: 1, suspendedAt: 100, steps: { suspend: 10 }, ackedAt: 150 },
    { checkpoint: 2, suspendedAt: 200, steps: { suspend: 10 }, ackedAt: 250 },
  ];
  // Client lines split: REPLY <arrived> <counter> r<i> <sent>.
  const reply = (arrived: number, sent: number): string[] => ['REPLY', String(arrived), '1', 'r1', String(sent)];
  it('judges replies of protected epochs and accepts one that arrived after its ack', () => {
    expect(judgeOutputCommit([reply(151, 105), reply(251, 150)], committed, 1000, 2, 2)).toEqual({ judged: 2, early: 0 });
  });
  it('flags a reply that arrived before its checkpoint was acknowledged (5 ms of clock rounding allowed)', () => {
    expect(judgeOutputCommit([reply(140, 105)], committed, 1000, 2, 2)).toEqual({ judged: 1, early: 1 });
    expect(judgeOutputCommit([reply(146, 105)], committed, 1000, 2, 2)).toEqual({ judged: 1, early: 0 });
  });
  it('flags a reply of an epoch never committed, unless the backup restored that epoch and it arrived after the kill', () => {
    expect(judgeOutputCommit([reply(260, 220)], committed, 1000, 2, 2)).toEqual({ judged: 1, early: 1 });
    expect(judgeOutputCommit([reply(1200, 220)], committed, 1000, 3, 2)).toEqual({ judged: 0, early: 0 });
  });
  it('does not judge replies sent before protection began or by the restored service', () => {
    expect(judgeOutputCommit([reply(95, 90), reply(1300, 1100)], committed, 1000, 2, 2)).toEqual({ judged: 0, early: 0 });
    expect(judgeOutputCommit([reply(151, 105)], [], 1000, null, null)).toEqual({ judged: 0, early: 0 });
  });
});

describe("the CRIU failover's first reply from the backup", () => {
  const committed = [
    { checkpoint: 1, suspendedAt: 100, steps: { suspend: 10 }, ackedAt: 150 },
    { checkpoint: 2, suspendedAt: 200, steps: { suspend: 10 }, ackedAt: 250 },
  ];
  const reply = (arrived: number, sent: number): string[] => ['REPLY', String(arrived), '1', 'r1', String(sent)];
  it("skips replies the primary released before the kill that arrive after it", () => {
    // Killed at 300: a reply of epoch 2 (sent 205) still on its way at 301 is the primary's; the restored service's reply sent at 900 arrives at 901.
    expect(firstReplyFromBackup([reply(260, 150), reply(301, 205), reply(901, 900)], committed, 300)).toBe(901);
  });
  it('counts a reply of an epoch the primary never committed, sent again by the restored socket', () => {
    expect(firstReplyFromBackup([reply(301, 205), reply(800, 250)], committed, 300)).toBe(800);
  });
  it('is undefined without a kill or without such a reply', () => {
    expect(firstReplyFromBackup([reply(301, 205)], committed, 300)).toBeUndefined();
    expect(firstReplyFromBackup([reply(901, 900)], committed, undefined)).toBeUndefined();
  });
});
