// The kit must fail subkinds that break the contract, for the right reason, and
// must pass correct ones: run it in a child vitest on the cases of
// kit-fixtures/flawed.kit.ts and read which of its tests failed and why.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const here = new URL('.', import.meta.url).pathname;

const T = {
  lifecycle: 'runs a full lifecycle through the core, every op within its time limit, no checkpoint op spawning a process, leaving nothing behind',
  twice: 'tolerates teardown twice after a successful setup',
  neverRan: 'tears down a device whose setup never ran (setup failed before its first step)',
  aborted: 'settles promptly when setup is aborted part way, then tears down clean',
  broken: 'fails the checkpoint when the device breaks under it (no checkpoint op swallows errors)',
  reap: 'reaps what a crashed operation left behind (if the subkind implements reap)',
  cleanup: 'cleans up right after init, with no device set up',
  own: 'matches its own device, changing nothing',
  foreign: 'declines a foreign device of its kind instead of throwing, changing nothing',
} as const;

interface KitRun {
  /** Failed test title -> its failure messages, joined. */
  readonly failed: Map<string, string>;
  readonly passed: number;
}

function runKit(kase: string): KitRun {
  const dir = mkdtempSync(join(tmpdir(), 'remus-kit-'));
  try {
    const out = join(dir, 'r.json');
    const r = spawnSync(
      'pnpm',
      ['exec', 'vitest', 'run', '--config', join(here, 'kit-fixtures', 'vitest.config.ts'), '--reporter=json', `--outputFile=${out}`],
      { cwd: join(here, '..'), env: { ...process.env, REMUS_KIT_CASE: kase, REMUS_KIT_DIR: join(dir, 'objects') }, encoding: 'utf8', timeout: 100_000 },
    );
    let report: { testResults: { assertionResults: { title: string; status: string; failureMessages: string[] }[] }[] };
    try {
      report = JSON.parse(readFileSync(out, 'utf8'));
    } catch {
      throw new Error(`the child vitest wrote no report (status ${r.status}): ${r.stderr}`);
    }
    const results = report.testResults.flatMap((f) => f.assertionResults);
    return {
      failed: new Map(results.filter((a) => a.status === 'failed').map((a) => [a.title, a.failureMessages.join('\n')])),
      passed: results.filter((a) => a.status === 'passed').length,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Expects the kit to fail `title` on `kase` with a message matching `reason`. */
function expectCatch(kase: string, title: string, reason: RegExp): KitRun {
  const run = runKit(kase);
  expect([...run.failed.keys()]).toContain(title);
  expect(run.failed.get(title)).toMatch(reason);
  return run;
}

describe('the conformance kit catches broken subkinds, each for the right reason', () => {
  it('a teardown that is not idempotent fails "teardown twice"', () => {
    expectCatch('teardown-not-idempotent', T.twice, /teardown \(second call\): already gone/);
  }, 100_000);

  it('a teardown that needs a completed setup fails "setup never ran"', () => {
    expectCatch('teardown-needs-setup', T.neverRan, /teardown \(setup never ran\): nothing to tear down/);
  }, 100_000);

  it('a cleanup that leaks fails the leftover checks', () => {
    expectCatch('leaks-on-cleanup', T.cleanup, /left behind after init and cleanup/);
  }, 100_000);

  it('a setup that ignores its signal and finishes late fails "aborted part way", naming setup', () => {
    const run = expectCatch('setup-ignores-signal', T.aborted, /setup: still running 1000 ms after its signal was aborted/);
    expect([...run.failed.keys()]).toEqual([T.aborted]);
  }, 100_000);

  it('a match with side effects fails "matches its own device, changing nothing"', () => {
    expectCatch('match-side-effects', T.own, /match: must not change anything/);
  }, 100_000);

  it('a checkpoint op that spawns a process fails the lifecycle, naming the op, the checkpoint and the command', () => {
    const run = expectCatch('commit-spawns', T.lifecycle, /commit \(checkpoint 1\) spawned "true"/);
    expect([...run.failed.keys()]).toEqual([T.lifecycle]);
  }, 100_000);

  it('a postsuspend that swallows errors fails "device breaks under it", naming postsuspend', () => {
    const run = expectCatch('postsuspend-swallows', T.broken, /postsuspend, commit \(checkpoint 2\): resolved on a broken device/);
    expect([...run.failed.keys()]).toEqual([T.broken]);
  }, 100_000);

  it('a match that throws for a foreign device fails even without a foreignDevice option (the kit makes one)', () => {
    const run = expectCatch('match-throws-foreign', T.foreign, /match: threw for the foreign device .*remus-kit-foreign0/);
    expect([...run.failed.keys()]).toEqual([T.foreign]);
  }, 100_000);
});

describe('the conformance kit does not flag correct subkinds', () => {
  it('a subkind whose declared timeouts exceed the kit limit passes (its own timeouts are honoured)', () => {
    const run = runKit('declared-timeouts');
    expect([...run.failed.entries()]).toEqual([]);
    expect(run.passed).toBe(Object.keys(T).length + 1);
  }, 100_000);

  it('a subkind whose device handles stay open until the process dies passes the reap test in a real SIGKILLed child', () => {
    const run = runKit('holds-handles');
    expect([...run.failed.entries()]).toEqual([]);
    expect(run.passed).toBe(Object.keys(T).length + 1);
  }, 100_000);

  it('a match that would throw for a param-less device passes when its checkParams refuses that device first (as the core does)', () => {
    const run = runKit('checkparams-refuses-foreign');
    expect([...run.failed.entries()]).toEqual([]);
    expect(run.passed).toBe(Object.keys(T).length + 1);
  }, 100_000);

  it('the same subkind "crashed" in process (no `crash` option) is left with its handle open, which is why `crash` exists', () => {
    expectCatch('holds-handles-in-process', T.reap, /reap: removed nothing, though the crash left/);
  }, 100_000);
});
