// The checkpoint loop's thread under SCHED_FIFO (needs root, as CI runs): checked in
// /proc for real, in child processes so this test runner's own scheduling never changes.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_REALTIME_PRIORITY, applyRealtime, enterRealtime, isRemusError, procStat } from '../src/index.js';

const CORE = fileURLToPath(new URL('../dist/index.js', import.meta.url));
/**
 * Whether this host lets a root process run under SCHED_FIFO at all, asked of chrt itself (a container
 * without CAP_SYS_NICE, or a cgroup without real-time runtime, does not): where it does not, the
 * tests below check the refusal instead of the policy.
 */
const HOST_ALLOWS_RT = spawnSync('chrt', ['--fifo', '1', 'true']).status === 0;
/** This process's (the test runner's) policy and priority: the in-process cases below must leave them alone. */
const mine = (): [number | undefined, number | undefined] => [procStat(process.pid)?.policy, procStat(process.pid)?.rtPriority];
const REFUSED = `
let code; try { await core.enterRealtime(); } catch (e) { code = e.code; }
out({ code, after: [core.procStat(process.pid).policy, core.procStat(process.pid).rtPriority] });`;

/** Runs `body` (an ES module body; `core` is @remus/core's build) in a child node; its last stdout line, parsed. */
function child(body: string, prefix: readonly string[] = []): Record<string, unknown> {
  const src = `import * as core from ${JSON.stringify(CORE)};\nimport { spawnSync } from 'node:child_process';\nconst out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');\n${body}`;
  const argv = [...prefix, process.execPath, '--input-type=module', '-e', src];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

/** In the child: its own policy and priority, and those of a process it starts (`cat` of its own stat). */
const OBSERVE = `
const mine = () => { const s = core.procStat(process.pid); return [s.policy, s.rtPriority]; };
const started = () => { const t = spawnSync('cat', ['/proc/self/stat'], { encoding: 'utf8' }).stdout; const s = core.parseProcStat(t); return [s.policy, s.rtPriority]; };
`;

describe('enterRealtime', () => {
  it('puts the main thread under SCHED_FIFO, not what it starts afterwards, and restore puts it back', () => {
    if (!HOST_ALLOWS_RT) {
      expect(child(REFUSED)).toEqual({ code: 'UNSUPPORTED_HOST', after: [0, 0] });
      return;
    }
    const r = child(`${OBSERVE}
const before = mine();
const h = await core.enterRealtime();
const during = mine();
const spawned = started();
const restored = await h.restore();
const again = await h.restore();
out({ before, during, spawned, after: mine(), restored: restored ?? null, again: again ?? null, handle: { policy: h.policy, priority: h.priority, already: h.already } });`);
    expect(r).toEqual({
      before: [0, 0],
      during: [1, DEFAULT_REALTIME_PRIORITY],
      spawned: [0, 0],
      after: [0, 0],
      restored: null,
      again: null,
      handle: { policy: 'fifo', priority: DEFAULT_REALTIME_PRIORITY, already: false },
    });
  });

  it('takes a priority, and leaves a thread already under a real-time policy as it was started', () => {
    if (!HOST_ALLOWS_RT) {
      expect(child(REFUSED)).toEqual({ code: 'UNSUPPORTED_HOST', after: [0, 0] });
      return;
    }
    const r = child(`${OBSERVE}
const h = await core.enterRealtime({ priority: 30 });
out({ during: mine(), priority: h.priority });`);
    expect(r).toEqual({ during: [1, 30], priority: 30 });
    const rr = child(`${OBSERVE}
const h = await core.enterRealtime();
const during = mine();
await h.restore();
out({ during, after: mine(), handle: { policy: h.policy, priority: h.priority, already: h.already } });`, ['chrt', '--rr', '20']);
    expect(rr).toEqual({ during: [2, 20], after: [2, 20], handle: { policy: 'rr', priority: 20, already: true } });
  });

  it('refuses for a process without CAP_SYS_NICE, with the fix, and changes nothing', () => {
    // The child (still uid 0, so it reads this checkout wherever CI put it) can never hold CAP_SYS_NICE,
    // nor can what it runs, and may raise no real-time priority (RLIMIT_RTPRIO 0): the kernel refuses.
    const r = child(`${OBSERVE}
let code, message;
try { await core.enterRealtime(); } catch (e) { code = e.code; message = e.message; }
out({ code, message, after: mine() });`, ['prlimit', '--rtprio=0:0', 'setpriv', '--bounding-set=-sys_nice', '--inh-caps=-sys_nice']);
    expect(r.code).toBe('UNSUPPORTED_HOST');
    expect(r.message).toMatch(/SCHED_FIFO priority 10: the kernel refused \(Operation not permitted\): run as root or with CAP_SYS_NICE/);
    expect(r.message).toMatch(/or turn real-time scheduling off$/);
    expect(r.after).toEqual([0, 0]);
  });

  it('says when chrt is missing, refuses a bad priority and an aborted signal, changing nothing', async () => {
    const before = mine();
    const missing = await enterRealtime({ chrt: '/nonexistent/chrt' }).catch((e: unknown) => e);
    expect(isRemusError(missing) && missing.code).toBe('UNSUPPORTED_HOST');
    expect((missing as Error).message).toContain('`/nonexistent/chrt` is not installed: install util-linux (it provides chrt)');
    for (const priority of [0, 100, 1.5, Number.NaN]) {
      const bad = await enterRealtime({ priority }).catch((e: unknown) => e);
      expect(isRemusError(bad) && bad.code).toBe('INVALID_ARGUMENT');
      expect((bad as Error).message).toContain('is not an integer from 1 to 99');
    }
    const aborted = await enterRealtime({ signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(isRemusError(aborted) && aborted.code).toBe('ABORTED');
    expect(mine()).toEqual(before);
  });
});

describe('applyRealtime', () => {
  it('does nothing when off, returns the refusal when auto, rejects when on, and never swallows an abort or a bad priority', async () => {
    const before = mine();
    const missing = { chrt: '/nonexistent/chrt' };
    expect(await applyRealtime('off', missing)).toEqual({ report: { realtime: 'off', policy: 'other' } });
    const auto = await applyRealtime('auto', missing);
    expect(auto.handle).toBeUndefined();
    expect(auto.refused?.code).toBe('UNSUPPORTED_HOST');
    expect(auto.refused?.message).toContain('is not installed');
    expect(auto.report).toEqual({ realtime: 'auto', policy: 'other', refused: auto.refused?.message });
    const on = await applyRealtime('on', missing).catch((e: unknown) => e);
    expect(isRemusError(on) && on.code).toBe('UNSUPPORTED_HOST');
    const aborted = await applyRealtime('auto', { ...missing, signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(isRemusError(aborted) && aborted.code).toBe('ABORTED');
    const bad = await applyRealtime('auto', { priority: 0 }).catch((e: unknown) => e);
    expect(isRemusError(bad) && bad.code).toBe('INVALID_ARGUMENT');
    expect(mine()).toEqual(before);
  });
});
