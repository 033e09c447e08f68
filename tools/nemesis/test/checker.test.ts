import { describe, expect, it } from 'vitest';
import { checkHistory, type ClientReply, type HostRelease } from '../src/checker.js';

const reply = (h: string, e: number, n: number, at: number): ClientReply => ({ h, e, n, id: String(n), at });
const rel = (host: string, epoch: number, from: number, to: number): HostRelease => ({ host, epoch, checkpoint: 1, count: 1, first: 1, last: 1, from, to });

describe('nemesis checker', () => {
  it('accepts a clean failover: epochs ordered, counters increasing, release windows apart', () => {
    const r = checkHistory({
      replies: [reply('ha', 2, 1, 10), reply('ha', 2, 2, 20), reply('hb', 5, 3, 3000), reply('hb', 5, 4, 3010)],
      releases: [rel('ha', 2, 5, 21), rel('hb', 5, 2990, 3011)],
    });
    expect(r.violations).toEqual([]);
    expect(r.epochs.map((e) => [e.epoch, e.host])).toEqual([[2, 'ha'], [5, 'hb']]);
  });

  it('flags a reply of a lower epoch received after a higher epoch', () => {
    const r = checkHistory({ replies: [reply('hb', 5, 3, 100), reply('ha', 2, 4, 110)], releases: [] });
    expect(r.violations.some((v) => v.includes('of epoch 2') && v.includes('after a reply of epoch 5'))).toBe(true);
  });

  it('flags a counter that goes back (acknowledged state lost)', () => {
    const r = checkHistory({ replies: [reply('ha', 2, 7, 100), reply('hb', 5, 3, 200)], releases: [] });
    expect(r.violations.some((v) => v.includes('counter went from 7') && v.includes('to 3'))).toBe(true);
  });

  it('flags two hosts releasing at the same instant, measured on the hosts', () => {
    const r = checkHistory({ replies: [], releases: [rel('ha', 2, 0, 1000), rel('hb', 5, 900, 1200)] });
    expect(r.violations).toHaveLength(1);
    expect(r.violations[0]).toContain('100.0 ms of overlap');
  });

  it('flags one epoch released by two hosts', () => {
    const r = checkHistory({ replies: [], releases: [rel('ha', 2, 0, 10), rel('hb', 2, 20, 30)] });
    expect(r.violations.some((v) => v.includes('epoch 2 released by both'))).toBe(true);
  });
});
