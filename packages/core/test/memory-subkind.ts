// An in-memory subkind that keeps its "kernel objects" in a shared table, so
// the conformance kit's leftovers probe can see them. `flaws` breaks it on purpose
// (each flaw is one contract break the kit must catch, see conformance-detects.test.ts);
// `slowPostsuspendMs` makes a correct but slow subkind that declares its postsuspend limit.
import { execFile } from 'node:child_process';
import { RemusError, type SubkindOps } from '../src/index.js';

export const objects = new Map<string, string>(); // object name -> operation

export type Flaw =
  | 'teardown-not-idempotent'
  | 'teardown-needs-setup'
  | 'leaks-on-cleanup'
  | 'no-reap'
  | 'setup-ignores-signal'
  | 'match-side-effects'
  | 'commit-spawns'
  | 'postsuspend-swallows'
  | 'match-throws-foreign';

export interface MemoryOptions {
  /** postsuspend takes this long (ms) and the subkind declares `timeouts.postsuspend` = 5x it. */
  readonly slowPostsuspendMs?: number;
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function memorySubkind(flaws: readonly Flaw[] = [], o: MemoryOptions = {}): SubkindOps<{ socket: string }, { obj?: string }> {
  const has = (f: Flaw): boolean => flaws.includes(f);
  return {
    name: 'mem-nic',
    kind: 'nic',
    ...(o.slowPostsuspendMs ? { timeouts: { postsuspend: 5 * o.slowPostsuspendMs } } : {}),
    init: (ctx) => {
      objects.set(`socket-${ctx.operation}`, ctx.operation);
      return { socket: `socket-${ctx.operation}` };
    },
    cleanup: (shared) => {
      if (!has('leaks-on-cleanup')) objects.delete(shared.socket);
    },
    match: (h, ctx) => {
      if (has('match-side-effects')) objects.set(`probe-${h.device.id}`, ctx.operation);
      if (has('match-throws-foreign') && h.device.params?.['mem'] === undefined) throw new Error(`no such mem device ${h.device.id}`);
      return h.device.params?.['foreign'] ? { match: false, reason: 'not a mem device' } : true;
    },
    setup: async (h, ctx) => {
      const obj = `buf-${h.device.id}`;
      h.data = { obj };
      if (has('setup-ignores-signal')) {
        await delay(1_500);
      } else {
        await delay(1);
        if (ctx.signal.aborted) throw ctx.signal.reason;
      }
      objects.set(obj, ctx.operation);
    },
    teardown: (h) => {
      if (has('teardown-needs-setup') && !h.data) throw new Error('nothing to tear down');
      if (has('teardown-not-idempotent') && h.data && !objects.has(h.data.obj!)) throw new Error('already gone');
      if (h.data?.obj) objects.delete(h.data.obj);
    },
    postsuspend: async (h) => {
      if (o.slowPostsuspendMs) await delay(o.slowPostsuspendMs);
      try {
        if (!objects.has(h.data?.obj ?? '')) throw new RemusError('DEVICE_NOT_READY', `${h.device.id}: its buffer is gone`);
      } catch (e) {
        if (!has('postsuspend-swallows')) throw e;
      }
    },
    commit: async () => {
      if (has('commit-spawns')) await new Promise((resolve) => execFile('true', [], resolve));
    },
    ...(has('no-reap')
      ? {}
      : {
          reap: (operation: string) => {
            const gone: string[] = [];
            for (const [k, op] of objects) {
              if (op === operation) {
                objects.delete(k);
                gone.push(k);
              }
            }
            return gone;
          },
        }),
  };
}
