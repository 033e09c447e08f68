// The checkpoint loop under an arbiter: output of an epoch is released only
// while the role is held, under the run's epoch, before its deadline; the
// persisted epoch store; the single-host arbiter.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createCheckpointDevices,
  localArbiter,
  openEpochStore,
  RemusError,
  roleLapse,
  runCheckpointLoop,
  validateArbiter,
  type Arbiter,
  type DomainAdapter,
  type DomainStepContext,
  type RoleState,
} from '../src/index.js';
import { fakeSubkind, newWorld, nics } from './fakes.js';

/** An arbiter whose role the test sets; counts role() calls. */
function scriptedArbiter(initial: RoleState): Arbiter & { state: RoleState; roleCalls: number } {
  const a = {
    name: 'scripted',
    state: initial,
    roleCalls: 0,
    acquire: () => Promise.resolve({ epoch: a.state.epoch, deadline: a.state.deadline }),
    role: () => {
      a.roleCalls++;
      return a.state;
    },
    resign: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  return a;
}

/** A domain that logs its steps with the epoch each saw. */
function loggingDomain(onAck?: (ctx: DomainStepContext) => void): DomainAdapter & { log: string[]; suspended: boolean } {
  const d = {
    name: 'logging',
    log: [] as string[],
    suspended: false,
    suspend: (ctx: DomainStepContext) => void (d.log.push(`suspend:${ctx.checkpoint}@${ctx.epoch}`), (d.suspended = true)),
    save: (ctx: DomainStepContext) => void d.log.push(`save:${ctx.checkpoint}@${ctx.epoch}`),
    resume: (ctx: DomainStepContext) => void (d.log.push(`resume:${ctx.checkpoint}@${ctx.epoch}`), (d.suspended = false)),
    waitAck: (ctx: DomainStepContext) => {
      d.log.push(`ack:${ctx.checkpoint}@${ctx.epoch}`);
      onAck?.(ctx);
    },
  };
  return d;
}

async function setUp(world = newWorld()) {
  const epochs: number[] = [];
  const base = fakeSubkind(world, { name: 'fake' });
  const ops = {
    ...base,
    commit: (h: Parameters<NonNullable<typeof base.commit>>[0], ctx: Parameters<NonNullable<typeof base.commit>>[1]) => {
      epochs.push(ctx.epoch);
      return base.commit!(h, ctx);
    },
  };
  const devices = createCheckpointDevices({ ops: [ops], devices: nics(2) });
  await devices.setup();
  return { world, devices, epochs };
}

const commits = (world: ReturnType<typeof newWorld>) => world.calls.filter((c) => c.startsWith('fake:commit:nic0')).length;

describe('checkpoint loop under an arbiter', () => {
  it('passes the role epoch to every domain step and every op, and checks the role once per checkpoint', async () => {
    const { world, devices, epochs } = await setUp();
    const arbiter = scriptedArbiter({ held: true, epoch: 41, deadline: Infinity });
    const domain = loggingDomain();
    const r = await runCheckpointLoop({ devices, domain, arbiter, intervalMs: 0, maxCheckpoints: 4 });
    expect(r.checkpoints).toBe(4);
    expect(domain.log.every((l) => l.endsWith('@41'))).toBe(true);
    expect(epochs).toEqual(Array(8).fill(41)); // 2 devices x 4 commits
    expect(commits(world)).toBe(4);
    expect(arbiter.roleCalls).toBe(1 + 4); // once at start, once per commit
  });

  it('without an arbiter the epoch is 0', async () => {
    const { devices, epochs } = await setUp();
    const domain = loggingDomain();
    await runCheckpointLoop({ devices, domain, intervalMs: 0, maxCheckpoints: 2 });
    expect(domain.log.every((l) => l.endsWith('@0'))).toBe(true);
    expect(epochs.every((e) => e === 0)).toBe(true);
  });

  const lapses: [string, (a: ReturnType<typeof scriptedArbiter>) => void, RegExp][] = [
    ['the role is no longer held', (a) => (a.state = { held: false, epoch: 7, deadline: -Infinity }), /not held/],
    ['the role was re-acquired under a higher epoch', (a) => (a.state = { held: true, epoch: 9, deadline: Infinity }), /epoch 9, not the run's epoch 7/],
    ['the deadline passed while the arbiter still says held', (a) => (a.state = { held: true, epoch: 7, deadline: performance.now() - 1 }), /deadline passed/],
  ];
  for (const [what, lose, message] of lapses) {
    it(`fails closed when ${what}: no commit of that checkpoint, ROLE_LOST, domain suspended, devices torn down`, async () => {
      const { world, devices } = await setUp();
      const arbiter = scriptedArbiter({ held: true, epoch: 7, deadline: Infinity });
      // The role goes while checkpoint 3 waits for its ack.
      const domain = loggingDomain((ctx) => ctx.checkpoint === 3 && lose(arbiter));
      const e = await runCheckpointLoop({ devices, domain, arbiter, intervalMs: 0, maxCheckpoints: 10 }).then(
        () => undefined,
        (x: unknown) => x as RemusError,
      );
      expect(e).toBeInstanceOf(RemusError);
      expect(e!.code).toBe('ROLE_LOST');
      expect(e!.message).toMatch(message);
      expect(e!.details).toMatchObject({ checkpoint: 3, committed: 2, epoch: 7, policy: 'suspend', step: 'commit' });
      expect(commits(world)).toBe(2);
      // Suspended after the loss and left suspended: it must not run unfenced.
      expect(domain.log.at(-1)).toBe('suspend:3@7');
      expect(domain.suspended).toBe(true);
      expect(devices.state).toBe('torn-down');
      expect(world.resources.size).toBe(0);
    });
  }

  it('refuses to start without the role, and refuses the resume failure policy', async () => {
    const { devices } = await setUp();
    const domain = loggingDomain();
    const notHeld = scriptedArbiter({ held: false, epoch: 0, deadline: -Infinity });
    await expect(runCheckpointLoop({ devices, domain, arbiter: notHeld })).rejects.toMatchObject({ code: 'ROLE_LOST', message: expect.stringMatching(/acquire\(\) first/) });
    const held = scriptedArbiter({ held: true, epoch: 1, deadline: Infinity });
    await expect(runCheckpointLoop({ devices, domain, arbiter: held, onFailure: 'resume' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(domain.log).toEqual([]);
    await devices.teardown();
  });

  it('a failed checkpoint under an arbiter leaves the domain suspended (no unfenced resume)', async () => {
    const world = newWorld();
    const devices = createCheckpointDevices({ ops: [fakeSubkind(world, { name: 'fake', faults: [{ op: 'preresume', how: 'reject' }] })], devices: nics(1) });
    await devices.setup();
    const domain = loggingDomain();
    const arbiter = localArbiter();
    await arbiter.acquire(new AbortController().signal);
    const e = await runCheckpointLoop({ devices, domain, arbiter, intervalMs: 0 }).catch((x: RemusError) => x);
    await arbiter.close();
    expect((e as RemusError).code).toBe('CHECKPOINT_FAILED');
    expect((e as RemusError).details).toMatchObject({ policy: 'leave-suspended' });
    expect(domain.suspended).toBe(true);
  });

  it('refuses an epoch below the host store and records a higher one before the first checkpoint', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'remus-epoch-'));
    try {
      const store = openEpochStore(join(dir, 'epoch.json'));
      store.admit(50);
      const { world, devices } = await setUp();
      const domain = loggingDomain();
      const low = scriptedArbiter({ held: true, epoch: 12, deadline: Infinity });
      await expect(runCheckpointLoop({ devices, domain, arbiter: low, epochs: store, maxCheckpoints: 1 })).rejects.toMatchObject({ code: 'EPOCH_STALE' });
      expect(domain.log).toEqual([]);
      const high = scriptedArbiter({ held: true, epoch: 60, deadline: Infinity });
      await runCheckpointLoop({ devices, domain, arbiter: high, epochs: store, maxCheckpoints: 1, intervalMs: 0 });
      expect(commits(world)).toBe(1);
      expect(openEpochStore(join(dir, 'epoch.json')).highest()).toBe(60);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('roleLapse', () => {
  it('allows release only while held, same epoch, before the deadline', () => {
    expect(roleLapse({ held: true, epoch: 3, deadline: 100 }, 3, 99.9)).toBeUndefined();
    expect(roleLapse({ held: true, epoch: 3, deadline: 100 }, 3, 100)).toMatch(/deadline passed/);
    expect(roleLapse({ held: true, epoch: 3, deadline: Number.NaN }, 3, 0)).toMatch(/deadline passed/);
    expect(roleLapse({ held: true, epoch: 4, deadline: 100 }, 3, 0)).toMatch(/epoch 4/);
    expect(roleLapse({ held: false, epoch: 3, deadline: 100 }, 3, 0)).toMatch(/not held/);
  });
});

describe('epoch store', () => {
  const dirs: string[] = [];
  const fresh = () => {
    const d = mkdtempSync(join(tmpdir(), 'remus-epoch-'));
    dirs.push(d);
    return join(d, 'sub', 'epoch.json');
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('starts at 0, persists a higher epoch, never goes down, survives reopening', () => {
    const path = fresh();
    const s = openEpochStore(path);
    expect(s.highest()).toBe(0);
    expect(s.admit(5)).toBe(5);
    expect(s.admit(5)).toBe(5);
    expect(() => s.admit(4, 'state frame epoch')).toThrowError(expect.objectContaining({ code: 'EPOCH_STALE', message: expect.stringMatching(/state frame epoch 4 is below .*5/) }));
    expect(s.highest()).toBe(5);
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ epoch: 5 });
    const again = openEpochStore(path);
    expect(again.highest()).toBe(5);
    expect(() => again.admit(1)).toThrowError(expect.objectContaining({ code: 'EPOCH_STALE' }));
  });

  it('refuses a corrupt store instead of starting again at 0', () => {
    const path = fresh();
    openEpochStore(path).admit(3);
    writeFileSync(path, '{"epoch": -1}');
    expect(() => openEpochStore(path)).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/corrupt/) }));
    writeFileSync(path, 'garbage');
    expect(() => openEpochStore(path)).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('rejects epochs that are not whole numbers', () => {
    const s = openEpochStore(fresh());
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 60]) expect(() => s.admit(bad)).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(s.highest()).toBe(0);
  });
});

describe('local arbiter', () => {
  it('grants at once with an infinite deadline; resign drops it; the next acquire has a higher epoch', async () => {
    const a = validateArbiter(localArbiter({ firstEpoch: 3 }));
    expect(a.role()).toEqual({ held: false, epoch: 0, deadline: -Infinity });
    expect(await a.acquire(new AbortController().signal)).toEqual({ epoch: 3, deadline: Infinity });
    expect(a.role()).toEqual({ held: true, epoch: 3, deadline: Infinity });
    await a.resign();
    expect(a.role().held).toBe(false);
    expect((await a.acquire(new AbortController().signal)).epoch).toBe(4);
    await a.close();
    await expect(a.acquire(new AbortController().signal)).rejects.toMatchObject({ code: 'STATE' });
  });

  it('publishes records only while holding the role; anyone reads them', async () => {
    const a = localArbiter();
    await expect(a.publish!('sync', 'x', new AbortController().signal)).rejects.toMatchObject({ code: 'ROLE_LOST' });
    await a.acquire(new AbortController().signal);
    await a.publish!('sync', '{"inSync":false}', new AbortController().signal);
    expect(await a.read!('sync', new AbortController().signal)).toBe('{"inSync":false}');
    expect(await a.read!('other', new AbortController().signal)).toBeUndefined();
    expect(() => a.publish!('Bad Name', '', new AbortController().signal)).toThrowError(/record name/);
  });

  it('validateArbiter names the missing member', () => {
    expect(() => validateArbiter({ name: 'x', acquire() {}, role() {}, resign() {} })).toThrowError(/arbiter x must implement close/);
  });
});
