// Root: network namespaces, a real three-member etcd (Debian etcd 3.4), two agents, one client.
// Every fault kind twice, with timing drawn from a fresh seed each run (printed; replay with
// REMUS_NEMESIS_SEED). The checker must find no violation in any history.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAULT_KINDS, NemesisLab, recordTotals, runScenario, type ScenarioResult } from '../src/index.js';

const ROUNDS = 2;
const TTL = 2;
const baseSeed = Number(process.env.REMUS_NEMESIS_SEED ?? Math.floor(Math.random() * 2 ** 30));
let lab: NemesisLab;
const results: ScenarioResult[] = [];

beforeAll(async () => {
  lab = await NemesisLab.create();
});

afterAll(async () => {
  await lab?.destroy();
  const faults = results.reduce((a, r) => a + r.faults, 0);
  const violations = results.reduce((a, r) => a + r.check.violations.length, 0);
  console.log(`nemesis totals (seed ${baseSeed}): histories ${results.length}, faults ${faults}, violations ${violations}`);
});

describe('nemesis (root, netns, etcd): two agents under faults, checked histories', () => {
  FAULT_KINDS.forEach((kind, k) => {
    for (let round = 0; round < ROUNDS; round++) {
      it(`${kind} (round ${round + 1}): no reply of an older epoch after a newer one, no lost state, never two releasers`, async () => {
        const seed = baseSeed + k * 101 + round;
        const r = await runScenario(lab, kind, { ttlSeconds: TTL, seed });
        results.push(r);
        recordTotals({ scenario: kind, faults: r.faults, histories: 1, violations: r.check.violations.length, ttlSeconds: TTL, ...(r.failoverMs !== undefined ? { failoverMs: [r.failoverMs] } : {}) });
        console.log(`${kind} seed ${seed}: replies ${r.check.replies}, epochs ${r.epochs.join('>')}, failover ${r.failoverMs?.toFixed(0) ?? '-'} ms, longest gap ${r.outageMs?.toFixed(0) ?? '-'} ms`);
        expect(r.check.violations).toEqual([]);
        expect(r.check.replies).toBeGreaterThan(50);
        if (kind === 'kill-primary' || kind === 'partition-primary' || kind === 'pause-primary') {
          // The primary was gone for longer than the TTL: the backup took over under a higher epoch.
          expect(r.failoverMs).toBeDefined();
          expect(r.epochs.length).toBeGreaterThanOrEqual(2);
        }
        if (kind === 'kill-backup' || kind === 'partition-backup') {
          // The primary kept its role: one epoch released everything.
          expect(r.epochs).toHaveLength(1);
        }
      });
    }
  });
});
