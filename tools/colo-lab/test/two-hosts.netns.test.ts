/**
 * End to end, as root: a COLO pair split across two hosts (namespaces `ha`
 * and `hb` of an etcd-lab network), a real three-member etcd, one real QEMU
 * per host, each driven only by its own side process over its own QMP and
 * deciding through the etcd arbiter (TTL 2 s). A client in its own
 * namespace records every answer; the guest's counter lives on the
 * replicated disk, so two sides serving at once would show as a repeated
 * count. Everything is killed by pid and removed in afterEach.
 */
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sweepStaleLabs } from '@remus/etcd-lab';
import { TwoHostLab, reapStaleLabs, type CounterAnswer, type HostName, type SideLine } from '../src/index.js';

let lab: TwoHostLab | undefined;
let seq = 0;

beforeAll(async () => {
  await reapStaleLabs();
  sweepStaleLabs();
});

afterEach(async () => {
  const l = lab;
  lab = undefined;
  await l?.close();
});

interface Reply {
  readonly sentAt: number;
  readonly at: number;
  readonly answer?: CounterAnswer;
}

/** Requests one after the other (each bounded by 1 s) until stopped; every outcome recorded with wall-clock times. */
function client(l: TwoHostLab): { history: Reply[]; stop(): Promise<void> } {
  const history: Reply[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const sentAt = Date.now();
      try {
        history.push({ sentAt, at: Date.now(), answer: await l.request(1000) });
        history[history.length - 1] = { ...history[history.length - 1]!, at: Date.now() };
      } catch {
        history.push({ sentAt, at: Date.now() });
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  })();
  return {
    history,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

function answered(h: readonly Reply[]): { at: number; sentAt: number; count: number }[] {
  return h.filter((r) => r.answer).map((r) => ({ at: r.at, sentAt: r.sentAt, count: r.answer!.count }));
}

/**
 * No count answered twice or going back (two serving copies of the disk
 * would repeat one), and no more counts skipped than requests whose answer
 * was lost, so far: a request whose client gave up (1 s) may still count,
 * and under TCG with a slow CGI even after a later request's count (seen
 * once in CI: x,11,13, the x's count was 12).
 */
function expectContinuous(h: readonly Reply[]): void {
  let prev: number | undefined;
  let lost = 0;
  let skipped = 0;
  const seen: string[] = [];
  for (const r of h) {
    if (!r.answer) {
      lost++;
      seen.push('x');
      continue;
    }
    const n = r.answer.count;
    seen.push(String(n));
    if (prev !== undefined) {
      expect(n, `counts ${seen.join(',')}`).toBeGreaterThan(prev);
      skipped += n - prev - 1;
      expect(skipped, `counts ${seen.join(',')} (x: no answer): more counts skipped than requests lost`).toBeLessThanOrEqual(lost);
    }
    prev = n;
  }
  expect(answered(h).length).toBeGreaterThan(3);
}

async function startLab(extra: Partial<Parameters<typeof TwoHostLab.create>[0]> = {}): Promise<TwoHostLab> {
  lab = await TwoHostLab.create({ prefix: `colo-t${process.pid % 100000}-2h${seq++}`, checkpointDelayMs: 2000, ttlSeconds: 2, ...extra });
  try {
    await lab.start(150_000);
  } catch (e) {
    throw new Error(`the two-host pair did not start: ${String(e)}\n${lab.logs()}`);
  }
  return lab;
}

function lastStatus(l: TwoHostLab, h: HostName): Record<string, unknown> {
  const s = [...l.side(h).lines].reverse().find((x) => x.type === 'status');
  return (s?.status ?? {}) as Record<string, unknown>;
}

async function replicating(l: TwoHostLab, c: { history: Reply[] }): Promise<void> {
  await l.side('ha').waitFor((x) => x.type === 'checkpoint', 'a checkpoint on ha', 30_000);
  const t = Date.now();
  await l.side('ha').waitFor((x) => x.type === 'status' && x.t > t + 100, 'a status line on ha', 5000);
  await l.side('hb').waitFor((x) => x.type === 'status' && x.t > t + 100, 'a status line on hb', 5000);
  const deadline = Date.now() + 30_000;
  while (answered(c.history).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(answered(c.history).length, `answers before the fault\n${l.logs()}`).toBeGreaterThanOrEqual(3);
}

/** `remus colo status --etcd ... --json` (the built CLI), run inside host `h`'s namespace. */
const CLI_BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'packages', 'cli', 'dist', 'bin.js');
async function cliStatus(l: TwoHostLab, h: HostName): Promise<Record<string, unknown>> {
  const out = await l.net.run(h, process.execPath, [CLI_BIN, 'colo', 'status', '--etcd', l.etcd.endpoints.join(','), '--prefix', l.etcdPrefix, '--json']);
  return JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

const line = (l: TwoHostLab, h: HostName, type: string): SideLine | undefined => l.side(h).lines.find((x) => x.type === type);

describe('COLO across two hosts, arbitrated by etcd (real QEMU, real etcd, netns)', () => {
  it('primary host killed (QEMU and side SIGKILLed, cut off): the secondary promotes under a higher epoch and serves, counter continuous, never two serving', async () => {
    const l = await startLab();
    const c = client(l);
    try {
      await replicating(l, c);
      const a = lastStatus(l, 'ha');
      expect(a).toMatchObject({ host: 'ha', role: 'primary', state: 'replicating', holdsRole: true, protected: true });
      expect(lastStatus(l, 'hb')).toMatchObject({ host: 'hb', role: 'secondary', state: 'replicating', holdsRole: false, protected: true });
      expect(await cliStatus(l, 'hb'), 'remus colo status while replicating').toMatchObject({ epoch: a.epoch, holder: 'ha', protected: true, state: 'replicating' });

      const killedAt = Date.now();
      await l.killHost('ha');
      const promoted = await l.side('hb').waitFor((x) => x.type === 'promoted', 'hb promoted', 30_000);
      const deadline = Date.now() + 20_000;
      while (!answered(c.history).some((r) => r.sentAt > promoted.t) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      await c.stop();
      const after = answered(c.history).filter((r) => r.at > killedAt);
      expect(after.length, `answers after the kill\n${l.logs()}`).toBeGreaterThan(0);
      expectContinuous(c.history);
      // ha's QEMU was gone before hb promoted: never two serving.
      expect(promoted.t).toBeGreaterThan(killedAt);
      expect(promoted.epoch as number).toBeGreaterThan(a.epoch as number);
      await l.side('hb').waitFor((x) => x.type === 'status' && x.t > promoted.t, 'a status line after promotion', 5000);
      expect(lastStatus(l, 'hb')).toMatchObject({ role: 'primary', state: 'serving', holdsRole: true, protected: false, epoch: promoted.epoch });
      expect(await cliStatus(l, 'hb'), 'remus colo status after the failover').toMatchObject({ epoch: promoted.epoch, holder: 'hb', protected: false, state: 'serving' });
      console.log(
        `colo two hosts, primary host killed: first client reply ${after[0]!.at - killedAt} ms after the kill ` +
          `(promotion ${(promoted.ms as number).toFixed(0)} ms after hb got the role, epoch ${String(a.epoch)} -> ${String(promoted.epoch)})`,
      );
    } finally {
      await c.stop();
    }
  });

  it('partition between the two hosts only (both reach etcd): the primary keeps the role, marks the secondary outdated and serves alone; the secondary never promotes', async () => {
    const l = await startLab();
    const c = client(l);
    try {
      await replicating(l, c);
      const cutAt = Date.now();
      await l.cutHosts();
      const solo = await l.side('ha').waitFor((x) => x.type === 'solo' || x.type === 'fenced', 'ha goes on alone', 40_000);
      expect(solo.type, l.logs()).toBe('solo');
      // Well past a lease TTL: the secondary must still not have promoted.
      await new Promise((r) => setTimeout(r, 8000));
      await c.stop();
      expect(line(l, 'hb', 'promoted'), 'hb never promotes').toBeUndefined();
      const after = answered(c.history).filter((r) => r.sentAt > solo.t);
      expect(after.length, `answers after ha went on alone\n${l.logs()}`).toBeGreaterThan(0);
      expectContinuous(c.history);
      expect(lastStatus(l, 'ha')).toMatchObject({ role: 'primary', state: 'serving', holdsRole: true, protected: false });
      expect(lastStatus(l, 'hb')).toMatchObject({ role: 'secondary', holdsRole: false });
      expect(await cliStatus(l, 'hb'), 'remus colo status after the partition').toMatchObject({ holder: 'ha', protected: false, state: 'serving', outdated: 'hb' });
      const first = answered(c.history).find((r) => r.at > cutAt && r.sentAt > cutAt);
      console.log(`colo two hosts, partition between hosts: ha alone ${solo.t - cutAt} ms after the cut, first client reply sent after the cut ${first ? first.at - cutAt : 'none'} ms`);
    } finally {
      await c.stop();
    }
  });

  it('secondary host killed: the primary goes on alone, then reprotects onto a fresh secondary on that host; checkpoints resume; counter continuous, the role never moves', async () => {
    const l = await startLab();
    const c = client(l);
    try {
      await replicating(l, c);
      const a = lastStatus(l, 'ha');
      const killedAt = Date.now();
      await l.killHost('hb');
      const solo = await l.side('ha').waitFor((x) => x.type === 'solo' || x.type === 'fenced', 'ha goes on alone', 40_000);
      expect(solo.type, l.logs()).toBe('solo');
      const deadline1 = Date.now() + 20_000;
      while (!answered(c.history).some((r) => r.sentAt > solo.t) && Date.now() < deadline1) await new Promise((r) => setTimeout(r, 100));
      expect(answered(c.history).some((r) => r.sentAt > solo.t), `an answer from ha alone\n${l.logs()}`).toBe(true);

      // A fresh secondary on hb and its side; ha (serving alone, its own operation's chardevs kept by the failover) reprotects onto it.
      await l.heal();
      await l.newSecondary('hb');
      const sb = l.startSide('hb', 'secondary');
      await sb.waitFor((x) => x.type === 'ready', 'the new secondary on hb ready', 60_000);
      l.reprotect('ha');
      const rp = await l.side('ha').waitFor((x) => x.type === 'reprotected' || x.type === 'reprotect-failed', 'ha reprotected', 120_000);
      expect(rp.type, `${JSON.stringify(rp)}\n${l.logs()}`).toBe('reprotected');
      await sb.waitFor((x) => x.type === 'started' || x.type === 'start-failed', 'the secondary on hb in COLO', 60_000);
      expect(sb.lines.find((x) => x.type === 'start-failed'), l.logs()).toBeUndefined();
      const cp = await l.side('ha').waitFor((x) => x.type === 'checkpoint' && x.t > rp.t, 'a checkpoint on ha after the reprotect', 30_000);
      expect(await cliStatus(l, 'hb'), 'remus colo status after the reprotect').toMatchObject({ epoch: a.epoch, holder: 'ha', protected: true, state: 'replicating' });
      // The protected service answers (one request with a longer bound than the 1 s client's: under COLO on TCG a reply can wait for a checkpoint).
      await c.stop();
      const askedAt = Date.now();
      const after = await l.request(30_000);
      const answerMs = Date.now() - askedAt;
      const last = answered(c.history).at(-1)?.count ?? 0;
      expect(after.count, `the counter goes on after the reprotect\n${l.logs()}`).toBeGreaterThan(last);
      expectContinuous(c.history);
      expect(line(l, 'hb', 'promoted'), 'hb never promotes').toBeUndefined();
      console.log(
        `colo two hosts, secondary host killed: ha alone ${solo.t - killedAt} ms after the kill; reprotect onto hb ${(rp.ms as number).toFixed(0)} ms ` +
          `(${String(rp.bytes)} bytes mirrored in ${(rp.mirrorMs as number).toFixed(0)} ms, VM paused ${(rp.pausedMs as number).toFixed(0)} ms; first checkpoint ${cp.t - rp.t} ms after; a request after it answered in ${answerMs} ms, count ${after.count}); epoch ${String(a.epoch)} throughout`,
      );
    } finally {
      await c.stop();
    }
  });

  it('the full chain: primary host killed, the secondary serves, reprotect onto the first host, checkpoints resume, the new primary killed, the first host serves again; counter continuous', async () => {
    const l = await startLab();
    const c = client(l);
    try {
      await replicating(l, c);
      const a = lastStatus(l, 'ha');
      const kill1 = Date.now();
      await l.killHost('ha');
      const p1 = await l.side('hb').waitFor((x) => x.type === 'promoted', 'hb promoted', 30_000);
      const deadline1 = Date.now() + 20_000;
      while (!answered(c.history).some((r) => r.sentAt > p1.t) && Date.now() < deadline1) await new Promise((r) => setTimeout(r, 100));
      const first1 = answered(c.history).find((r) => r.at > kill1);
      expect(first1, `an answer from hb\n${l.logs()}`).toBeDefined();

      // A fresh secondary on ha, its side, then hb (serving alone, holding the role) reprotects onto it.
      await l.heal();
      await l.newSecondary('ha');
      const sa = l.startSide('ha', 'secondary');
      await sa.waitFor((x) => x.type === 'ready', 'the new secondary on ha ready', 60_000);
      const reprotectAt = Date.now();
      l.reprotect('hb');
      const rp = await l.side('hb').waitFor((x) => x.type === 'reprotected' || x.type === 'reprotect-failed', 'hb reprotected', 120_000);
      expect(rp.type, `${JSON.stringify(rp)}\n${l.logs()}`).toBe('reprotected');
      await sa.waitFor((x) => x.type === 'started' || x.type === 'start-failed', 'the secondary on ha in COLO', 60_000);
      expect(sa.lines.find((x) => x.type === 'start-failed'), l.logs()).toBeUndefined();
      const cp = await l.side('hb').waitFor((x) => x.type === 'checkpoint' && x.t > rp.t, 'a checkpoint on hb after the reprotect', 30_000);
      expect(await cliStatus(l, 'ha'), 'remus colo status after the reprotect').toMatchObject({ epoch: p1.epoch, holder: 'hb', protected: true, state: 'replicating' });
      const before2 = answered(c.history).length;
      const deadline2 = Date.now() + 20_000;
      while (answered(c.history).length < before2 + 2 && Date.now() < deadline2) await new Promise((r) => setTimeout(r, 100));

      // The new primary dies: ha promotes again.
      const kill2 = Date.now();
      await l.killHost('hb');
      const p2 = await sa.waitFor((x) => x.type === 'promoted', 'ha promoted', 30_000);
      const deadline3 = Date.now() + 20_000;
      while (!answered(c.history).some((r) => r.sentAt > p2.t) && Date.now() < deadline3) await new Promise((r) => setTimeout(r, 100));
      await c.stop();
      const first2 = answered(c.history).find((r) => r.at > kill2);
      expect(first2, `an answer from ha again\n${l.logs()}`).toBeDefined();
      expectContinuous(c.history);
      expect(p1.epoch as number).toBeGreaterThan(a.epoch as number);
      expect(p2.epoch as number).toBeGreaterThan(p1.epoch as number);
      expect(p1.t).toBeGreaterThan(kill1);
      expect(p2.t).toBeGreaterThan(kill2);
      console.log(
        `colo two hosts, chain: failover ha->hb first reply ${first1!.at - kill1} ms after the kill; ` +
          `reprotect onto ha ${(rp.ms as number).toFixed(0)} ms (failover to checkpoints resumed ${cp.t - p1.t} ms; request to first checkpoint ${cp.t - reprotectAt} ms), ` +
          `${String(rp.bytes)} bytes mirrored in ${(rp.mirrorMs as number).toFixed(0)} ms, VM paused ${(rp.pausedMs as number).toFixed(0)} ms; ` +
          `failover hb->ha first reply ${first2!.at - kill2} ms after the kill; epochs ${String(a.epoch)} -> ${String(p1.epoch)} -> ${String(p2.epoch)}`,
      );
    } finally {
      await c.stop();
    }
  });
  it('automatic reprotect (autoReprotect in the side files): primary host killed, hb promotes and runs the command, which gets a fresh secondary on ha; hb protects onto it by itself, checkpoints resume, the service answers, counter continuous', async () => {
    const hook = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'reprotect-hook.mjs');
    // The command hands its stdin to this test over a Unix socket; the test starts the fresh secondary and answers with the reprotect command.
    const sockPath = join('/tmp', `colo-hook-${process.pid}-${seq}.sock`);
    const asked: { input: Record<string, unknown>; env: Record<string, string> }[] = [];
    let server: Server | undefined;
    const l = await startLab({ autoReprotect: { command: [hook, sockPath], timeoutMs: 180_000 } });
    const c = client(l);
    try {
      server = createServer((sock) => {
        createInterface({ input: sock }).once('line', (line) => {
          asked.push(JSON.parse(line) as (typeof asked)[number]);
          void (async () => {
            try {
              await l.heal();
              await l.newSecondary('ha');
              const sa = l.startSide('ha', 'secondary');
              await sa.waitFor((x) => x.type === 'ready', 'the new secondary on ha ready', 60_000);
              sock.end(`${l.reprotectCommand('hb')}\n`);
            } catch (e) {
              console.log(`hook handler failed: ${String(e)}`);
              sock.destroy();
            }
          })();
        });
      });
      await new Promise<void>((r) => server!.listen(sockPath, r));
      await replicating(l, c);
      const a = lastStatus(l, 'ha');
      const killedAt = Date.now();
      await l.killHost('ha');
      const p1 = await l.side('hb').waitFor((x) => x.type === 'promoted', 'hb promoted', 30_000);
      const ar = await l.side('hb').waitFor((x) => x.type === 'auto-reprotect', 'hb runs autoReprotect.command', 10_000);
      const rp = await l.side('hb').waitFor((x) => x.type === 'reprotected' || x.type === 'auto-reprotect-failed' || x.type === 'reprotect-failed', 'hb reprotected by itself', 240_000);
      expect(rp.type, `${JSON.stringify(rp)}\n${l.logs()}`).toBe('reprotected');
      expect(ar).toMatchObject({ event: 'promoted', epoch: p1.epoch });
      expect(asked).toHaveLength(1);
      expect(asked[0]!.input).toMatchObject({ host: 'hb', peer: 'ha', event: 'promoted', epoch: p1.epoch });
      expect(asked[0]!.env).toMatchObject({ REMUS_COLO_HOST: 'hb', REMUS_COLO_PEER: 'ha', REMUS_COLO_EPOCH: String(p1.epoch) });
      const sa = l.side('ha');
      await sa.waitFor((x) => x.type === 'started' || x.type === 'start-failed', 'the secondary on ha in COLO', 60_000);
      expect(sa.lines.find((x) => x.type === 'start-failed'), l.logs()).toBeUndefined();
      const cp = await l.side('hb').waitFor((x) => x.type === 'checkpoint' && x.t > rp.t, 'a checkpoint on hb after the reprotect', 30_000);
      expect(await cliStatus(l, 'ha'), 'remus colo status after the automatic reprotect').toMatchObject({ epoch: p1.epoch, holder: 'hb', protected: true, state: 'replicating' });
      await c.stop();
      const askedAt = Date.now();
      const after = await l.request(30_000);
      const answerMs = Date.now() - askedAt;
      expect(after.count, `the counter goes on after the reprotect\n${l.logs()}`).toBeGreaterThan(answered(c.history).at(-1)?.count ?? 0);
      expectContinuous(c.history);
      expect(p1.epoch as number).toBeGreaterThan(a.epoch as number);
      expect(line(l, 'ha', 'promoted'), 'the fresh secondary on ha never promotes').toBeUndefined();
      console.log(
        `colo two hosts, automatic reprotect: hb promoted ${p1.t - killedAt} ms after the kill; failover to protected again (reprotected) ${(rp.t - p1.t).toFixed(0)} ms, ` +
          `of which the reprotect ${(rp.ms as number).toFixed(0)} ms (${String(rp.bytes)} bytes mirrored in ${(rp.mirrorMs as number).toFixed(0)} ms, VM paused ${(rp.pausedMs as number).toFixed(0)} ms); ` +
          `first checkpoint ${(cp.t - rp.t).toFixed(0)} ms after; a request after it answered in ${answerMs} ms (count ${after.count}); epochs ${String(a.epoch)} -> ${String(p1.epoch)}`,
      );
    } finally {
      await c.stop();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    }
  });
});
