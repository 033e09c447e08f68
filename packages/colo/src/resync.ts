/**
 * The resync of a reprotect, as start-plan steps (QEMU docs/COLO-FT.txt,
 * "Primary/Secondary resume replication"): the running primary's disks are
 * mirrored into the new secondary's NBD exports (`blockdev-add` of an NBD
 * client, `blockdev-mirror` sync full) while the guest keeps running; once
 * every mirror is ready the VM is stopped, the mirrors cancelled (a ready
 * mirror cancelled completes without pivot: the target holds the same data)
 * and the NBD clients deleted, so the primary's replication child is the
 * only NBD client of each export. The start plan then sets the primary up
 * and migrates; COLO's first checkpoint resumes the VM.
 *
 * {@link undoResync} puts the primary back as it was when a later step
 * failed: mirrors cancelled, NBD clients deleted, a migration in flight
 * cancelled, and the VM running again (unprotected, but serving).
 */
import { RemusError, pollUntil } from '@remus/core';
import type { QmpClient } from '@remus/qmp';
import { coloIds } from './ids.js';
import { readColoParams } from './params.js';
import type { StartContext, StartStep } from './start.js';

/**
 * What a resync made and measured. Invariant: `jobs` and `nodes` list what
 * was asked for before it was asked (so undo covers a lost answer);
 * `stoppedAt` is set before `stop` is sent.
 */
export interface ResyncState {
  /** Bound for all mirrors to be ready, ms. */
  readonly timeoutMs: number;
  /** Mirror job ids asked for. */
  readonly jobs: string[];
  /** NBD client node names asked for. */
  readonly nodes: string[];
  /** Bytes the mirrors copied (their `len` when ready). */
  bytes: number;
  /** From the first mirror's start to all ready, ms. */
  mirrorMs?: number;
  /** When `stop` was sent (performance.now() ms); the VM is paused from here until COLO runs. */
  stoppedAt?: number;
}

/** A fresh resync state for a start context: the mirrors must be ready within `timeoutMs`. */
export function newResync(timeoutMs: number): ResyncState {
  return { timeoutMs, jobs: [], nodes: [], bytes: 0 };
}

interface Disk {
  readonly node: string;
  readonly job: string;
  readonly quorum: string;
  readonly server: Record<string, unknown>;
  readonly export: string;
}

/** The primary's disks with their resync ids and targets. */
function disks(ctx: StartContext): Disk[] {
  const primary = ctx.sides.primary;
  if (!primary) throw new RemusError('STATE', 'colo: a resync step ran without the primary in its context');
  const operation = ctx.operation;
  return primary.devices
    .filter((d) => d.kind === 'disk')
    .map((d) => {
      const p = readColoParams('primary', 'disk', d.params ?? {}, d.id);
      const id = coloIds(operation, d.id).primaryDisk;
      const server = 'path' in p.nbd ? { type: 'unix', path: p.nbd.path } : { type: 'inet', host: p.nbd.host, port: String(p.nbd.port) };
      return { node: id.resyncNode, job: id.resyncJob, quorum: p.quorum, server, export: p.export };
    });
}

function state(ctx: StartContext): ResyncState {
  if (!ctx.resync) throw new RemusError('STATE', 'colo: a resync step ran without a resync');
  return ctx.resync;
}

interface BlockJob {
  device: string;
  len: number;
  offset: number;
  ready?: boolean;
  status?: string;
}

const sig = (ctx: StartContext) => (ctx.signal ? { signal: ctx.signal } : {});

/** Polls query-block-jobs until `done(jobs)` (every 50 ms, bounded). */
async function pollJobs(c: QmpClient, ctx: StartContext, what: string, timeoutMs: number, done: (jobs: BlockJob[]) => boolean): Promise<void> {
  let seen = 'no answer yet';
  await pollUntil(
    async (signal) => {
      const jobs = await c.execute<BlockJob[]>('query-block-jobs', undefined, { signal });
      seen = jobs.map((j) => `${j.device} ${j.status ?? ''} ${j.offset}/${j.len}`).join(', ') || 'no job';
      return done(jobs);
    },
    { what, timeoutMs, intervalMs: 50, describe: () => seen, ...sig(ctx) },
  );
}

/** The resync steps, all on the primary, after the secondary's set-up (its exports must exist). */
export const RESYNC_STEPS: readonly StartStep[] = [
  {
    side: 'primary',
    step: 'blockdev-add (NBD client to the new secondary)',
    async run(c, ctx) {
      const r = state(ctx);
      for (const d of disks(ctx)) {
        r.nodes.push(d.node);
        await c.execute('blockdev-add', { driver: 'nbd', 'node-name': d.node, server: d.server, export: d.export }, sig(ctx));
      }
    },
  },
  {
    side: 'primary',
    step: 'blockdev-mirror (sync full)',
    async run(c, ctx) {
      const r = state(ctx);
      r.mirrorMs = performance.now();
      for (const d of disks(ctx)) {
        r.jobs.push(d.job);
        await c.execute('blockdev-mirror', { 'job-id': d.job, device: d.quorum, target: d.node, sync: 'full' }, sig(ctx));
      }
    },
  },
  {
    side: 'primary',
    step: 'mirror ready',
    async run(c, ctx) {
      const r = state(ctx);
      await pollJobs(c, ctx, 'colo: the disk mirrors to the new secondary to be ready', r.timeoutMs, (jobs) => {
        for (const id of r.jobs) {
          const j = jobs.find((x) => x.device === id);
          if (!j) throw new RemusError('OP_FAILED', `colo: mirror job ${id} ended before it was ready (the new secondary's NBD export went away?)`);
        }
        const ours = jobs.filter((j) => r.jobs.includes(j.device));
        if (!ours.every((j) => j.ready === true)) return false;
        r.bytes = ours.reduce((n, j) => n + j.len, 0);
        return true;
      });
      r.mirrorMs = performance.now() - (r.mirrorMs ?? performance.now());
    },
  },
  {
    side: 'primary',
    step: 'stop',
    run(c, ctx) {
      state(ctx).stoppedAt = performance.now();
      return c.execute('stop', undefined, sig(ctx));
    },
  },
  {
    side: 'primary',
    step: 'block-job-cancel (complete without pivot)',
    async run(c, ctx) {
      const r = state(ctx);
      for (const id of r.jobs) await c.execute('block-job-cancel', { device: id }, sig(ctx));
      await pollJobs(c, ctx, 'colo: the cancelled mirrors to end', 30_000, (jobs) => !jobs.some((j) => r.jobs.includes(j.device)));
    },
  },
  {
    side: 'primary',
    step: 'blockdev-del (NBD client)',
    async run(c, ctx) {
      for (const n of state(ctx).nodes) await c.execute('blockdev-del', { 'node-name': n }, sig(ctx));
    },
  },
];

/**
 * After a failed start with a resync: cancels what is left of the mirrors,
 * deletes the NBD clients, cancels a migration in flight, and lets the VM
 * run again if the resync stopped it. Best effort: every step runs, each
 * bounded by the client's command timeout; resolves with what it could not
 * do (empty when the primary is back as it was).
 */
export async function undoResync(c: QmpClient, r: ResyncState): Promise<string[]> {
  const problems: string[] = [];
  const attempt = async (what: string, f: () => Promise<unknown>): Promise<void> => {
    try {
      await f();
    } catch (e) {
      problems.push(`${what}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  const jobs = await c.execute<BlockJob[]>('query-block-jobs').catch(() => [] as BlockJob[]);
  for (const j of jobs.filter((x) => r.jobs.includes(x.device))) {
    await attempt(`block-job-cancel ${j.device}`, () => c.execute('block-job-cancel', { device: j.device, force: true }));
  }
  if (jobs.some((x) => r.jobs.includes(x.device))) {
    await attempt('mirrors to end', () =>
      pollUntil(async () => !(await c.execute<BlockJob[]>('query-block-jobs')).some((j) => r.jobs.includes(j.device)), {
        what: 'colo: the cancelled mirrors to end',
        timeoutMs: 10_000,
        intervalMs: 50,
      }),
    );
  }
  const nodes = await c.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true }).catch(() => [] as { 'node-name': string }[]);
  for (const n of r.nodes.filter((x) => nodes.some((y) => y['node-name'] === x))) {
    await attempt(`blockdev-del ${n}`, () => c.execute('blockdev-del', { 'node-name': n }));
  }
  if (r.stoppedAt !== undefined) {
    const mig = await c.execute<{ status?: string }>('query-migrate').catch(() => ({ status: undefined }));
    if (mig.status !== undefined && ['setup', 'active', 'device', 'pre-switchover', 'wait-unplug'].includes(mig.status)) {
      await attempt('migrate_cancel', () => c.execute('migrate_cancel'));
      await attempt('migration to end', () =>
        pollUntil(async () => !['setup', 'active', 'device', 'pre-switchover', 'wait-unplug', 'cancelling'].includes((await c.execute<{ status?: string }>('query-migrate')).status ?? ''), {
          what: 'colo: the cancelled migration to end',
          timeoutMs: 10_000,
          intervalMs: 50,
        }),
      );
    }
    const st = await c.execute<{ running: boolean }>('query-status').catch(() => undefined);
    if (st?.running !== true) await attempt('cont', () => c.execute('cont'));
  }
  return problems;
}
