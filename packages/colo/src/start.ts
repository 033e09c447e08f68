/**
 * How a COLO pair starts, as data: {@link START_PLAN} lists the steps in
 * COLO's order, each on one side; the driver runs them one after the other
 * (timing each as a `step` event) and then waits until both sides are in
 * COLO mode ({@link waitColo}). The secondary comes first: its proxy
 * chardevs reconnect until the primary listens, and its NBD export must
 * exist before the primary's replication child connects.
 */
import { RemusError, pollUntil, type CheckpointDevices, type DeviceSpec } from '@remus/core';
import type { QmpClient } from '@remus/qmp';
import { coloIds } from './ids.js';
import type { ColoRole } from './params.js';

/** What the steps act on. */
export interface StartContext {
  readonly operation: string;
  readonly migrationUri: string;
  readonly checkpointDelayMs: number;
  readonly sides: Readonly<Record<ColoRole, { readonly cmd: QmpClient; readonly layer: CheckpointDevices; readonly devices: readonly DeviceSpec[] }>>;
  readonly signal: AbortSignal | undefined;
}

/** One step of the start: on `side`, named `step` in events and errors. */
export interface StartStep {
  readonly side: ColoRole;
  readonly step: string;
  run(client: QmpClient, ctx: StartContext): Promise<unknown>;
}

/** A step that is one QMP command with arguments from the context. */
function command(side: ColoRole, name: string, args: (ctx: StartContext) => Record<string, unknown>): StartStep {
  return { side, step: name, run: (c, ctx) => c.execute(name, args(ctx), ctx.signal ? { signal: ctx.signal } : {}) };
}

/** The start of a pair, in order. */
export const START_PLAN: readonly StartStep[] = [
  { side: 'secondary', step: 'set up devices (@remus/colo)', run: (_, ctx) => ctx.sides.secondary.layer.setup() },
  { side: 'primary', step: 'set up devices (@remus/colo)', run: (_, ctx) => ctx.sides.primary.layer.setup() },
  { side: 'secondary', step: 'proxy connected', run: (c, ctx) => waitProxyConnected(c, ctx) },
  command('secondary', 'migrate-set-capabilities', () => ({ capabilities: [{ capability: 'x-colo', state: true }] })),
  command('primary', 'migrate-set-capabilities', () => ({
    capabilities: [
      { capability: 'x-colo', state: true },
      { capability: 'events', state: true },
    ],
  })),
  command('primary', 'migrate-set-parameters', (ctx) => ({ 'x-checkpoint-delay': ctx.checkpointDelayMs })),
  command('primary', 'migrate', (ctx) => ({ uri: ctx.migrationUri })),
];

/** Waits (polling every 50 ms, at most 10 s) until the secondary's proxy chardevs are connected to the primary's servers. */
async function waitProxyConnected(secondary: QmpClient, ctx: StartContext): Promise<void> {
  const mine = new Set(
    ctx.sides.secondary.devices
      .filter((d) => d.kind === 'nic')
      .flatMap((d) => {
        const id = coloIds(ctx.operation, d.id).secondaryNic;
        return [id.red0, id.red1];
      }),
  );
  let seen = 'nothing yet';
  await pollUntil(
    async (signal) => {
      const chardevs = await secondary.execute<{ label: string; filename: string }[]>('query-chardev', undefined, { signal });
      const ours = chardevs.filter((c) => mine.has(c.label));
      seen = ours.map((c) => `${c.label} ${c.filename}`).join(', ') || 'no proxy chardev';
      return ours.length === mine.size && ours.every((c) => !c.filename.startsWith('disconnected:'));
    },
    { what: "colo: the secondary's proxy to connect to the primary", timeoutMs: 10_000, intervalMs: 50, describe: () => seen, ...(ctx.signal ? { signal: ctx.signal } : {}) },
  );
}

/**
 * Waits until both sides are in COLO mode: the primary's MIGRATION event
 * (`inColo()`, or query-migrate, polled meanwhile) says `colo`, then the
 * secondary's query-colo-status says `secondary` (it enters COLO a little
 * later, once it loaded the first state), or until `starting()` turns false.
 * OP_FAILED when the migration failed; TIMEOUT after `timeoutMs`.
 */
export async function waitColo(
  ctx: StartContext,
  o: { readonly timeoutMs: number; readonly inColo: () => boolean; readonly setInColo: () => void; readonly starting: () => boolean },
): Promise<void> {
  const q = { timeoutMs: 5000 };
  let seen = 'no answer yet';
  await pollUntil(
    async () => {
      if (!o.starting()) return true;
      if (!o.inColo()) {
        const st = await ctx.sides.primary.cmd.execute<{ status?: string }>('query-migrate', undefined, q).catch(() => undefined);
        if (st?.status === 'failed') throw new RemusError('OP_FAILED', 'colo: the migration to the secondary failed');
        seen = `migration ${st?.status ?? 'unknown'}`;
        if (st?.status !== 'colo') return false;
        o.setInColo();
      }
      const sec = await ctx.sides.secondary.cmd.execute<{ mode?: string }>('query-colo-status', undefined, q).catch(() => undefined);
      seen = `primary in COLO, secondary mode ${sec?.mode ?? 'unknown'}`;
      return sec?.mode === 'secondary';
    },
    { what: 'colo: both sides to enter COLO', timeoutMs: o.timeoutMs, intervalMs: 50, describe: () => seen, ...(ctx.signal ? { signal: ctx.signal } : {}) },
  );
}
