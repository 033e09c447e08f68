/**
 * The scenarios: one fault kind each, with timing drawn from a seeded
 * random source (when the fault hits within the steady state, how long it
 * lasts), so repeated runs vary and a failing run can be replayed (the seed
 * is in the result). Each scenario: a fresh pair with `ha` primary and `hb`
 * synced, client running; the fault; recovery (healed, restarted); the pair
 * back to one primary and one synced backup; then the checker.
 */
import type { CheckResult } from './checker.js';
import { HOSTS, NemesisLab, Scenario, mono, other, sleep, type HostName } from './lab.js';

export const FAULT_KINDS = [
  'kill-primary',
  'kill-backup',
  'partition-primary',
  'partition-backup',
  'pause-primary',
  'late-timers',
  'solo-then-pause',
  'etcd-one',
  'etcd-two',
  'etcd-pause',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface ScenarioResult {
  readonly kind: FaultKind;
  readonly seed: number;
  readonly ttlSeconds: number;
  readonly check: CheckResult;
  /** Faults injected (a two-member etcd loss counts two). */
  readonly faults: number;
  /** Fault start to the first client reply of a higher epoch; undefined when no failover happened. */
  readonly failoverMs?: number;
  /** The longest time the client got no reply, from the fault on (ms). */
  readonly outageMs?: number;
  /** Epochs that released output, in order. */
  readonly epochs: readonly number[];
  /** Deposed primaries that kept their own state (they had marked the backup outdated) and so may campaign again. */
  readonly keptOwnState?: number;
}

/** Small seeded PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface RunOptions {
  readonly ttlSeconds: number;
  readonly seed?: number;
  readonly log?: (line: string) => void;
}

/** Runs one scenario of `kind` on `lab` and returns its checked history. */
export async function runScenario(lab: NemesisLab, kind: FaultKind, o: RunOptions): Promise<ScenarioResult> {
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
  const rand = rng(seed);
  const ttlMs = o.ttlSeconds * 1000;
  const log = o.log ?? (() => undefined);
  const s = await lab.scenario({ ttlSeconds: o.ttlSeconds });
  try {
    await s.start('ha');
    await sleep(300 + rand() * 1200);
    const p: HostName = 'ha';
    const b = other(p);
    const epoch0 = s.currentEpoch();
    const holdMs = Math.round(ttlMs * (1.3 + rand() * 1.2));
    const t0 = mono();
    let injected = 1;
    log(`${kind} seed ${seed}: fault at ${t0.toFixed(0)}, hold ${holdMs} ms`);
    switch (kind) {
      case 'kill-primary': {
        s.fault(kind, p);
        s.agent(p).signal('SIGKILL');
        await s.waitReplies(b, 5, ttlMs * 4 + 5000);
        await sleep(rand() * 1000);
        s.startAgent(p);
        break;
      }
      case 'kill-backup': {
        s.fault(kind, b);
        s.agent(b).signal('SIGKILL');
        await sleep(holdMs);
        s.startAgent(b);
        break;
      }
      case 'partition-primary': {
        const f = s.fault(kind, p);
        await lab.net.cut([p], [b, ...lab.etcd.memberNames]);
        await s.waitReplies(b, 5, ttlMs * 4 + 5000);
        await s.agent(p).waitEvent((e) => e.host === p && e.type === 'deposed' && e.mono > t0, ttlMs * 3 + 5000);
        await sleep(rand() * 1000);
        await lab.net.heal();
        f.end = mono();
        break;
      }
      case 'partition-backup': {
        const f = s.fault(kind, b);
        await lab.net.cut([b], [p, ...lab.etcd.memberNames]);
        await sleep(holdMs);
        await lab.net.heal();
        f.end = mono();
        break;
      }
      case 'pause-primary': {
        const f = s.fault(kind, p);
        s.agent(p).signal('SIGSTOP');
        await s.waitReplies(b, 5, ttlMs * 4 + 5000);
        await sleep(Math.max(0, holdMs - (mono() - t0)) + rand() * 500);
        s.agent(p).signal('SIGCONT');
        f.end = mono();
        break;
      }
      case 'late-timers': {
        const f = s.fault(kind, p);
        const undo = lab.throttle(s.agent(p).pid, 1);
        await sleep(holdMs);
        undo();
        f.end = mono();
        break;
      }
      case 'solo-then-pause': {
        // The liveness-gap shape: the backup dies, the primary marks it outdated and runs solo,
        // then the primary is paused past its TTL (deposed), and the backup comes back without
        // state. Only the deposed primary's own state can bring the pair back.
        const f = s.fault(kind, p);
        s.agent(b).signal('SIGKILL');
        await s.agent(p).waitEvent((e) => e.host === p && e.type === 'backup-outdated' && e.mono > t0, ttlMs * 3 + 5000);
        await sleep(rand() * 500);
        s.agent(p).signal('SIGSTOP');
        await sleep(holdMs);
        s.agent(p).signal('SIGCONT');
        await s.agent(p).waitEvent((e) => e.host === p && e.type === 'deposed' && e.mono > t0, ttlMs * 3 + 5000);
        s.startAgent(b);
        f.end = mono();
        break;
      }
      case 'etcd-one': {
        const m = lab.etcd.memberNames[Math.floor(rand() * lab.etcd.memberNames.length)] as string;
        const f = s.fault(kind, m);
        lab.etcd.kill(m);
        await sleep(holdMs);
        lab.etcd.start(m);
        await lab.etcd.waitHealthy(30_000);
        f.end = mono();
        break;
      }
      case 'etcd-two': {
        const names = [...lab.etcd.memberNames].sort(() => rand() - 0.5).slice(0, 2);
        injected = 2;
        for (const m of names) {
          s.fault(kind, m);
          lab.etcd.kill(m);
        }
        await sleep(holdMs);
        for (const m of names) lab.etcd.start(m);
        await lab.etcd.waitHealthy(30_000);
        break;
      }
      case 'etcd-pause': {
        // Every member paused (SIGSTOP) just under the TTL: the primary's deadline passes and it is
        // deposed while its lease outlives the pause, so a keepalive sent during the pause may be
        // answered after the lapse. The deposed primary must give the role up for good.
        const f = s.fault(kind, 'etcd');
        const pauseMs = Math.round(ttlMs * (0.9 + rand() * 0.08));
        for (const m of lab.etcd.memberNames) lab.etcd.kill(m, 'SIGSTOP');
        try {
          await sleep(pauseMs);
        } finally {
          for (const m of lab.etcd.memberNames) lab.etcd.kill(m, 'SIGCONT');
        }
        await lab.etcd.waitHealthy(30_000);
        f.end = mono();
        break;
      }
    }
    await settle(s, t0, ttlMs);
    const firstHigher = s.firstReplyAbove(epoch0, t0);
    // The longest the client went without a reply, from the fault on.
    let gap: number | undefined;
    let prev = t0;
    for (const r of s.replies) {
      if (r.at <= t0) continue;
      gap = Math.max(gap ?? 0, r.at - prev);
      prev = r.at;
    }
    const check = s.check();
    return {
      kind,
      seed,
      ttlSeconds: o.ttlSeconds,
      check,
      faults: injected,
      ...(firstHigher ? { failoverMs: firstHigher.at - t0 } : {}),
      ...(gap !== undefined ? { outageMs: gap } : {}),
      epochs: check.epochs.map((e) => e.epoch),
      keptOwnState: s.events.filter((e) => e.type === 'deposed' && e.keptOwnState === true).length,
    };
  } finally {
    await s.stop();
  }
}

/**
 * Waits until the pair is whole again: one host primary serving the client
 * and the other holding state from it (a `session` event after the fault).
 */
async function settle(s: Scenario, _t0: number, ttlMs: number): Promise<void> {
  const until = performance.now() + ttlMs * 4 + 20_000;
  for (;;) {
    const p = s.primary();
    if (p) {
      const b = other(p);
      // The primary's last word on its link says linked, and the backup's agent runs.
      const last = [...s.events].reverse().find((e) => e.host === p && ['linked', 'backup-current', 'checkpoint-failed', 'backup-outdated', 'mode'].includes(e.type));
      const synced = (last?.type === 'linked' || last?.type === 'backup-current') && s.agents.get(b)?.alive && s.agents.get(b)?.mode !== 'primary';
      const since = s.replies.length;
      if (synced) {
        try {
          await s.waitReplies(p, 5, 3000, since);
          return;
        } catch {
          // Stale view (an agent that was starved or paused has not reported its new mode yet): look again.
        }
      }
    }
    if (performance.now() > until) {
      throw new Error(`scenario ${s.cluster}: the pair did not settle (modes: ${HOSTS.map((h) => `${h}=${s.agents.get(h)?.mode}`).join(' ')}); last events:\n${s.events.filter((e) => e.type !== 'release' && !(e.type === 'arbiter' && (e.event as { type: string }).type === 'waiting')).slice(-40).map((e) => JSON.stringify(e)).join('\n')}`);
    }
    await sleep(100);
  }
}
