// Root: network namespaces, a real three-member etcd (Debian etcd 3.4), two agents, one client.
// Every fault kind twice, with timing drawn from a fresh seed each run (printed; replay with
// REMUS_NEMESIS_SEED). The checker must find no violation in any history.
import { readFileSync, writeFileSync } from 'node:fs';
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
        if (kind === 'kill-primary' || kind === 'partition-primary' || kind === 'pause-primary' || kind === 'etcd-pause') {
          // The primary's role lapsed (it was gone, or etcd was, past its deadline): the backup took over under a higher epoch.
          expect(r.failoverMs).toBeDefined();
          expect(r.epochs.length).toBeGreaterThanOrEqual(2);
        }
        if (kind === 'solo-then-pause') {
          // The deposed primary (its backup marked outdated, then dead) kept its own state and won again.
          expect(r.keptOwnState).toBeGreaterThanOrEqual(1);
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

describe('nemesis (root, netns, etcd): the hard fence runs before promotion', () => {
  const fenceRun = async (exitCode: number) => {
    const { FENCE, mono, sleep } = await import('../src/index.js');
    const { mkdtempSync, readFileSync, existsSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'remus-fence-'));
    const log = join(dir, 'fence.log');
    const s = await lab.scenario({ ttlSeconds: TTL, hardFence: [process.execPath, FENCE, log, String(exitCode)] });
    try {
      await s.start('ha');
      const t0 = mono();
      s.fault('kill-primary', 'ha');
      s.agent('ha').signal('SIGKILL');
      if (exitCode === 0) await s.waitReplies('hb', 5, TTL * 4000 + 5000);
      else {
        await s.agent('hb').waitEvent((e) => e.type === 'promotion-blocked' && e.mono > t0, TTL * 4000 + 5000);
        await sleep(TTL * 1000);
      }
      const fenced = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [];
      return { s, t0, fenced };
    } finally {
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('a failing hard fence blocks the promotion: the backup resigns and never answers', async () => {
    const { s, t0, fenced } = await fenceRun(1);
    expect(fenced.length).toBeGreaterThanOrEqual(1);
    expect(fenced[0]).toMatch(new RegExp(`^ha \\d+ ${s.cluster}$`));
    expect(s.events.some((e) => e.host === 'hb' && e.type === 'fence-failed')).toBe(true);
    expect(s.events.some((e) => e.host === 'hb' && e.type === 'mode' && e.mode === 'primary')).toBe(false);
    expect(s.replies.filter((r) => r.h === 'hb' && r.at > t0)).toEqual([]);
    expect(s.check().violations).toEqual([]);
    results.push({ kind: 'kill-primary', seed: 0, ttlSeconds: TTL, check: s.check(), faults: 1, epochs: s.check().epochs.map((e) => e.epoch) });
  });

  it('a succeeding hard fence runs once, naming the old primary, before the backup answers', async () => {
    const { s, t0, fenced } = await fenceRun(0);
    expect(fenced).toHaveLength(1);
    const fencedAt = s.events.find((e) => e.host === 'hb' && e.type === 'fenced' && e.mono > t0)?.mono as number;
    const firstReply = s.replies.find((r) => r.h === 'hb' && r.at > t0)?.at as number;
    expect(fencedAt).toBeLessThan(firstReply);
    expect(s.check().violations).toEqual([]);
    results.push({ kind: 'kill-primary', seed: 0, ttlSeconds: TTL, check: s.check(), faults: 1, epochs: s.check().epochs.map((e) => e.epoch) });
  });
});

describe('nemesis (root, netns, etcd): who may talk to a backup', () => {
  /** A config for ha alone, with other TLS material (and maybe another cluster name). */
  const variant = async (s: Awaited<ReturnType<NemesisLab['scenario']>>, name: string, cluster: string, sameCa: boolean): Promise<string> => {
    const { initTrial, issueHostCert } = await import('@remus/agent');
    const { join } = await import('node:path');
    const dir = join(s.dir, name);
    if (sameCa) await issueHostCert({ caDir: join(s.dir, 'tls'), dir, cluster, host: 'ha' });
    else await initTrial({ dir, cluster, hosts: ['ha'] });
    const config = JSON.parse(readFileSync(s.configFile, 'utf8'));
    config.cluster = cluster;
    config.tls = { ca: sameCa ? 'tls/ca.crt' : `${name}/ca.crt`, cert: `${name}/{host}.crt`, key: `${name}/{host}.key` };
    const file = join(s.dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(config));
    return file;
  };

  const refusedRun = async (name: string, sameCa: boolean) => {
    const s = await lab.scenario({ ttlSeconds: TTL });
    try {
      // ha runs with foreign material as primary of its own election (another cluster name, so it is a fresh pair
      // there) and tries to send its state to hb, whose listener knows only the real pair.
      const file = await variant(s, name, `${s.cluster}x`, sameCa);
      const b = s.startAgent('hb');
      await b.waitEvent((e) => e.type === 'started', 10_000);
      const a = s.startAgent('ha', file);
      await a.waitEvent((e) => e.type === 'mode' && e.mode === 'primary', 20_000);
      const refused = await b.waitEvent((e) => e.host === 'hb' && e.type === 'peer-refused', 10_000);
      await new Promise((r) => setTimeout(r, 1000));
      return { s, refused };
    } finally {
      await s.stop();
    }
  };

  it('a peer whose certificate is from another CA is refused and logged; the backup takes no state from it', async () => {
    const { s, refused } = await refusedRun('foreign', false);
    expect(String(refused.reason)).toMatch(/TLS handshake failed/);
    expect(s.events.some((e) => e.host === 'hb' && e.type === 'session')).toBe(false);
  });

  it('a peer of another cluster (same CA, other OU) is refused and logged; the backup takes no state from it', async () => {
    const { s, refused } = await refusedRun('othercluster', true);
    // Both ends check: ha refuses hb's certificate (OU of the other cluster) and drops the handshake, hb logs that.
    expect(String(refused.reason)).toMatch(/TLS handshake failed|certificate of cluster/);
    const aSide = s.events.find((e) => e.host === 'ha' && e.type === 'backup-unreachable');
    expect(JSON.stringify(aSide?.error)).toContain('certificate of cluster');
    expect(s.events.some((e) => e.host === 'hb' && e.type === 'session')).toBe(false);
  });

  it('remus agent status reports the primary and a synced backup from the control sockets', async () => {
    const { readStatus } = await import('@remus/agent');
    const { join } = await import('node:path');
    const s = await lab.scenario({ ttlSeconds: TTL });
    try {
      await s.start('ha');
      const a = await readStatus(join(s.dir, 'state', 'ha', 'agent.sock'));
      const b = await readStatus(join(s.dir, 'state', 'hb', 'agent.sock'));
      expect(a).toMatchObject({ host: 'ha', mode: 'primary', roleHeld: true, peerConnected: true });
      expect(a.deadlineInMs).toBeGreaterThan(0);
      expect(b).toMatchObject({ host: 'hb', synced: true, roleHeld: false, epoch: a.epoch });
      expect(['backup', 'campaigning']).toContain(b.mode);
      expect(b.highestEpoch).toBe(a.epoch);
    } finally {
      await s.stop();
    }
  });
});
