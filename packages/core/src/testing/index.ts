/**
 * @remus/core/testing: the conformance kit for subkind authors.
 *
 * One call in a vitest file checks a subkind against the device-layer
 * contract, on real resources the author provides:
 *
 * ```ts
 * import { describeSubkindConformance } from '@remus/core/testing';
 * describeSubkindConformance({
 *   make: () => mySubkind(),
 *   device: () => ({ id: 'vif1.0', kind: 'nic', params: { ifname: 'vif1.0' } }),
 *   leftovers: async () => listWhatMySubkindMightLeave(),
 *   crash: { module: new URL('../dist/index.js', import.meta.url), export: 'mySubkind' },
 * });
 * ```
 *
 * Every failure message starts with the op it is about (`setup: ...`,
 * `postsuspend (checkpoint 2): ...`), so a red test says what to fix.
 */
import { spawn } from 'node:child_process';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCheckpointDevices, DEFAULT_TIMEOUTS } from '../devices.js';
import type { OpEvent } from '../engine.js';
import { describeCause, RemusError } from '../errors.js';
import type { DeviceHandle, DeviceSpec, MatchResult, OpContext, OpName, SubkindOps } from '../ops.js';
import { CHECKPOINT_OPS } from '../ops.js';
import { validateOpsList } from '../validate.js';

/** How the kit runs the subkind in a real child process that it then kills with SIGKILL (the reap test). */
export interface CrashOptions {
  /**
   * A module the child process can import with plain `node` (built JavaScript,
   * a file path or URL), exporting a factory like `make` (no arguments) or the ops object itself.
   */
  readonly module: string | URL;
  /** The export to use. Default `default`. */
  readonly export?: string;
  /** Extra node arguments for the child (e.g. `['--import', 'tsx']` to load TypeScript). Default none. */
  readonly nodeArgs?: readonly string[];
}

export interface ConformanceOptions {
  /** Suite title. Default: `subkind conformance` (the ops are made per test, so the name is not known yet). */
  readonly title?: string;
  /** Makes fresh ops for each test. */
  readonly make: () => SubkindOps | Promise<SubkindOps>;
  /**
   * A device this subkind must take, valid in the environment `beforeEach`
   * prepared. Must be plain JSON when `crash` is given (it is handed to the child).
   */
  readonly device: () => DeviceSpec | Promise<DeviceSpec>;
  /**
   * A device of the same kind that belongs to another subkind: `match` must
   * decline it ("not mine"), never throw. Default: a device of the subkind's
   * kind without params, which `match` must not throw for (declining or
   * taking it are both accepted, and a `checkParams` that refuses it counts
   * as declining: the core would refuse the config before any `match`).
   */
  readonly foreignDevice?: () => DeviceSpec | Promise<DeviceSpec>;
  /** Prepares the environment for each test (namespaces, QEMU, loop devices...). */
  readonly beforeEach?: () => unknown;
  /** Removes the environment after each test. */
  readonly afterEach?: () => unknown;
  /**
   * Lists what the subkind may have left behind (kernel objects, files,
   * processes), as human-readable strings; empty means clean. Called after
   * teardown + cleanup in every test, and around `match` (which must change
   * nothing). Strongly recommended.
   */
  readonly leftovers?: () => Promise<readonly string[]> | readonly string[];
  /**
   * Breaks a set-up device under the subkind between two checkpoints (remove
   * the IFB, stop the peer), so that the next checkpoint must fail: a
   * checkpoint op that swallows its errors would let the primary run on
   * unprotected. Default: the subkind's own `teardown` on the device's handle
   * (the resources disappear under the checkpoint ops), applied only when
   * that teardown visibly removes something (`leftovers` shrinks). Ignored
   * when the subkind has no checkpoint op.
   */
  readonly breakDevice?: (handle: DeviceHandle) => unknown;
  /**
   * Runs `init` and `setup` (and one checkpoint) in a real child process,
   * kills it with SIGKILL and then calls `reap`: what a crash really leaves
   * (the process's sockets, locks and fds closed by the kernel). Without it, a
   * subkind with `reap` is "crashed" in process (its shared state cleaned up,
   * the device never torn down), which leaves the device's handles open.
   */
  readonly crash?: CrashOptions;
  /** Checkpoints in the lifecycle test. Default 3. */
  readonly checkpoints?: number;
  /**
   * Time limit per op the subkind must meet, ms, for ops whose limit the
   * subkind does not declare in its own `timeouts` (declared ones always win,
   * as in the core). Default: the core's {@link DEFAULT_TIMEOUTS}.
   */
  readonly timeoutMs?: number;
  /** How long after its signal fires an aborted `setup` may take to settle, ms. Default 1 000. */
  readonly abortGraceMs?: number;
  /** When the kit aborts `setup` in the "aborted part way" test, ms after it started. Default 5. */
  readonly abortAfterMs?: number;
  /** vitest timeout per test, ms. Default 60 000; raise it when the subkind's declared timeouts add up to more. */
  readonly testTimeoutMs?: number;
}

/** The operation id the kit's direct calls use. */
export const KIT_OPERATION = 'conformance-kit';

/** A context for direct op calls: a live signal and checkpoint 0. */
function ctx(signal: AbortSignal = new AbortController().signal, checkpoint = 0, operation = KIT_OPERATION): OpContext {
  return { signal, checkpoint, epoch: 0, operation };
}

/** Process spawns seen while a {@link SpawnWatch} is active (every async spawn, and the sync ones). */
interface SpawnWatch {
  readonly seen: readonly string[];
  stop(): void;
}

const childProcessModule = createRequire(import.meta.url)('node:child_process') as Record<string, unknown>;
const SYNC_SPAWNERS = ['spawnSync', 'execSync', 'execFileSync'] as const;

/**
 * Counts processes spawned from now until `stop`: async spawns through the
 * `child_process` diagnostics channel (execa included), sync ones by wrapping
 * the module's sync functions (ESM named imports follow via syncBuiltinESMExports).
 */
function watchSpawns(): SpawnWatch {
  const sync: string[] = [];
  // The channel publishes from the ChildProcess constructor, before spawn fills in the command: read it at `seen` time.
  const procs: { spawnfile?: string; spawnargs?: string[] }[] = [];
  const onSpawn = (message: unknown): void => void procs.push((message as { process?: (typeof procs)[number] }).process ?? {});
  subscribe('child_process', onSpawn);
  const originals = SYNC_SPAWNERS.map((name) => childProcessModule[name] as (...a: unknown[]) => unknown);
  SYNC_SPAWNERS.forEach((name, i) => {
    const original = originals[i]!;
    childProcessModule[name] = function (this: unknown, ...args: unknown[]) {
      sync.push([args[0], ...(Array.isArray(args[1]) ? args[1] : [])].join(' '));
      return original.apply(this, args);
    };
  });
  syncBuiltinESMExports();
  return {
    get seen() {
      return [...procs.map((p) => p.spawnargs?.join(' ') || p.spawnfile || 'a child process'), ...sync];
    },
    stop() {
      unsubscribe('child_process', onSpawn);
      SYNC_SPAWNERS.forEach((name, i) => (childProcessModule[name] = originals[i]));
      syncBuiltinESMExports();
    },
  };
}

/** Settles with the promise's outcome, or `'late'` when it has not settled within `ms`. */
async function settleWithin<T>(p: Promise<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false; error: unknown } | 'late'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), ms)));
  try {
    return await Promise.race([p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error })), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `body` with the op's name prefixed to whatever it throws. */
async function step<T>(what: string, body: () => T | Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (e) {
    throw new Error(`${what}: ${describeCause(e) ?? String(e)}`, { cause: e });
  }
}

/** Is the verdict a "not mine"? */
function declined(verdict: MatchResult): boolean {
  return verdict === false || (typeof verdict === 'object' && verdict !== null && verdict.match === false);
}

/** The child process of the reap test: init + setup + one checkpoint, then "ready", then it waits to be killed. */
const CRASH_CHILD = `
const [url, exportName, deviceJson, operation] = process.argv.slice(1);
try {
  const mod = await import(url);
  const made = mod[exportName];
  const ops = typeof made === 'function' ? await made() : made;
  const signal = new AbortController().signal;
  const ctx = (checkpoint) => ({ signal, checkpoint, epoch: 0, operation });
  const shared = ops.init ? await ops.init(ctx(0)) : undefined;
  const h = { device: JSON.parse(deviceJson), shared, data: undefined };
  await ops.setup(h, ctx(0));
  await ops.postsuspend?.(h, ctx(1));
  await ops.preresume?.(h, ctx(1));
  await ops.commit?.(h, ctx(1));
  process.stdout.write('remus-kit-ready\\n');
  setInterval(() => {}, 1 << 30);
} catch (e) {
  process.stderr.write(String(e && e.stack || e) + '\\n');
  process.exit(3);
}
`;

/**
 * Starts the crash child, waits until its device is set up, kills it with
 * SIGKILL and waits for it to be gone. Rejects naming the op that failed in
 * the child (its stderr) or the time limit.
 */
async function crashChild(crash: CrashOptions, device: DeviceSpec, operation: string, timeoutMs: number): Promise<void> {
  const url = crash.module instanceof URL ? crash.module.href : crash.module.startsWith('file:') ? crash.module : pathToFileURL(crash.module).href;
  const child = spawn(process.execPath, [...(crash.nodeArgs ?? []), '--input-type=module', '-e', CRASH_CHILD, url, crash.export ?? 'default', JSON.stringify(device), operation], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: process.cwd(),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const ready = await settleWithin(
      new Promise<void>((resolve, reject) => {
        child.stdout.on('data', () => stdout.includes('remus-kit-ready') && resolve());
        child.once('exit', (code) => reject(new Error(`the child exited (${code}) before its device was set up: ${stderr.trim()}`)));
        child.once('error', reject);
      }),
      timeoutMs,
    );
    if (ready === 'late') throw new Error(`the child did not finish init + setup + one checkpoint within ${timeoutMs} ms: ${stderr.trim()}`);
    if (!ready.ok) throw ready.error;
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

/**
 * Defines a vitest suite that checks a subkind against the contract:
 * well-formed ops; a full lifecycle through the core engine with every op
 * settling within its time limit (the subkind's declared `timeouts` honoured)
 * and no process spawned by a checkpoint op; teardown twice; teardown after a
 * setup that never ran; a setup aborted part way settles promptly and tears
 * down clean; a checkpoint on a broken device fails; reap after a real crash;
 * cleanup right after init; `match` changes nothing, takes its own device and
 * declines a foreign one without throwing; nothing left behind.
 */
export function describeSubkindConformance(options: ConformanceOptions): void {
  const title = options.title ?? 'subkind conformance';
  const testTimeout = options.testTimeoutMs ?? 60_000;
  const abortGrace = options.abortGraceMs ?? 1_000;
  const abortAfter = options.abortAfterMs ?? 5;
  const leftovers = async (): Promise<readonly string[]> => (options.leftovers ? await options.leftovers() : []);
  const expectClean = async (after: string): Promise<void> => {
    expect(await leftovers(), `left behind after ${after}`).toEqual([]);
  };
  const limitOf = (ops: SubkindOps, op: OpName): number => ops.timeouts?.[op] ?? options.timeoutMs ?? DEFAULT_TIMEOUTS[op];

  const withShared = async <T>(ops: SubkindOps, body: (shared: unknown) => Promise<T>): Promise<T> => {
    const shared = ops.init ? await step('init', () => ops.init!(ctx())) : undefined;
    try {
      return await body(shared);
    } finally {
      if (ops.cleanup) await step('cleanup', () => ops.cleanup!(shared, ctx()));
    }
  };
  const handleFor = (device: DeviceSpec, shared: unknown): DeviceHandle => ({ device, shared, data: undefined });

  describe(title, () => {
    if (options.beforeEach) beforeEach(async () => void (await options.beforeEach!()), testTimeout);
    if (options.afterEach) afterEach(async () => void (await options.afterEach!()), testTimeout);

    it('has well-formed ops: name, kind, setup and teardown, valid timeouts', async () => {
      const ops = await options.make();
      expect(() => validateOpsList([ops])).not.toThrow();
      expect(typeof ops.name, 'name').toBe('string');
      expect(typeof ops.kind, 'kind').toBe('string');
    });

    it('runs a full lifecycle through the core, every op within its time limit, no checkpoint op spawning a process, leaving nothing behind', async () => {
      const ops = await options.make();
      const device = await options.device();
      const events: OpEvent[] = [];
      const layer = createCheckpointDevices({
        ops: [ops],
        devices: [device],
        onEvent: (e) => events.push(e),
        ...(options.timeoutMs ? { timeouts: Object.fromEntries(Object.keys(DEFAULT_TIMEOUTS).map((k) => [k, options.timeoutMs])) } : {}),
      });
      const spawned: string[] = [];
      try {
        await step('setup', () => layer.setup());
        expect(layer.assignments()[0]?.subkind, `match: ${device.id} was not taken by ${ops.name}`).toBe(ops.name);
        const n = options.checkpoints ?? 3;
        for (let i = 1; i <= n; i++) {
          for (const op of CHECKPOINT_OPS) {
            const watch = watchSpawns();
            try {
              await step(`${op} (checkpoint ${i})`, () => layer[op]());
            } finally {
              watch.stop();
            }
            spawned.push(...watch.seen.map((argv) => `${op} (checkpoint ${i}) spawned "${argv}"`));
          }
        }
      } finally {
        await layer.teardown();
      }
      if (spawned.length > 0) throw new Error(`${spawned.join('; ')}: checkpoint ops must never spawn a process (they run while the guest is paused)`);
      const ends = events.filter((e) => e.type === 'op-end');
      for (const e of ends) {
        const where = `${e.op} on ${e.device ?? '(subkind)'}`;
        expect(e.outcome, `${where}: ${e.error?.message ?? ''}`).toBe('ok');
        const limit = limitOf(ops, e.op);
        expect(e.durationMs!, `${where}: took ${Math.round(e.durationMs!)} ms, over its limit of ${limit} ms`).toBeLessThan(limit);
      }
      const count = (op: OpName): number => ends.filter((e) => e.op === op).length;
      expect(count('setup'), 'setup: calls').toBe(1);
      expect(count('teardown'), 'teardown: calls').toBe(1);
      if (ops.init) expect(count('init'), 'init: calls').toBe(1);
      if (ops.cleanup) expect(count('cleanup'), 'cleanup: calls').toBe(1);
      if (ops.commit) expect(count('commit'), 'commit: calls').toBe(options.checkpoints ?? 3);
      await expectClean('setup, checkpoints, teardown and cleanup');
    }, testTimeout);

    it('tolerates teardown twice after a successful setup', async () => {
      const ops = await options.make();
      const device = await options.device();
      await withShared(ops, async (shared) => {
        const h = handleFor(device, shared);
        await step('setup', () => ops.setup(h, ctx()));
        await step('teardown', () => ops.teardown(h, ctx()));
        await step('teardown (second call)', () => ops.teardown(h, ctx()));
      });
      await expectClean('teardown twice');
    }, testTimeout);

    it('tears down a device whose setup never ran (setup failed before its first step)', async () => {
      const ops = await options.make();
      const device = await options.device();
      await withShared(ops, async (shared) => {
        const h = handleFor(device, shared);
        await step('teardown (setup never ran)', () => ops.teardown(h, ctx()));
        await step('teardown (second call)', () => ops.teardown(h, ctx()));
      });
      await expectClean('teardown without setup');
    }, testTimeout);

    it('settles promptly when setup is aborted part way, then tears down clean', async () => {
      const ops = await options.make();
      const device = await options.device();
      await withShared(ops, async (shared) => {
        const h = handleFor(device, shared);
        const ac = new AbortController();
        const setup = Promise.resolve().then(() => ops.setup(h, ctx(ac.signal)));
        const started = await settleWithin(setup, abortAfter);
        let late = false;
        if (started === 'late') {
          ac.abort(new RemusError('ABORTED', 'conformance kit aborts setup part way'));
          late = (await settleWithin(setup, abortGrace)) === 'late';
          // Let a late setup finish (within its own limit) so that teardown sees what it made.
          if (late) await settleWithin(setup, limitOf(ops, 'setup'));
        }
        await step('teardown (after an aborted setup)', () => ops.teardown(h, ctx()));
        expect(late, `setup: still running ${abortGrace} ms after its signal was aborted (${abortAfter} ms in); it must watch ctx.signal`).toBe(false);
      });
      await expectClean('an aborted setup and its teardown');
    }, testTimeout);

    it('fails the checkpoint when the device breaks under it (no checkpoint op swallows errors)', async () => {
      const ops = await options.make();
      const present = CHECKPOINT_OPS.filter((op) => ops[op]);
      if (present.length === 0) {
        expect(present, 'no checkpoint op: nothing can swallow an error').toEqual([]);
        return;
      }
      const device = await options.device();
      await withShared(ops, async (shared) => {
        const h = handleFor(device, shared);
        try {
          await step('setup', () => ops.setup(h, ctx()));
          for (const op of present) await step(`${op} (checkpoint 1, device intact)`, () => ops[op]!(h, ctx(undefined, 1)));
          if (options.breakDevice) {
            await step('breakDevice', () => options.breakDevice!(h));
          } else {
            // Default break: the subkind's own teardown. It breaks the device only when it visibly
            // removes something setup made (a subkind that does not own its device, e.g. a DRBD
            // resource, removes nothing: give `breakDevice` to check it).
            const before = await leftovers();
            await step('teardown (breaking the device)', () => ops.teardown(h, ctx()));
            const after = new Set(await leftovers());
            if (!before.some((x) => !after.has(x))) return;
          }
          const resolved: string[] = [];
          let failed = false;
          for (const op of present) {
            try {
              await ops[op]!(h, ctx(undefined, 2));
              resolved.push(op);
            } catch {
              failed = true;
              break;
            }
          }
          expect(
            failed,
            `${resolved.join(', ')} (checkpoint 2): resolved on a broken device; a checkpoint op must reject when it cannot do its work, never swallow the error`,
          ).toBe(true);
        } finally {
          await step('teardown (after the broken checkpoint)', () => ops.teardown(h, ctx()));
        }
      });
      await expectClean('a broken checkpoint and its teardown');
    }, testTimeout);

    it('reaps what a crashed operation left behind (if the subkind implements reap)', async () => {
      const ops = await options.make();
      const device = await options.device();
      if (!ops.reap) {
        // Nothing to check: without reap, crash recovery relies on teardown alone.
        expect(ops.reap).toBeUndefined();
        return;
      }
      const operation = `kit-crash-${process.pid}-${Date.now() % 1e6}`;
      if (options.crash) {
        await step('setup (in a child process, then SIGKILL)', () =>
          crashChild(options.crash!, device, operation, limitOf(ops, 'init') + limitOf(ops, 'setup') + 3 * limitOf(ops, 'commit') + 10_000),
        );
      } else {
        // In-process stand-in for a crash: no teardown, only the shared state goes (the device's handles stay open).
        const shared = ops.init ? await step('init', () => ops.init!(ctx(undefined, 0, operation))) : undefined;
        await step('setup', () => ops.setup(handleFor(device, shared), ctx(undefined, 0, operation)));
        if (ops.cleanup) await step('cleanup', () => ops.cleanup!(shared, ctx(undefined, 0, operation)));
      }
      const left = await leftovers();
      const removed = await step('reap', () => ops.reap!(operation, [device], ctx()));
      expect(Array.isArray(removed), 'reap: must return an array of lines').toBe(true);
      if (left.length > 0) expect(removed.length, `reap: removed nothing, though the crash left ${left.join(', ')}`).toBeGreaterThan(0);
      await expectClean('a crash and reap');
      expect(await step('reap (second call)', () => ops.reap!(operation, [device], ctx())), 'reap (second call): must find nothing').toEqual([]);
    }, testTimeout);

    it('cleans up right after init, with no device set up', async () => {
      const ops = await options.make();
      await withShared(ops, async () => undefined);
      await expectClean('init and cleanup');
    }, testTimeout);

    it('matches its own device, changing nothing', async () => {
      const ops = await options.make();
      const device = await options.device();
      await withShared(ops, async (shared) => {
        const before = await leftovers();
        const verdict: MatchResult = ops.match ? await step('match', () => ops.match!(handleFor(device, shared), ctx())) : true;
        expect(verdict, `match: did not take its own device ${device.id}`).toBe(true);
        expect(await leftovers(), 'match: must not change anything (what it left differs from before the call)').toEqual(before);
      });
    }, testTimeout);

    it('declines a foreign device of its kind instead of throwing, changing nothing', async () => {
      const ops = await options.make();
      const given = options.foreignDevice ? await options.foreignDevice() : undefined;
      const device: DeviceSpec = given ?? { id: 'remus-kit-foreign0', kind: ops.kind };
      expect(device.kind, 'foreignDevice: must be of the subkind kind').toBe(ops.kind);
      if (!given && ops.checkParams) {
        let refused = false;
        try {
          ops.checkParams(device);
        } catch {
          refused = true; // The core refuses such a device before any match.
        }
        if (refused) return;
      }
      await withShared(ops, async (shared) => {
        const before = await leftovers();
        if (ops.match) {
          let verdict: MatchResult;
          try {
            verdict = await ops.match(handleFor(device, shared), ctx());
          } catch (e) {
            throw new Error(`match: threw for the foreign device ${JSON.stringify(device)} instead of declining it: ${describeCause(e)}`, { cause: e });
          }
          if (given) expect(declined(verdict), `match: took the foreign device ${device.id}; it must return false or noMatch(reason)`).toBe(true);
        }
        expect(await leftovers(), 'match: must not change anything (what it left differs from before the call)').toEqual(before);
      });
    }, testTimeout);
  });
}
