// The checkpoint loop of @remus/core driven with a fake domain and a fake NIC
// subkind: a fault injected at every step (thrown, rejected, hung) must stop
// the loop with CHECKPOINT_FAILED naming the checkpoint and step, tear every
// device down, apply the failure policy, and never commit an epoch whose
// checkpoint was not acknowledged.
import { CHECKPOINT_STEPS, createCheckpointDevices, isRemusError, runCheckpointLoop, type RemusError, type SubkindOps } from '@remus/core';
import { describe, expect, it } from 'vitest';
import { fakeDomain, fakeNic, newTimeline, type FaultHow, type StepFault, type Timeline } from '../src/fakes.js';

const DEVICE_STEPS = new Set(['postsuspend', 'preresume', 'commit']);
const HOWS: readonly FaultHow[] = ['throw', 'reject', 'hang'];

async function loopWith(t: Timeline, faults: StepFault[], opts: { onFailure?: 'resume' | 'leave-suspended'; max?: number; ops?: SubkindOps[] } = {}) {
  const devices = createCheckpointDevices({
    ops: opts.ops ?? [fakeNic(t, faults.filter((f) => DEVICE_STEPS.has(f.step)))],
    devices: [
      { id: 'nic0', kind: 'nic' },
      { id: 'nic1', kind: 'nic' },
    ],
    timeouts: { postsuspend: 150, preresume: 150, commit: 150 },
  });
  await devices.setup();
  const domain = fakeDomain(t, faults.filter((f) => !DEVICE_STEPS.has(f.step)));
  const run = runCheckpointLoop({ devices, domain, intervalMs: 1, maxCheckpoints: opts.max ?? 3, domainTimeoutMs: 150, onFailure: opts.onFailure });
  return { devices, run };
}

describe.each(CHECKPOINT_STEPS.flatMap((step) => HOWS.map((how) => [step, how] as const)))('a fault in %s (%s) at checkpoint 2', (step, how) => {
  it('fails the loop naming checkpoint and step, tears down, resumes, and commits nothing unacknowledged', async () => {
    const t = newTimeline();
    const { devices, run } = await loopWith(t, [{ step, how, checkpoint: 2 }]);
    const e = (await run.then(() => undefined, (x: unknown) => x)) as RemusError;
    expect(isRemusError(e, 'CHECKPOINT_FAILED')).toBe(true);
    expect(e.details).toMatchObject({ checkpoint: 2, step, committed: 1, policy: 'resume' });
    if (how === 'hang') expect(JSON.stringify(e.toJSON())).toMatch(/TIMEOUT|did not (finish|settle)/);
    else expect(JSON.stringify(e.toJSON())).toMatch(/injected/);
    // Every device torn down, nothing alive.
    expect(devices.state).toBe('torn-down');
    expect(t.live.size).toBe(0);
    expect(t.calls.filter((c) => c.startsWith('dev:teardown')).sort()).toEqual(['dev:teardown:nic0', 'dev:teardown:nic1']);
    // The failure policy left the domain running.
    expect(t.suspended).toBe(false);
    // Output commit: checkpoint 2 was never committed unless its ack came first.
    const commits2 = t.calls.filter((c) => c.startsWith('dev:commit:') && c.endsWith(':2'));
    const ack2 = t.calls.indexOf('domain:ack:2');
    if (ack2 === -1) expect(commits2).toEqual([]);
    for (const c of commits2) expect(t.calls.indexOf(c)).toBeGreaterThan(ack2);
    // Nothing of checkpoint 3 ran.
    expect(t.calls.some((c) => c.endsWith(':3'))).toBe(false);
  });
});

describe('the checkpoint loop with a fake domain', () => {
  it('runs the steps of each checkpoint in order, commit only after the ack', async () => {
    const t = newTimeline();
    const { run } = await loopWith(t, []);
    expect(await run).toMatchObject({ checkpoints: 3, stoppedBy: 'limit' });
    const perCheckpoint = (n: number) => t.calls.filter((c) => c.endsWith(`:${n}`)).map((c) => c.replace(/:nic\d/, ''));
    for (const n of [1, 2, 3]) {
      expect(perCheckpoint(n)).toEqual([
        `domain:suspend:${n}`,
        `dev:postsuspend:${n}`,
        `dev:postsuspend:${n}`,
        `domain:save:${n}`,
        `dev:preresume:${n}`,
        `dev:preresume:${n}`,
        `domain:resume:${n}`,
        `domain:ack:${n}`,
        `dev:commit:${n}`,
        `dev:commit:${n}`,
      ]);
    }
  });

  it('leave-suspended keeps the domain suspended after a failure while suspended', async () => {
    const t = newTimeline();
    const { run } = await loopWith(t, [{ step: 'save', how: 'reject', checkpoint: 1 }], { onFailure: 'leave-suspended' });
    await expect(run).rejects.toMatchObject({ code: 'CHECKPOINT_FAILED', details: { step: 'save', policy: 'leave-suspended' } });
    expect(t.suspended).toBe(true);
    expect(t.calls).not.toContain('domain:resume:1');
    expect(t.live.size).toBe(0);
  });

  it('a failure after resume does not resume twice', async () => {
    const t = newTimeline();
    const { run } = await loopWith(t, [{ step: 'ack', how: 'reject', checkpoint: 1 }]);
    await expect(run).rejects.toMatchObject({ details: { step: 'ack' } });
    expect(t.calls.filter((c) => c === 'domain:resume:1')).toHaveLength(1);
  });

  it('a graceful stop finishes the running checkpoint, commits it, then tears down', async () => {
    const t = newTimeline();
    const devices = createCheckpointDevices({ ops: [fakeNic(t)], devices: [{ id: 'nic0', kind: 'nic' }] });
    await devices.setup();
    const stop = new AbortController();
    const domain = fakeDomain(t, [], 50);
    const run = runCheckpointLoop({ devices, domain, intervalMs: 1, stop: stop.signal });
    await new Promise((r) => setTimeout(r, 120));
    stop.abort();
    const r = await run;
    expect(r.stoppedBy).toBe('request');
    const last = r.checkpoints;
    expect(t.calls).toContain(`dev:commit:nic0:${last}`);
    expect(t.calls.some((c) => c.endsWith(`:${last + 1}`))).toBe(false);
    expect(t.live.size).toBe(0);
  });

  it('a hard abort fails the running step with ABORTED and still tears down', async () => {
    const t = newTimeline();
    const devices = createCheckpointDevices({ ops: [fakeNic(t)], devices: [{ id: 'nic0', kind: 'nic' }] });
    await devices.setup();
    const abort = new AbortController();
    const run = runCheckpointLoop({ devices, domain: fakeDomain(t, [{ step: 'ack', how: 'hang', checkpoint: 2 }]), intervalMs: 1, signal: abort.signal });
    await new Promise((r) => setTimeout(r, 100));
    abort.abort();
    const e = (await run.then(() => undefined, (x: unknown) => x)) as RemusError;
    expect(e.code).toBe('CHECKPOINT_FAILED');
    expect(e.details).toMatchObject({ checkpoint: 2, step: 'ack' });
    expect((e.cause as RemusError).code).toBe('ABORTED');
    expect(t.live.size).toBe(0);
    expect(t.calls).not.toContain('dev:commit:nic0:2');
  });

  it('reports a teardown failure after a successful run', async () => {
    const t = newTimeline();
    const broken: SubkindOps = { ...fakeNic(t), teardown: () => Promise.reject(new Error('teardown broke')) };
    const { run } = await loopWith(t, [], { ops: [broken] });
    const e = (await run.then(() => undefined, (x: unknown) => x)) as RemusError;
    expect(e.code).toBe('PHASE_FAILED');
    expect(e.failures.map((f) => f.device).sort()).toEqual(['nic0', 'nic1']);
  });

  it('reports teardown failures along with the checkpoint failure', async () => {
    const t = newTimeline();
    const nic = fakeNic(t, [{ step: 'commit', how: 'reject', checkpoint: 1 }]);
    const broken: SubkindOps = { ...nic, teardown: () => Promise.reject(new Error('teardown broke')) };
    const { run } = await loopWith(t, [], { ops: [broken] });
    const e = (await run.then(() => undefined, (x: unknown) => x)) as RemusError;
    expect(e.code).toBe('CHECKPOINT_FAILED');
    expect(e.details.step).toBe('commit');
    expect(e.failures).toHaveLength(2);
  });

  it('a throwing progress listener does not stop the loop', async () => {
    const t = newTimeline();
    const devices = createCheckpointDevices({ ops: [fakeNic(t)], devices: [{ id: 'nic0', kind: 'nic' }] });
    await devices.setup();
    const r = await runCheckpointLoop({
      devices,
      domain: fakeDomain(t),
      intervalMs: 0,
      maxCheckpoints: 5,
      onCheckpoint: () => {
        throw new Error('listener broke');
      },
    });
    expect(r.checkpoints).toBe(5);
  });
});
