/**
 * The two COLO failover sequences (shared/design/colo.md, QEMU's
 * docs/COLO-FT.txt), one per side, for what @remus/colo's subkinds set up.
 * They run on the survivor only; fencing the other side first is the
 * caller's job (see the driver). Each step is skipped when QEMU no longer
 * has what it removes (one state query decides), so a sequence can be run
 * again after a failure half-way.
 */
import { RemusError, pollUntil, type DeviceSpec } from '@remus/core';
import { isQmpRefusal, type QmpClient } from '@remus/qmp';
import { coloIds } from './ids.js';
import { childEdge, type BlockGraph } from './qemu.js';

export interface ColoFailoverOptions {
  /** The operation id the side's devices were set up with (it names their QEMU ids, see {@link coloIds}). */
  readonly operation: string;
  /** The side's devices (as given to its ops list): `nic` and `disk` specs. */
  readonly devices: readonly DeviceSpec[];
  readonly signal?: AbortSignal;
  /** Called after each step (QMP command) with its name and duration, also when it failed. */
  readonly onStep?: (step: string, ms: number) => void;
}

/** What a failover sequence did. */
export interface ColoFailoverResult {
  /** QEMU ids removed, in order. */
  readonly removed: readonly string[];
  /** Ids the sequence left in place on purpose (see each sequence). */
  readonly kept: readonly string[];
  /** Whether `x-colo-lost-heartbeat` was sent (not when QEMU was no longer in COLO mode). */
  readonly lostHeartbeat: boolean;
  /** Primary only: whether the VM, left paused by COLO (run state `colo`), had to be resumed with `cont`. */
  readonly resumed?: boolean;
}

/** How long QEMU may take to leave COLO mode after `x-colo-lost-heartbeat`, ms. */
export const LEAVE_COLO_MS = 10_000;

/** How long a primary that left COLO may stay paused by it (run state `colo`) before the sequence resumes it, ms. */
export const RESUME_GRACE_MS = 1000;

class Steps {
  readonly removed: string[] = [];
  constructor(
    readonly client: QmpClient,
    readonly side: string,
    readonly opts: ColoFailoverOptions,
  ) {}

  async run<T>(step: string, command: string, args?: Record<string, unknown>): Promise<T> {
    const t0 = performance.now();
    try {
      return await this.client.execute<T>(command, args, this.opts.signal ? { signal: this.opts.signal } : {});
    } catch (e) {
      throw new RemusError('OP_FAILED', `colo failover on the ${this.side}: ${step} failed: ${e instanceof Error ? e.message : String(e)}`, { op: step, cause: e });
    } finally {
      this.opts.onStep?.(step, performance.now() - t0);
    }
  }

  /** object-del / chardev-remove of each id QEMU still has, in the given order. */
  async remove(command: 'object-del' | 'chardev-remove', ids: readonly string[], have: ReadonlySet<string>): Promise<void> {
    for (const id of ids.filter((x) => have.has(x))) {
      await this.run(`${command} ${id}`, command, { id });
      this.removed.push(id);
    }
  }

  async objects(): Promise<Set<string>> {
    return new Set((await this.run<{ name: string }[]>('qom-list /objects', 'qom-list', { path: '/objects' })).map((x) => x.name));
  }

  async chardevs(): Promise<Set<string>> {
    return new Set((await this.run<{ label: string }[]>('query-chardev', 'query-chardev')).map((x) => x.label));
  }

  /** `x-colo-lost-heartbeat`, unless QEMU already left COLO mode (it would refuse). */
  async lostHeartbeat(): Promise<boolean> {
    if ((await this.mode()) === 'none') return false;
    await this.run('x-colo-lost-heartbeat', 'x-colo-lost-heartbeat');
    return true;
  }

  async mode(): Promise<string> {
    return (await this.run<{ mode?: string }>('query-colo-status', 'query-colo-status')).mode ?? 'none';
  }

  /** The VM's run state (`query-status`). */
  async runState(): Promise<string> {
    return (await this.run<{ status?: string }>('query-status', 'query-status')).status ?? 'unknown';
  }

  /**
   * QEMU fails over in the background after `x-colo-lost-heartbeat`: waits
   * (polling every 10 ms, at most {@link LEAVE_COLO_MS}) until
   * `query-colo-status` reports mode `none`, i.e. the VM runs on its own.
   * Throws TIMEOUT, or ABORTED on the options' signal.
   */
  async leftColo(): Promise<void> {
    let mode = 'unknown';
    await pollUntil(async () => (mode = await this.mode()) === 'none', {
      what: `colo failover on the ${this.side}: QEMU to leave COLO mode after x-colo-lost-heartbeat`,
      timeoutMs: LEAVE_COLO_MS,
      intervalMs: 10,
      describe: () => `mode ${mode}`,
      ...(this.opts.signal ? { signal: this.opts.signal } : {}),
    });
  }

  /**
   * The primary, out of COLO mode, must run: QEMU's COLO thread resumes the
   * VM when it ends, but a thread stuck in a checkpoint that cannot finish
   * (the peer hung after the primary paused for it) never does, and then
   * every client waits forever. Waits up to {@link RESUME_GRACE_MS} for QEMU
   * to leave run state `colo`; a VM still in it gets `cont` and must run
   * within {@link LEAVE_COLO_MS}. Any other run state is left as it is.
   * Returns whether `cont` was sent.
   */
  async resumed(): Promise<boolean> {
    const t0 = performance.now();
    let state = 'unknown';
    const signal = this.opts.signal ? { signal: this.opts.signal } : {};
    await pollUntil(async () => (state = await this.runState()) !== 'colo' || performance.now() - t0 >= RESUME_GRACE_MS, {
      what: `colo failover on the ${this.side}: QEMU to resume the VM it paused for a checkpoint`,
      timeoutMs: RESUME_GRACE_MS + LEAVE_COLO_MS,
      intervalMs: 10,
      ...signal,
    });
    if (state !== 'colo') return false;
    await this.run('cont', 'cont');
    await pollUntil(async () => (state = await this.runState()) === 'running', {
      what: `colo failover on the ${this.side}: the VM to run after cont`,
      timeoutMs: LEAVE_COLO_MS,
      intervalMs: 10,
      describe: () => `run state ${state}`,
      ...signal,
    });
    return true;
  }
}

function ofKind(devices: readonly DeviceSpec[], kind: string, marker: string): { id: string; params: Readonly<Record<string, unknown>> }[] {
  return devices.filter((d) => d.kind === kind && d.params?.[marker] !== undefined).map((d) => ({ id: d.id, params: d.params ?? {} }));
}

/**
 * Failover on the **primary** (the secondary died or hung): the primary goes
 * on alone. Removes the replication child from each disk's quorum
 * (`x-blockdev-change`) and deletes the node, deletes colo-compare, its
 * iothread, filter-mirror and both redirectors (which releases every packet
 * colo-compare still held: no client is left waiting for a reply), then
 * `x-colo-lost-heartbeat`, waits until QEMU left COLO mode, and makes sure
 * the VM runs (a VM left paused by a checkpoint that cannot finish is
 * resumed with `cont`, see `resumed`). Kept: the proxy's chardevs (they carry nothing
 * once the filters are gone; the side's device-layer teardown removes them).
 * Throws OP_FAILED naming the step.
 */
export async function coloFailoverOnPrimary(client: QmpClient, opts: ColoFailoverOptions): Promise<ColoFailoverResult> {
  const s = new Steps(client, 'primary', opts);
  const disks = ofKind(opts.devices, 'disk', 'quorum');
  const nics = ofKind(opts.devices, 'nic', 'compare');
  const [graph, objects, chardevs] = await Promise.all([
    disks.length > 0 ? s.run<BlockGraph>('x-debug-query-block-graph', 'x-debug-query-block-graph') : undefined,
    s.objects(),
    s.chardevs(),
  ]);
  for (const d of disks) {
    const quorum = String(d.params['quorum']);
    const node = coloIds(opts.operation, d.id).primaryDisk.node;
    const edge = graph && childEdge(graph, quorum, node);
    if (edge) await s.run(`x-blockdev-change ${quorum} remove ${edge}`, 'x-blockdev-change', { parent: quorum, child: edge });
    if (graph?.nodes.some((n) => n.name === node && n.type === 'block-driver')) {
      await s.run(`blockdev-del ${node}`, 'blockdev-del', { 'node-name': node });
      s.removed.push(node);
    }
  }
  for (const d of nics) {
    const id = coloIds(opts.operation, d.id).primaryNic;
    // colo-compare before the iothread it runs in.
    await s.remove('object-del', [id.compareObj, id.iothread, id.filterMirror, id.redirectIn, id.redirectOut], objects);
  }
  const lostHeartbeat = await s.lostHeartbeat();
  if (lostHeartbeat) await s.leftColo();
  const resumed = await s.resumed();
  const kept = nics.flatMap((d) => {
    const id = coloIds(opts.operation, d.id).primaryNic;
    return [id.mirror, id.compare, id.pri, id.priIn, id.out, id.outIn].filter((x) => chardevs.has(x));
  });
  return { removed: s.removed, kept, lostHeartbeat, resumed };
}

/**
 * Failover on the **secondary** (the primary died or hung): the secondary
 * takes over. `nbd-server-stop` (no more writes from the primary), then
 * `x-colo-lost-heartbeat` (QEMU promotes the secondary VM), then deletes
 * both filter-redirectors and their two chardevs, and waits until QEMU left
 * COLO mode. Kept, on purpose: the
 * filter-rewriter. TCP connections opened while COLO ran keep needing its
 * sequence-number translation for as long as they live, so it stays for the
 * VM's lifetime; a driver must therefore not tear a promoted secondary's
 * device layer down (that would delete it). Throws OP_FAILED naming the
 * step, and STATE, before changing anything, for a secondary that never
 * entered COLO (still loading the first migration).
 */
export async function coloFailoverOnSecondary(client: QmpClient, opts: ColoFailoverOptions): Promise<ColoFailoverResult> {
  const s = new Steps(client, 'secondary', opts);
  const nics = ofKind(opts.devices, 'nic', 'mirror');
  if ((await s.mode()) === 'none') {
    // Not in COLO: either promoted already (a second run) or still loading the first migration (nothing consistent to promote).
    if ((await s.runState()) === 'inmigrate') {
      throw new RemusError('STATE', 'colo failover on the secondary: it never entered COLO mode (status inmigrate): it has no copy of the VM to promote');
    }
  }
  if (ofKind(opts.devices, 'disk', 'node').length > 0) {
    try {
      await s.run('nbd-server-stop', 'nbd-server-stop');
    } catch (e) {
      if (!(e instanceof RemusError && isQmpRefusal(e.cause) && /not running/i.test(e.cause.desc))) throw e;
    }
  }
  const lostHeartbeat = await s.lostHeartbeat();
  const [objects, chardevs] = await Promise.all([
    s.objects(),
    s.chardevs(),
  ]);
  const kept: string[] = [];
  for (const d of nics) {
    const id = coloIds(opts.operation, d.id).secondaryNic;
    await s.remove('object-del', [id.f2, id.f1], objects);
    await s.remove('chardev-remove', [id.red1, id.red0], chardevs);
    if (objects.has(id.rew)) kept.push(id.rew);
  }
  if (lostHeartbeat) await s.leftColo();
  return { removed: s.removed, kept, lostHeartbeat };
}
