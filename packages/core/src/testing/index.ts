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
 * });
 * ```
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCheckpointDevices, DEFAULT_TIMEOUTS } from '../devices.js';
import type { OpEvent } from '../engine.js';
import { RemusError } from '../errors.js';
import type { DeviceHandle, DeviceSpec, MatchResult, OpContext, OpName, SubkindOps } from '../ops.js';
import { validateOpsList } from '../validate.js';

export interface ConformanceOptions {
  /** Suite title. Default: `subkind conformance: <name>`. */
  readonly title?: string;
  /** Makes fresh ops for each test. */
  readonly make: () => SubkindOps | Promise<SubkindOps>;
  /** A device this subkind must take, valid in the environment `beforeEach` prepared. */
  readonly device: () => DeviceSpec | Promise<DeviceSpec>;
  /** Optional: a device of the same kind this subkind must decline ("not mine"), not throw for. */
  readonly foreignDevice?: () => DeviceSpec | Promise<DeviceSpec>;
  /** Prepares the environment for each test (namespaces, QEMU, loop devices...). */
  readonly beforeEach?: () => unknown;
  /** Removes the environment after each test. */
  readonly afterEach?: () => unknown;
  /**
   * Lists what the subkind may have left behind (kernel objects, files,
   * processes), as human-readable strings; empty means clean. Called after
   * teardown + cleanup in every test. Strongly recommended.
   */
  readonly leftovers?: () => Promise<readonly string[]> | readonly string[];
  /** Checkpoints in the lifecycle test. Default 3. */
  readonly checkpoints?: number;
  /** Time limit per op the subkind must meet, ms. Default: the core's defaults. */
  readonly timeoutMs?: number;
  /** vitest timeout per test, ms. Default 60 000. */
  readonly testTimeoutMs?: number;
}

/** A context for direct op calls: a live signal and checkpoint 0. */
function ctx(signal: AbortSignal = new AbortController().signal, checkpoint = 0): OpContext {
  return { signal, checkpoint, epoch: 0, operation: KIT_OPERATION };
}
/** The operation id the kit's direct calls use. */
export const KIT_OPERATION = 'conformance-kit';

/**
 * Defines a vitest suite that checks a subkind against the contract:
 * well-formed ops; a full lifecycle through the core engine with every op
 * settling within its time limit; teardown twice; teardown after a setup that
 * never ran; teardown after an aborted setup; cleanup right after init; a
 * foreign device declined rather than thrown on; nothing left behind.
 */
export function describeSubkindConformance(options: ConformanceOptions): void {
  const title = options.title ?? 'subkind conformance';
  const testTimeout = options.testTimeoutMs ?? 60_000;
  const leftovers = async (): Promise<readonly string[]> => (options.leftovers ? await options.leftovers() : []);
  const limit = (op: OpName): number => options.timeoutMs ?? DEFAULT_TIMEOUTS[op];

  const withShared = async <T>(ops: SubkindOps, body: (shared: unknown) => Promise<T>): Promise<T> => {
    const shared = ops.init ? await ops.init(ctx()) : undefined;
    try {
      return await body(shared);
    } finally {
      await ops.cleanup?.(shared, ctx());
    }
  };
  const handleFor = (device: DeviceSpec, shared: unknown): DeviceHandle => ({ device, shared, data: undefined });

  describe(title, () => {
    if (options.beforeEach) beforeEach(async () => void (await options.beforeEach!()), testTimeout);
    if (options.afterEach) afterEach(async () => void (await options.afterEach!()), testTimeout);

    it('has well-formed ops: name, kind, setup and teardown', async () => {
      const ops = await options.make();
      expect(() => validateOpsList([ops])).not.toThrow();
      expect(typeof ops.name).toBe('string');
      expect(typeof ops.kind).toBe('string');
    });

    it('runs a full lifecycle through the core, every op within its time limit, leaving nothing behind', async () => {
      const ops = await options.make();
      const device = await options.device();
      const events: OpEvent[] = [];
      const layer = createCheckpointDevices({
        ops: [ops],
        devices: [device],
        onEvent: (e) => events.push(e),
        ...(options.timeoutMs ? { timeouts: Object.fromEntries(Object.keys(DEFAULT_TIMEOUTS).map((k) => [k, options.timeoutMs])) } : {}),
      });
      await layer.setup();
      expect(layer.assignments()[0]?.subkind).toBe(ops.name);
      const n = options.checkpoints ?? 3;
      for (let i = 0; i < n; i++) {
        await layer.postsuspend();
        await layer.preresume();
        await layer.commit();
      }
      await layer.teardown();
      const ends = events.filter((e) => e.type === 'op-end');
      for (const e of ends) {
        expect(e.outcome, `${e.op} on ${e.device ?? '(subkind)'}: ${e.error?.message ?? ''}`).toBe('ok');
        expect(e.durationMs!).toBeLessThan(limit(e.op));
      }
      const count = (op: OpName): number => ends.filter((e) => e.op === op).length;
      expect(count('setup')).toBe(1);
      expect(count('teardown')).toBe(1);
      if (ops.init) expect(count('init')).toBe(1);
      if (ops.cleanup) expect(count('cleanup')).toBe(1);
      if (ops.commit) expect(count('commit')).toBe(n);
      expect(await leftovers()).toEqual([]);
    }, testTimeout);

    it('tolerates teardown twice after a successful setup', async () => {
      const ops = await options.make();
      const device = await options.device();
      await withShared(ops, async (shared) => {
        const h = handleFor(device, shared);
        await ops.setup(h, ctx());
        await ops.teardown(h, ctx());
        await ops.teardown(h, ctx());
      });
      expect(await leftovers()).toEqual([]);
    }, testTimeout);

    it('tears down a device whose setup never ran (setup failed before its first step)', async () => {
      const ops = await options.make();
      const device = await options.device();
      await withShared(ops, async (shared) => {
        const h = handleFor(device, shared);
        await ops.teardown(h, ctx());
        await ops.teardown(h, ctx());
      });
      expect(await leftovers()).toEqual([]);
    }, testTimeout);

    it('tears down after a setup that was aborted part way', async () => {
      const ops = await options.make();
      const device = await options.device();
      await withShared(ops, async (shared) => {
        const h = handleFor(device, shared);
        const ac = new AbortController();
        const p = Promise.resolve().then(() => ops.setup(h, ctx(ac.signal)));
        ac.abort(new RemusError('ABORTED', 'conformance kit aborts setup'));
        await p.catch(() => undefined);
        await ops.teardown(h, ctx());
      });
      expect(await leftovers()).toEqual([]);
    }, testTimeout);

    it('reaps what a crashed operation left behind (if the subkind implements reap)', async () => {
      const ops = await options.make();
      const device = await options.device();
      if (!ops.reap) {
        // Nothing to check: without reap, crash recovery relies on teardown alone.
        expect(ops.reap).toBeUndefined();
        return;
      }
      const shared = ops.init ? await ops.init(ctx()) : undefined;
      await ops.setup(handleFor(device, shared), ctx());
      // The "crash": no teardown, no cleanup of the device; only the shared state goes.
      await ops.cleanup?.(shared, ctx());
      const removed = await ops.reap(KIT_OPERATION, [device], ctx());
      expect(Array.isArray(removed)).toBe(true);
      expect(await leftovers()).toEqual([]);
      expect(await ops.reap(KIT_OPERATION, [device], ctx())).toEqual([]);
    }, testTimeout);

    it('cleans up right after init, with no device set up', async () => {
      const ops = await options.make();
      await withShared(ops, async () => undefined);
      expect(await leftovers()).toEqual([]);
    }, testTimeout);

    it('matches its own device', async () => {
      const ops = await options.make();
      const device = await options.device();
      const verdict: MatchResult = await withShared(ops, async (shared) =>
        ops.match ? ops.match(handleFor(device, shared), ctx()) : true,
      );
      expect(verdict).toBe(true);
    }, testTimeout);

    if (options.foreignDevice) {
      it('declines a foreign device of its kind instead of throwing', async () => {
        const ops = await options.make();
        const device = await options.foreignDevice!();
        expect(device.kind).toBe(ops.kind);
        const verdict: MatchResult = await withShared(ops, async (shared) =>
          ops.match ? ops.match(handleFor(device, shared), ctx()) : true,
        );
        expect(verdict === false || (typeof verdict === 'object' && verdict.match === false)).toBe(true);
      }, testTimeout);
    }
  });
}
