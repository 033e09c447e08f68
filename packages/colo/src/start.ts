/**
 * How a COLO pair starts, as data: {@link START_PLAN} lists the steps in
 * COLO's order, each on one side; the driver runs them one after the other
 * (timing each as a `step` event) and then waits until both sides are in
 * COLO mode ({@link waitColo}). The secondary comes first: its proxy
 * chardevs reconnect until the primary listens, and its NBD export must
 * exist before the primary's replication child connects.
 */
import { RemusError, isRemusError, pollUntil, type CheckpointDevices, type DeviceSpec } from '@remus/core';
import type { QmpClient } from '@remus/qmp';
import { coloIds } from './ids.js';
import type { ColoRole } from './params.js';
import { RESYNC_STEPS, type ResyncState } from './resync.js';

/** One side as the steps see it. */
export interface StartSide {
  readonly cmd: QmpClient;
  readonly layer: CheckpointDevices;
  readonly devices: readonly DeviceSpec[];
}

/**
 * What the steps act on. Invariant of {@link START_PLAN}: a step of side X
 * reads only `sides[X]`, so a driver of one side (side.ts) gives only its own.
 */
export interface StartContext {
  readonly operation: string;
  readonly migrationUri: string;
  readonly checkpointDelayMs: number;
  readonly sides: Readonly<Partial<Record<ColoRole, StartSide>>>;
  readonly signal: AbortSignal | undefined;
  /** Present when the primary is a running survivor whose disks are first mirrored to the secondary (reprotect; resync.ts). */
  readonly resync?: ResyncState;
}

/** One step of the start: on `side`, named `step` in events and errors. */
export interface StartStep {
  readonly side: ColoRole;
  readonly step: string;
  /** The step waits for the other side to have done its own steps (run last when one side starts alone). */
  readonly waitsForPeer?: true;
  run(client: QmpClient, ctx: StartContext): Promise<unknown>;
}

/** A step that is one QMP command with arguments from the context. */
function command(side: ColoRole, name: string, args: (ctx: StartContext) => Record<string, unknown>): StartStep {
  return { side, step: name, run: (c, ctx) => c.execute(name, args(ctx), ctx.signal ? { signal: ctx.signal } : {}) };
}

/** The start of a pair, in order. */
export const START_PLAN: readonly StartStep[] = [
  { side: 'secondary', step: 'set up devices (@remus/colo)', run: (_, ctx) => own(ctx, 'secondary').layer.setup() },
  { side: 'primary', step: 'set up devices (@remus/colo)', run: (_, ctx) => own(ctx, 'primary').layer.setup() },
  { side: 'secondary', step: 'proxy connected', waitsForPeer: true, run: (c, ctx) => waitProxyConnected(c, ctx) },
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

/**
 * The steps of one side started by its own driver: the plan's order, steps
 * that wait for the peer last. With `resync` (reprotect), the primary's
 * starts with the resync steps (resync.ts; `ctx.resync` from
 * {@link newResync}; the secondary's exports must exist first); undo a
 * failed one with `undoResync`.
 */
export function sideStartPlan(side: ColoRole, options: { readonly resync?: boolean } = {}): StartStep[] {
  const mine = startPlan(options.resync === true).filter((s) => s.side === side);
  return [...mine.filter((s) => !s.waitsForPeer), ...mine.filter((s) => s.waitsForPeer)];
}

function own(ctx: StartContext, side: ColoRole): StartSide {
  const s = ctx.sides[side];
  if (!s) throw new RemusError('STATE', `colo: a start step of the ${side} ran without the ${side} in its context`);
  return s;
}

/**
 * A failed step with its context added: the layer's PHASE_FAILED keeps its
 * code and failures (and op); anything else becomes OP_FAILED. The step is
 * in `details.step`, the original error in `cause`.
 */
export function stepError(role: ColoRole, step: string, e: unknown): RemusError {
  const message = `colo ${role}: ${step} failed: ${e instanceof Error ? e.message : String(e)}`;
  if (isRemusError(e, 'PHASE_FAILED')) {
    return new RemusError('PHASE_FAILED', message, { op: e.op, failures: e.failures, details: { ...e.details, side: role, step }, cause: e });
  }
  return new RemusError('OP_FAILED', message, { details: { side: role, step }, cause: e });
}

/**
 * Runs `steps` in order on their sides' command connections (the one loop
 * of a start, for the pair driver and the one-side driver): `onStep` after
 * each with its duration (also when it failed); the first failure is
 * thrown as {@link stepError}.
 */
export async function runStartSteps(steps: readonly StartStep[], ctx: StartContext, onStep: (s: StartStep, ms: number) => void): Promise<void> {
  for (const s of steps) {
    const t0 = performance.now();
    try {
      await s.run(own(ctx, s.side).cmd, ctx);
    } catch (e) {
      throw stepError(s.side, s.step, e);
    } finally {
      onStep(s, performance.now() - t0);
    }
  }
}

/**
 * The plan to run: {@link START_PLAN}, or with `resync` the same plan with
 * the resync steps (resync.ts) after the secondary's set-up: its NBD
 * exports must exist before the primary mirrors into them.
 */
export function startPlan(resync: boolean): readonly StartStep[] {
  return resync ? [START_PLAN[0]!, ...RESYNC_STEPS, ...START_PLAN.slice(1)] : START_PLAN;
}

/** Waits (polling every 50 ms, at most 10 s) until the secondary's proxy chardevs are connected to the primary's servers. */
async function waitProxyConnected(secondary: QmpClient, ctx: StartContext): Promise<void> {
  const mine = new Set(
    own(ctx, 'secondary')
      .devices.filter((d) => d.kind === 'nic')
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
        const st = await own(ctx, 'primary').cmd.execute<{ status?: string }>('query-migrate', undefined, q).catch(() => undefined);
        if (st?.status === 'failed') throw new RemusError('OP_FAILED', 'colo: the migration to the secondary failed');
        seen = `migration ${st?.status ?? 'unknown'}`;
        if (st?.status !== 'colo') return false;
        o.setInColo();
      }
      const sec = await own(ctx, 'secondary').cmd.execute<{ mode?: string }>('query-colo-status', undefined, q).catch(() => undefined);
      seen = `primary in COLO, secondary mode ${sec?.mode ?? 'unknown'}`;
      return sec?.mode === 'secondary';
    },
    { what: 'colo: both sides to enter COLO', timeoutMs: o.timeoutMs, intervalMs: 50, describe: () => seen, ...(ctx.signal ? { signal: ctx.signal } : {}) },
  );
}
