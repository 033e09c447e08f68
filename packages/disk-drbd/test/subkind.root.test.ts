// Needs root (mknod of a DRBD-major device node). DRBD state comes from a
// fake status file the tests rewrite: fault injection for states a real pair
// is hard to hold in (resync, I/O suspended, a barrier that never drains).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCheckpointDevices, isRemusError, loadPlugin, type DeviceHandle, type SubkindOps } from '@remus/core';
import { describeSubkindConformance } from '@remus/core/testing';
import { diskDrbd, openProcDrbd, plugin, type DiskDrbdOptions, type DrbdCheckpointChannel } from '../src/index.js';
import { linkedProject } from '@remus/test-lab';
import { fileURLToPath } from 'node:url';
import { onTestFinished } from 'vitest';
import { ctx, FakeDrbd, minorText, procText } from './fixtures.js';

/** A user's project with this package installed (linked, as pnpm does): core loads plugins only from such a node_modules. */
function userProject(pkg: string): string {
  const p = linkedProject(pkg, fileURLToPath(new URL('..', import.meta.url)));
  onTestFinished(p.remove);
  return p.dir;
}


let fake: FakeDrbd;
beforeEach(() => {
  fake = new FakeDrbd();
});
afterEach(() => {
  fake.remove();
});

function make(options: DiskDrbdOptions = {}): SubkindOps {
  return diskDrbd({ stateSource: () => openProcDrbd(fake.statusFile), drbdsetup: '/bin/false', ...options });
}

/** init + a handle, for direct op calls; `done()` runs cleanup. */
async function open(ops: SubkindOps, device = fake.device()) {
  const shared = await ops.init!(ctx());
  const h: DeviceHandle<any, any> = { device, shared, data: undefined };
  return { h, done: () => ops.cleanup!(shared, ctx()) };
}

async function failure(p: unknown): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

describe('match', () => {
  it('takes a Primary, Connected, UpToDate/UpToDate protocol C device', async () => {
    const ops = make();
    const { h, done } = await open(ops);
    expect(await ops.match!(h, ctx())).toBe(true);
    await done();
  });

  it('says "not mine" with a reason for a plain file and for a spec without path or resource', async () => {
    const ops = make();
    const { h, done } = await open(ops, { id: 'img', kind: 'disk', params: { path: fake.plainFile } });
    expect(await ops.match!(h, ctx())).toEqual({ match: false, reason: expect.stringMatching(/not a block device/) });
    const bare = { ...h, device: { id: 'qdisk', kind: 'disk' } };
    expect(await ops.match!(bare, ctx())).toEqual({ match: false, reason: expect.stringMatching(/neither params.path nor params.resource/) });
    await done();
  });

  const broken: [string, Parameters<typeof minorText>[1] | 'unconfigured' | 'absent', RegExp, RegExp][] = [
    ['Secondary here', { ro: 'Secondary/Secondary' }, /is Secondary here/, /drbdadm primary/],
    ['not Connected', { cs: 'WFConnection', ro: 'Primary/Unknown', ds: 'UpToDate/DUnknown' }, /is not Connected to its peer \(cs:WFConnection/, /drbdadm connect/],
    ['resynchronising', { cs: 'SyncSource', ds: 'UpToDate/Inconsistent', oos: 4096 }, /still resynchronising its peer.*4096 KiB/, /wait-sync/],
    ['peer disk Outdated', { ds: 'UpToDate/Outdated' }, /peer disk that is Outdated, not UpToDate/, /attach it there/],
    ['local disk Inconsistent', { ds: 'Inconsistent/UpToDate' }, /local disk that is Inconsistent/, /drbdadm attach/],
    ['I/O suspended', { flags: 's-----' }, /I\/O suspended/, /resume-io/],
    ['protocol A', { protocol: 'A' }, /protocol A: a write completes before the peer has it/, /protocol C;/],
    ['protocol D without ioctls', { protocol: 'D' }, /protocol D, but no checkpointIoctls/, /checkpointIoctls/],
    ['unconfigured', 'unconfigured', /not configured in the kernel/, /drbdadm up/],
    ['unknown minor', 'absent', /not configured in the kernel/, /drbdadm up/],
  ];
  for (const [what, state, problem, fix] of broken) {
    it(`fails a DRBD device that is ${what} with DEVICE_NOT_READY saying which and how to fix it, never "not mine"`, async () => {
      fake.write(
        procText(state === 'absent' ? minorText(3) : state === 'unconfigured' ? minorText(7, { cs: 'Unconfigured' }) : minorText(7, state)),
      );
      const ops = make();
      const { h, done } = await open(ops);
      const e = await failure(ops.match!(h, ctx()));
      expect(e.code).toBe('DEVICE_NOT_READY');
      expect(e.message).toMatch(problem);
      expect(e.message).toMatch(/Fix: /);
      expect(e.message).toMatch(fix);
      await done();
    });
  }

  it('fails a spec naming a resource when the DRBD module is not loaded', async () => {
    const ops = diskDrbd({ stateSource: () => openProcDrbd(`/nonexistent-${process.pid}`) });
    const { h, done } = await open(ops, { id: 'xvda', kind: 'disk', params: { resource: 'r0' } });
    const e = await failure(ops.match!(h, ctx()));
    expect(e.code).toBe('UNSUPPORTED_HOST');
    expect(e.message).toMatch(/modprobe drbd/);
    await done();
  });

  it('rejects bad params with INVALID_ARGUMENT', async () => {
    const ops = make();
    const { h, done } = await open(ops, { id: 'xvda', kind: 'disk', params: { resource: 'r0; rm -rf /' } });
    expect((await failure(ops.match!(h, ctx()))).code).toBe('INVALID_ARGUMENT');
    const rel = { ...h, device: { id: 'xvda', kind: 'disk', params: { path: 'drbd0' } } };
    expect((await failure(ops.match!(rel, ctx()))).code).toBe('INVALID_ARGUMENT');
    await done();
  });

  it('refuses bad options at once', () => {
    expect(() => diskDrbd({ barrierTimeoutMs: -1 })).toThrow(/barrierTimeoutMs/);
    expect(() => diskDrbd({ probe: '' })).toThrow(/probe/);
  });
});

describe('checkpoint barrier', () => {
  it('passes at once when nothing is in flight, and counts checkpoints', async () => {
    const ops = make();
    const { h, done } = await open(ops);
    await ops.setup(h, ctx());
    await ops.postsuspend!(h, ctx(1));
    await ops.preresume!(h, ctx(1));
    expect(ops.stats!(h)['checkpoints']).toBe(1);
    await ops.teardown(h, ctx());
    await done();
  });

  it('waits until the peer answered every write pending at the suspend', async () => {
    const ops = make();
    const { h, done } = await open(ops);
    await ops.setup(h, ctx());
    fake.write(procText(minorText(7, { ap: 2, pe: 2 })));
    await ops.postsuspend!(h, ctx(1));
    expect(ops.stats!(h)['pendingAtSuspend']).toBe(4);
    let settled = false;
    const barrier = Promise.resolve(ops.preresume!(h, ctx(1))).then(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(settled).toBe(false);
    fake.write(procText(minorText(7, { ap: 1, pe: 0 })));
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBe(false);
    fake.write(procText(minorText(7)));
    await barrier;
    expect(settled).toBe(true);
    expect(ops.stats!(h)['lastBarrierMs']).toBeGreaterThanOrEqual(100);
    await ops.teardown(h, ctx());
    await done();
  });

  it('fails the checkpoint at once when the peer disconnects during the barrier', async () => {
    const ops = make({ barrierTimeoutMs: 60_000 });
    const { h, done } = await open(ops);
    await ops.setup(h, ctx());
    fake.write(procText(minorText(7, { ap: 1, pe: 1 })));
    await ops.postsuspend!(h, ctx(4));
    const barrier = failure(ops.preresume!(h, ctx(4)));
    await new Promise((r) => setTimeout(r, 50));
    fake.write(procText(minorText(7, { cs: 'WFConnection', ro: 'Primary/Unknown', ds: 'UpToDate/DUnknown', ap: 0, pe: 0 })));
    const e = await barrier;
    expect(e.code).toBe('DEVICE_NOT_READY');
    expect(e.message).toMatch(/is not Connected to its peer \(cs:WFConnection.*failed checkpoint 4 during the checkpoint barrier: the backup's disk does not hold this checkpoint/);
    await ops.teardown(h, ctx());
    await done();
  });

  it('fails the next checkpoint at postsuspend when the peer fell behind since the last', async () => {
    const ops = make();
    const { h, done } = await open(ops);
    await ops.setup(h, ctx());
    fake.write(procText(minorText(7, { cs: 'SyncSource', ds: 'UpToDate/Inconsistent', oos: 64 })));
    const e = await failure(ops.postsuspend!(h, ctx(9)));
    expect(e.code).toBe('DEVICE_NOT_READY');
    expect(e.message).toMatch(/still resynchronising.*failed checkpoint 9 when the domain was suspended/);
    await ops.teardown(h, ctx());
    await done();
  });

  it('gives up after barrierTimeoutMs with TIMEOUT and the counters still pending', async () => {
    const ops = make({ barrierTimeoutMs: 150 });
    expect(ops.timeouts?.preresume).toBe(1150);
    const { h, done } = await open(ops);
    await ops.setup(h, ctx());
    fake.write(procText(minorText(7, { ap: 1, pe: 1 })));
    await ops.postsuspend!(h, ctx(2));
    const started = performance.now();
    const e = await failure(ops.preresume!(h, ctx(2)));
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toMatch(/failed checkpoint 2: the peer did not acknowledge every write issued before the suspend.*ap:1 pe:1/);
    await ops.teardown(h, ctx());
    await done();
  });

  it('stops waiting when the signal fires, with the signal reason', async () => {
    const ops = make({ barrierTimeoutMs: 60_000 });
    const { h, done } = await open(ops);
    await ops.setup(h, ctx());
    fake.write(procText(minorText(7, { ap: 1 })));
    await ops.postsuspend!(h, ctx(1));
    const ac = new AbortController();
    const barrier = failure(ops.preresume!(h, ctx(1, ac.signal)));
    setTimeout(() => ac.abort(new Error('operator stopped it')), 30);
    const e = await barrier;
    expect(e.code).toBe('ABORTED');
    await ops.teardown(h, ctx());
    await done();
  });

  it('refuses preresume without postsuspend and checkpoint ops before setup (STATE)', async () => {
    const ops = make();
    const { h, done } = await open(ops);
    expect((await failure(ops.postsuspend!(h, ctx(1)))).code).toBe('STATE');
    await ops.setup(h, ctx());
    expect((await failure(ops.preresume!(h, ctx(1)))).code).toBe('STATE');
    await ops.teardown(h, ctx());
    await done();
  });

  it('a disconnect makes the layer fail the checkpoint with the device named', async () => {
    const layer = createCheckpointDevices({ ops: [make()], devices: [fake.device('xvdb')] });
    await layer.setup();
    await layer.postsuspend();
    await layer.preresume();
    await layer.commit();
    fake.write(procText(minorText(7, { cs: 'WFConnection', ro: 'Primary/Unknown', ds: 'UpToDate/DUnknown' })));
    const e = await failure(layer.postsuspend());
    expect(isRemusError(e, 'PHASE_FAILED')).toBe(true);
    const one = (e as unknown as { failures: Error[] & { code: string; device: string }[] }).failures[0]!;
    expect(one.code).toBe('DEVICE_NOT_READY');
    expect(one.device).toBe('xvdb');
    await layer.teardown();
  });
});

describe('no process per checkpoint', () => {
  /** Counts every process Node starts (async and sync) while `body` runs, through the bindings child_process uses. */
  async function spawnsDuring(body: () => Promise<unknown>): Promise<number> {
    const binding = (name: string): any => (process as unknown as { binding(n: string): any }).binding(name);
    const proto = binding('process_wrap').Process.prototype;
    const sync = binding('spawn_sync');
    const [origAsync, origSync] = [proto.spawn, sync.spawn];
    let n = 0;
    proto.spawn = function (this: unknown, ...a: unknown[]) {
      n++;
      return origAsync.apply(this, a);
    };
    sync.spawn = (...a: unknown[]) => {
      n++;
      return origSync.apply(sync, a);
    };
    try {
      await body();
    } finally {
      proto.spawn = origAsync;
      sync.spawn = origSync;
    }
    return n;
  }

  it('match and setup may run drbdsetup; postsuspend and preresume start no process', async () => {
    const ops = make();
    const { h, done } = await open(ops);
    // The counter sees processes: match looks the resource name up with drbdsetup (here /bin/false).
    expect(await spawnsDuring(async () => ops.match!(h, ctx()))).toBeGreaterThan(0);
    await ops.setup(h, ctx());
    const spawned = await spawnsDuring(async () => {
      for (let i = 1; i <= 5; i++) {
        // Each barrier really waits: two requests in flight, answered 10 ms into preresume.
        fake.write(procText(minorText(7, { ap: 1, pe: 1 })));
        await ops.postsuspend!(h, ctx(i));
        const barrier = ops.preresume!(h, ctx(i));
        setTimeout(() => fake.write(procText(minorText(7))), 10);
        await barrier;
      }
    });
    expect(ops.stats!(h)['checkpoints']).toBe(5);
    expect(spawned).toBe(0);
    await ops.teardown(h, ctx());
    await done();
  });
});

describe('protocol D (Remus checkpoint ioctls)', () => {
  function fakeIoctls(ack: (signal: AbortSignal) => Promise<void>) {
    const calls: string[] = [];
    const channel: DrbdCheckpointChannel = {
      sendCheckpoint: async () => void calls.push('send'),
      waitCheckpointAck: async (s) => {
        calls.push('wait');
        await ack(s);
      },
      close: async () => void calls.push('close'),
    };
    return { calls, checkpointIoctls: { open: async (path: string) => (calls.push(`open ${path}`), channel) } };
  }

  it('sends the checkpoint at postsuspend, waits for its ack at preresume, closes at teardown', async () => {
    fake.write(procText(minorText(7, { protocol: 'D' })));
    const io = fakeIoctls(async () => undefined);
    const ops = make({ checkpointIoctls: io.checkpointIoctls });
    const { h, done } = await open(ops);
    expect(await ops.match!(h, ctx())).toBe(true);
    await ops.setup(h, ctx());
    await ops.postsuspend!(h, ctx(1));
    await ops.preresume!(h, ctx(1));
    await ops.teardown(h, ctx());
    await ops.teardown(h, ctx());
    expect(io.calls).toEqual([`open ${fake.devicePath}`, 'send', 'wait', 'close']);
    await done();
  });

  it('bounds the wait for an ack that never comes, even if the binding ignores the signal', async () => {
    fake.write(procText(minorText(7, { protocol: 'D' })));
    const io = fakeIoctls(() => new Promise(() => undefined));
    const ops = make({ checkpointIoctls: io.checkpointIoctls, barrierTimeoutMs: 100 });
    const { h, done } = await open(ops);
    await ops.setup(h, ctx());
    await ops.postsuspend!(h, ctx(3));
    const e = await failure(ops.preresume!(h, ctx(3)));
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toMatch(/failed checkpoint 3/);
    await ops.teardown(h, ctx());
    await done();
  });
});

describe('plugin', () => {
  it('exports metadata the core accepts, and a factory that makes the subkind', async () => {
    expect(plugin.name).toBe('@remus/disk-drbd');
    const loaded = await loadPlugin('@remus/disk-drbd', { from: userProject('@remus/disk-drbd') });
    expect(Object.keys(loaded.subkinds)).toEqual(['disk-drbd']);
    const ops = loaded.subkinds['disk-drbd']!();
    expect([ops.name, ops.kind]).toEqual(['disk-drbd', 'disk']);
  });
});

describeSubkindConformance({
  title: 'disk-drbd conformance (fake status file, DRBD-major device node)',
  make: () => diskDrbd({ stateSource: () => openProcDrbd(fake.statusFile), drbdsetup: '/bin/false' }),
  device: () => fake.device(),
  foreignDevice: () => ({ id: 'img', kind: 'disk', params: { path: fake.plainFile } }),
  leftovers: () => [],
});
