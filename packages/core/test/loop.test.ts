// The checkpoint loop with a fake domain and fault injection at every step.
import { getEventListeners } from 'node:events';
import { describe, expect, it, vi } from 'vitest';
import {
  CHECKPOINT_STEPS,
  createCheckpointDevices,
  RemusError,
  runCheckpointLoop,
  type CheckpointFigures,
  type CheckpointStep,
  type DomainAdapter,
} from '../src/index.js';
import { fakeSubkind, newWorld, nics } from './fakes.js';

interface FakeDomain extends DomainAdapter {
  readonly log: string[];
  suspended: boolean;
}

function fakeDomain(fail?: { step: 'suspend' | 'save' | 'resume' | 'ack'; at: number; how: 'throw' | 'hang' }): FakeDomain {
  const log: string[] = [];
  const d: FakeDomain = {
    name: 'fake-domain',
    log,
    suspended: false,
    suspend: (ctx) => step('suspend', ctx.checkpoint, () => (d.suspended = true)),
    save: (ctx) => step('save', ctx.checkpoint, () => undefined),
    resume: (ctx) => step('resume', ctx.checkpoint, () => (d.suspended = false)),
    waitAck: (ctx) => step('ack', ctx.checkpoint, () => undefined),
  };
  function step(name: 'suspend' | 'save' | 'resume' | 'ack', cp: number, body: () => unknown): Promise<void> {
    log.push(`${name}:${cp}`);
    if (fail && fail.step === name && fail.at === cp && !(name === 'resume' && log.filter((l) => l === `resume:${cp}`).length > 1)) {
      if (fail.how === 'hang') return new Promise(() => undefined);
      return Promise.reject(new Error(`injected failure in ${name}`));
    }
    body();
    return Promise.resolve();
  }
  return d;
}

async function readyDevices(world = newWorld(), faults: Parameters<typeof fakeSubkind>[1]['faults'] = []) {
  const devices = createCheckpointDevices({ ops: [fakeSubkind(world, { name: 'fake', faults })], devices: nics(3), timeouts: { commit: 100, postsuspend: 100, preresume: 100 } });
  await devices.setup();
  return devices;
}

describe('checkpoint loop', () => {
  it('runs suspend, postsuspend, save, preresume, resume, ack, commit in order, and reports figures', async () => {
    const world = newWorld();
    const devices = await readyDevices(world);
    const domain = fakeDomain();
    const figures: CheckpointFigures[] = [];
    const r = await runCheckpointLoop({ devices, domain, intervalMs: 1, maxCheckpoints: 3, onCheckpoint: (f) => figures.push(f) });
    expect(r).toMatchObject({ checkpoints: 3, stoppedBy: 'limit' });
    expect(domain.log.slice(0, 4)).toEqual(['suspend:1', 'save:1', 'resume:1', 'ack:1']);
    const seq = world.calls.filter((c) => /postsuspend|preresume|commit/.test(c) && c.endsWith('nic0'));
    expect(seq).toEqual(['fake:postsuspend:nic0', 'fake:preresume:nic0', 'fake:commit:nic0'].flatMap((x) => [x]).concat(
      ['fake:postsuspend:nic0', 'fake:preresume:nic0', 'fake:commit:nic0'],
      ['fake:postsuspend:nic0', 'fake:preresume:nic0', 'fake:commit:nic0'],
    ));
    expect(figures.map((f) => f.checkpoint)).toEqual([1, 2, 3]);
    for (const f of figures) {
      expect(Object.keys(f.steps).sort()).toEqual([...CHECKPOINT_STEPS].sort());
      expect(f.pauseMs).toBeGreaterThanOrEqual(f.steps.suspend + f.steps.postsuspend);
      expect(f.committedAt).toBeGreaterThanOrEqual(f.suspendedAt);
    }
    expect(devices.state).toBe('torn-down');
    expect(world.resources.size).toBe(0);
  });

  it('counts the interval from commit: the next suspend waits at least the interval after a commit', async () => {
    const devices = await readyDevices();
    const commits: number[] = [];
    const suspends: number[] = [];
    const domain = fakeDomain();
    const orig = domain.suspend;
    const timed: DomainAdapter = { ...domain, suspend: (ctx) => (suspends.push(performance.now()), orig(ctx)) };
    await runCheckpointLoop({ devices, domain: timed, intervalMs: 40, maxCheckpoints: 3, onCheckpoint: () => commits.push(performance.now()) });
    expect(suspends).toHaveLength(3);
    for (let i = 1; i < 3; i++) expect(suspends[i]! - commits[i - 1]!).toBeGreaterThanOrEqual(38);
  });

  for (const step of ['suspend', 'save', 'resume', 'ack'] as const) {
    for (const how of ['throw', 'hang'] as const) {
      it(`a domain ${step} that ${how === 'throw' ? 'fails' : 'hangs'} at checkpoint 2 stops the loop, says where, resumes the domain and tears down`, async () => {
        const world = newWorld();
        const devices = await readyDevices(world);
        const domain = fakeDomain({ step, at: 2, how });
        const e = await runCheckpointLoop({ devices, domain, intervalMs: 0, maxCheckpoints: 5, domainTimeoutMs: 50 }).then(
          () => undefined,
          (x: RemusError) => x,
        );
        expect(e).toBeInstanceOf(RemusError);
        expect(e!.code).toBe('CHECKPOINT_FAILED');
        expect(e!.details).toMatchObject({ checkpoint: 2, step, committed: 1, policy: 'resume' });
        expect((e!.cause as RemusError | Error).message).toMatch(how === 'hang' ? /did not finish in time/ : /injected failure/);
        // Policy `resume`: a domain that was (or may be) suspended is resumed at the primary; after ack it already runs.
        expect(domain.log.at(-1)).toBe(step === 'ack' ? 'ack:2' : 'resume:2');
        expect(domain.suspended).toBe(false);
        expect(devices.state).toBe('torn-down');
        expect(world.resources.size).toBe(0);
        expect(world.calls.filter((c) => c.includes(':commit:'))).toHaveLength(3);
      });
    }
  }

  for (const op of ['postsuspend', 'preresume', 'commit'] as const) {
    it(`a device ${op} failure stops the loop at that step and tears everything down`, async () => {
      const world = newWorld();
      const devices = await readyDevices(world, [{ op, how: 'reject', devices: ['nic1'] }]);
      const domain = fakeDomain();
      const e = await runCheckpointLoop({ devices, domain, intervalMs: 0, maxCheckpoints: 5 }).then(
        () => undefined,
        (x: RemusError) => x,
      );
      expect(e!.code).toBe('CHECKPOINT_FAILED');
      expect(e!.details).toMatchObject({ checkpoint: 1, step: op as CheckpointStep });
      const cause = e!.cause as RemusError;
      expect(cause.failures.map((f) => [f.device, f.op])).toEqual([['nic1', op]]);
      expect(domain.suspended).toBe(false); // policy resume
      expect(world.resources.size).toBe(0);
    });
  }

  it('with leave-suspended the domain stays suspended after a failure', async () => {
    const devices = await readyDevices(newWorld(), [{ op: 'postsuspend', how: 'throw' }]);
    const domain = fakeDomain();
    await expect(runCheckpointLoop({ devices, domain, onFailure: 'leave-suspended' })).rejects.toMatchObject({
      code: 'CHECKPOINT_FAILED',
    });
    expect(domain.suspended).toBe(true);
    expect(domain.log).toEqual(['suspend:1']);
  });

  it('a stop request lets the current checkpoint finish, then tears down', async () => {
    const world = newWorld();
    const devices = await readyDevices(world);
    const stop = new AbortController();
    const domain = fakeDomain();
    const origSave = domain.save;
    const d: DomainAdapter = { ...domain, save: (ctx) => (ctx.checkpoint === 2 && stop.abort(), origSave(ctx)) };
    const r = await runCheckpointLoop({ devices, domain: d, intervalMs: 5, stop: stop.signal });
    expect(r).toMatchObject({ checkpoints: 2, stoppedBy: 'request' });
    expect(domain.log.slice(-4)).toEqual(['suspend:2', 'save:2', 'resume:2', 'ack:2']);
    expect(world.calls.filter((c) => c.includes(':commit:'))).toHaveLength(6);
    expect(world.resources.size).toBe(0);
  });

  it('a stop request during the interval ends the wait at once', async () => {
    const devices = await readyDevices();
    const stop = new AbortController();
    const t0 = performance.now();
    setTimeout(() => stop.abort(), 30);
    const r = await runCheckpointLoop({ devices, domain: fakeDomain(), intervalMs: 60_000, stop: stop.signal });
    expect(r.checkpoints).toBe(1);
    expect(performance.now() - t0).toBeLessThan(30_000);
  });

  it('the waits between checkpoints leave nothing on the caller\'s signals (no composite signal per checkpoint)', async () => {
    // Node 20 keeps every AbortSignal.any composite in its source signals for as long as they live:
    // one per checkpoint was ~100 bytes a checkpoint that the loop's caller never got back.
    const devices = await readyDevices();
    const stop = new AbortController();
    const abort = new AbortController();
    const any = vi.spyOn(AbortSignal, 'any');
    const listening: number[] = [];
    try {
      const r = await runCheckpointLoop({
        devices,
        domain: fakeDomain(),
        intervalMs: 1,
        maxCheckpoints: 40,
        stop: stop.signal,
        signal: abort.signal,
        onCheckpoint: () => listening.push(getEventListeners(stop.signal, 'abort').length),
      });
      expect(r).toMatchObject({ checkpoints: 40, stoppedBy: 'limit' });
      expect(any).not.toHaveBeenCalled();
    } finally {
      any.mockRestore();
    }
    // Between checkpoints the wait holds one listener at most, and gives it back.
    expect(Math.max(...listening)).toBeLessThanOrEqual(1);
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
    expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
  });

  it('with interval 0 and a synchronous domain the loop still yields, so a stop timer is seen', async () => {
    const devices = createCheckpointDevices({
      ops: [{ name: 'sync', kind: 'nic', setup: () => undefined, teardown: () => undefined, commit: () => undefined }],
      devices: nics(2),
    });
    await devices.setup();
    const sync: DomainAdapter = { name: 'sync', suspend: () => undefined, save: () => undefined, resume: () => undefined, waitAck: () => undefined };
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 50);
    const r = await runCheckpointLoop({ devices, domain: sync, intervalMs: 0, stop: stop.signal });
    expect(r.stoppedBy).toBe('request');
    expect(r.checkpoints).toBeGreaterThan(0);
  });

  it('the recovery resume is bounded like every other step: a hung resume cannot stop teardown', async () => {
    const world = newWorld();
    const devices = await readyDevices(world, [{ op: 'postsuspend', how: 'throw' }]);
    const hung: DomainAdapter = { ...fakeDomain(), resume: () => new Promise(() => undefined) };
    const e = await runCheckpointLoop({ devices, domain: hung, domainTimeoutMs: 40 }).then(
      () => undefined,
      (x: RemusError) => x,
    );
    expect(e!.code).toBe('CHECKPOINT_FAILED');
    expect(e!.failures.map((f) => f.code)).toEqual(['DOMAIN_FAILED']);
    expect(devices.state).toBe('torn-down');
    expect(world.resources.size).toBe(0);
  });

  it('an interval longer than the domain time limit times nothing out; a hung step still times out with its signal aborted', async () => {
    const devices = await readyDevices();
    const r = await runCheckpointLoop({ devices, domain: fakeDomain(), intervalMs: 60, maxCheckpoints: 3, domainTimeoutMs: 25 });
    expect(r.checkpoints).toBe(3);
    let seen: AbortSignal | undefined;
    const hung: DomainAdapter = {
      ...fakeDomain(),
      save: (ctx) => {
        seen = ctx.signal;
        return new Promise(() => undefined);
      },
    };
    const e = await runCheckpointLoop({ devices: await readyDevices(), domain: hung, domainTimeoutMs: 30 }).then(
      () => undefined,
      (x: RemusError) => x,
    );
    expect(e!.code).toBe('CHECKPOINT_FAILED');
    expect((e!.cause as RemusError).code).toBe('TIMEOUT');
    expect((e!.cause as RemusError).message).toContain('save (checkpoint 1)');
    expect(seen!.aborted).toBe(true);
    expect((seen!.reason as RemusError).code).toBe('TIMEOUT');
  });

  it("the caller's abort rejects a pending domain step at once and the loop ends ABORTED-caused", async () => {
    const ac = new AbortController();
    const hung: DomainAdapter = { ...fakeDomain(), waitAck: () => new Promise(() => undefined) };
    setTimeout(() => ac.abort(new Error('operator')), 20);
    const t0 = performance.now();
    const e = await runCheckpointLoop({ devices: await readyDevices(), domain: hung, domainTimeoutMs: 10_000, signal: ac.signal }).then(
      () => undefined,
      (x: RemusError) => x,
    );
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect((e!.cause as RemusError).code).toBe('ABORTED');
  });

  it('figures carry sub-millisecond wall-clock times in step order', async () => {
    const devices = await readyDevices();
    const figures: CheckpointFigures[] = [];
    await runCheckpointLoop({ devices, domain: fakeDomain(), intervalMs: 0, maxCheckpoints: 2, onCheckpoint: (f) => figures.push(f) });
    for (const f of figures) {
      expect(f.suspendedAt).toBeLessThanOrEqual(f.ackedAt);
      expect(f.ackedAt).toBeLessThanOrEqual(f.committedAt);
      expect(Math.abs(f.committedAt - Date.now())).toBeLessThan(60_000);
    }
  });

  it('refuses devices that were not set up, and a bad interval', async () => {
    const devices = createCheckpointDevices({ ops: [fakeSubkind(newWorld(), { name: 'fake' })], devices: nics(1) });
    await expect(runCheckpointLoop({ devices, domain: fakeDomain() })).rejects.toMatchObject({ code: 'STATE' });
    await devices.setup();
    await expect(runCheckpointLoop({ devices, domain: fakeDomain(), intervalMs: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await devices.teardown();
  });
});
