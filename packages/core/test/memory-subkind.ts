// An in-memory subkind that keeps its "kernel objects" in a shared table, so
// the conformance kit's leftovers probe can see them. `flaws` breaks it on purpose.
import type { SubkindOps } from '../src/index.js';

export const objects = new Map<string, string>(); // object name -> operation

export type Flaw = 'teardown-not-idempotent' | 'teardown-needs-setup' | 'leaks-on-cleanup' | 'no-reap';

export function memorySubkind(flaws: readonly Flaw[] = []): SubkindOps<{ socket: string }, { obj?: string }> {
  return {
    name: 'mem-nic',
    kind: 'nic',
    init: (ctx) => {
      objects.set(`socket-${ctx.operation}`, ctx.operation);
      return { socket: `socket-${ctx.operation}` };
    },
    cleanup: (shared) => {
      if (!flaws.includes('leaks-on-cleanup')) objects.delete(shared.socket);
    },
    match: (h) => (h.device.params?.['foreign'] ? { match: false, reason: 'not a mem device' } : true),
    setup: async (h, ctx) => {
      const obj = `buf-${h.device.id}`;
      h.data = { obj };
      await new Promise((r) => setTimeout(r, 1));
      if (ctx.signal.aborted) throw ctx.signal.reason;
      objects.set(obj, ctx.operation);
    },
    teardown: (h) => {
      if (flaws.includes('teardown-needs-setup') && !h.data) throw new Error('nothing to tear down');
      if (flaws.includes('teardown-not-idempotent') && h.data && !objects.has(h.data.obj!)) throw new Error('already gone');
      if (h.data?.obj) objects.delete(h.data.obj);
    },
    postsuspend: () => undefined,
    commit: () => undefined,
    ...(flaws.includes('no-reap')
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
