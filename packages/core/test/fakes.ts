// A fake subkind for fault injection: records every call, keeps "resources"
// per device so leftovers are visible, and fails chosen ops on chosen devices.
import type { DeviceHandle, DeviceSpec, MatchResult, OpContext, OpName, SubkindOps } from '../src/index.js';

export type How = 'throw' | 'reject' | 'hang' | 'late-reject';

export interface Fault {
  readonly op: OpName;
  readonly how: How;
  /** Device ids to fail on; for init/cleanup ignored. Undefined: every device. */
  readonly devices?: readonly string[];
}

export interface FakeWorld {
  /** Every call, as `subkind:op:device` (device '-' for init/cleanup). */
  readonly calls: string[];
  /** Live resources: `subkind:device` while set up; `subkind:init` while initialised. */
  readonly resources: Set<string>;
}

export function newWorld(): FakeWorld {
  return { calls: [], resources: new Set() };
}

export interface FakeOptions {
  readonly name: string;
  readonly kind?: string;
  readonly faults?: readonly Fault[];
  /** Device ids this subkind declines (match returns noMatch). */
  readonly decline?: readonly string[];
  /** Omit these optional ops. */
  readonly omit?: readonly OpName[];
  /** Delay (ms) for async ops. Default 0 (a resolved promise). */
  readonly delayMs?: number;
  readonly timeouts?: SubkindOps['timeouts'];
}

export function fakeSubkind(world: FakeWorld, o: FakeOptions): SubkindOps<{ id: string }, { made: boolean }> {
  const faultFor = (op: OpName, device: string | undefined): Fault | undefined =>
    o.faults?.find((f) => f.op === op && (device === undefined || f.devices === undefined || f.devices.includes(device)));
  const act = <T>(op: OpName, device: string | undefined, ctx: OpContext, body: () => T): T | Promise<T> => {
    world.calls.push(`${o.name}:${op}:${device ?? '-'}`);
    const f = faultFor(op, device);
    const err = (): Error => new Error(`injected ${f?.how} in ${op} of ${device ?? o.name}`);
    if (f?.how === 'throw') throw err();
    if (f?.how === 'reject') return Promise.reject(err());
    if (f?.how === 'hang') return new Promise<T>(() => undefined);
    if (f?.how === 'late-reject') {
      return new Promise<T>((_, reject) => setTimeout(() => reject(err()), 300));
    }
    if (o.delayMs) return new Promise<T>((resolve) => setTimeout(() => resolve(body()), o.delayMs));
    void ctx;
    return Promise.resolve().then(body);
  };
  const ops: SubkindOps<{ id: string }, { made: boolean }> = {
    name: o.name,
    kind: o.kind ?? 'nic',
    ...(o.timeouts ? { timeouts: o.timeouts } : {}),
    init: (ctx) =>
      act('init', undefined, ctx, () => {
        world.resources.add(`${o.name}:init`);
        return { id: o.name };
      }),
    cleanup: (_s, ctx) => act('cleanup', undefined, ctx, () => void world.resources.delete(`${o.name}:init`)),
    match: (h: DeviceHandle, ctx): MatchResult | Promise<MatchResult> =>
      act('match', h.device.id, ctx, () =>
        o.decline?.includes(h.device.id) ? { match: false as const, reason: `${o.name} declines ${h.device.id}` } : true,
      ),
    setup: (h, ctx) => {
      // Half-made state first, as a real subkind records before it can fail.
      h.data = { made: true };
      world.resources.add(`${o.name}:${h.device.id}`);
      return act('setup', h.device.id, ctx, () => undefined);
    },
    teardown: (h, ctx) =>
      act('teardown', h.device.id, ctx, () => {
        world.resources.delete(`${o.name}:${h.device.id}`);
        h.data = undefined;
      }),
    postsuspend: (h, ctx) => act('postsuspend', h.device.id, ctx, () => undefined),
    preresume: (h, ctx) => act('preresume', h.device.id, ctx, () => undefined),
    commit: (h, ctx) => act('commit', h.device.id, ctx, () => undefined),
  };
  for (const m of o.omit ?? []) delete (ops as unknown as Record<string, unknown>)[m];
  return ops;
}

export function nics(n: number, kind = 'nic'): DeviceSpec[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${kind}${i}`, kind }));
}
