/**
 * Recovery after a crash: each subkind's `reap` run through the one engine
 * (time limit, events, error wrapping), for `remus cleanup` and integrators'
 * own recovery tools.
 */
import { RemusError } from './errors.js';
import { runPhase, type OpListener } from './engine.js';
import type { DeviceSpec, OpsList, SubkindOps } from './ops.js';
import { DEFAULT_TIMEOUTS } from './devices.js';
import { validateDuration, validateOperationId, validateOpsList } from './validate.js';

export interface ReapEntry {
  /** The device as the crashed run had it. */
  readonly device: DeviceSpec;
  /** The subkind that took it in that run. */
  readonly subkind: string;
}

export interface ReapOptions {
  /** Time limit for each subkind's reap, in ms; default: the subkind's `timeouts.reap`, else {@link DEFAULT_TIMEOUTS}.reap. */
  readonly timeoutMs?: number;
  /** Aborts pending reaps (they settle as ABORTED). */
  readonly signal?: AbortSignal;
  /** Receives each reap's start and end (op `reap`, device undefined). */
  readonly onEvent?: OpListener;
}

/** What {@link reapDevices} did, per subkind that has a `reap`. */
export interface ReapResult {
  /** Lines naming each object removed, per subkind, in ops-list order. */
  readonly removed: readonly { readonly subkind: string; readonly lines: readonly string[] }[];
  /** Every failure (subkind named, op `reap`); empty when all reaps succeeded. */
  readonly errors: readonly RemusError[];
  /** Subkinds named by entries that are not in `ops` (their objects were not looked for). */
  readonly unknownSubkinds: readonly string[];
}

/**
 * Runs `reap(operation, devices)` of every subkind in `ops` that the entries
 * name, concurrently, through the engine; never rejects. A subkind without
 * `reap` is skipped. Throws INVALID_ARGUMENT only for a bad operation id,
 * time limit or ops list.
 */
export async function reapDevices(ops: OpsList, operation: string, entries: readonly ReapEntry[], options: ReapOptions = {}): Promise<ReapResult> {
  validateOpsList(ops);
  validateOperationId(operation);
  if (options.timeoutMs !== undefined) validateDuration(options.timeoutMs, 'reap time limit', { min: 1 });
  const bySubkind = new Map<string, DeviceSpec[]>();
  for (const e of entries) {
    const list = bySubkind.get(e.subkind) ?? [];
    list.push(e.device);
    bySubkind.set(e.subkind, list);
  }
  const targets: { ops: SubkindOps; devices: DeviceSpec[] }[] = [];
  for (const o of ops) {
    const devices = bySubkind.get(o.name);
    if (devices && o.reap) targets.push({ ops: o, devices });
  }
  const known = new Set(ops.map((o) => o.name));
  const result = await runPhase({
    op: 'reap',
    targets,
    call: (t, ctx) => t.ops.reap!(operation, t.devices, ctx),
    origin: (t) => ({ device: undefined, subkind: t.ops.name }),
    timeoutOf: (t) => options.timeoutMs ?? t.ops.timeouts?.reap ?? DEFAULT_TIMEOUTS.reap,
    checkpoint: 0,
    operation,
    signal: options.signal,
    onEvent: options.onEvent,
  });
  const removed: { subkind: string; lines: string[] }[] = [];
  const errors: RemusError[] = [];
  targets.forEach((t, i) => {
    const error = result.errors[i];
    if (error) {
      errors.push(error);
      return;
    }
    const v = result.values[i];
    if (!Array.isArray(v) || v.some((l) => typeof l !== 'string')) {
      errors.push(
        new RemusError('OP_FAILED', `subkind ${t.ops.name}: reap must return an array of strings (one line per object removed)`, {
          subkind: t.ops.name,
          op: 'reap',
        }),
      );
      return;
    }
    removed.push({ subkind: t.ops.name, lines: v as string[] });
  });
  return { removed, errors, unknownSubkinds: [...bySubkind.keys()].filter((s) => !known.has(s)) };
}
