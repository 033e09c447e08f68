/**
 * What every COLO subkind shares: the QMP connection to its QEMU (one per
 * QEMU, from a pool, because a QMP monitor serves one client at a time),
 * what that QEMU offers (probed once per connection), the events it
 * reports, and the one way set-up changes are recorded and undone.
 */
import { RemusError, abortError, pollUntil, type DeviceSpec, type OpContext, type SocketAddress } from '@remus/core';
import { coloIds } from './ids.js';
import { QmpSchema, isQmpRefusal, sharedQmpPool, type QmpClient, type QmpEvent, type QmpLease, type QmpPool } from '@remus/qmp';

/** Options every COLO subkind factory takes. */
export interface ColoQemuOptions {
  /** The QEMU's QMP monitor: a unix socket path, `"host:port"`, or `{ path }` / `{ host, port }`. Required. */
  readonly qmp: string | SocketAddress;
  /** Where connections come from. Default: the process-wide {@link sharedQmpPool}, so a driver can lease the same connection. */
  readonly pool?: QmpPool;
  /** Time limit of each QMP command, ms. Default 10 000. */
  readonly commandTimeoutMs?: number;
}

/** One feature COLO needs, as a probe checks it. */
export type Requirement =
  | { readonly command: string }
  | { readonly event: string }
  | { readonly objectType: string }
  | { readonly blockDriver: string }
  | { readonly exportType: string }
  | { readonly migrationCapability: string };

/** Requirements from lists of names. */
export function needs(names: { commands?: readonly string[]; objectTypes?: readonly string[]; blockDrivers?: readonly string[]; exportTypes?: readonly string[] }): Requirement[] {
  return [
    ...(names.commands ?? []).map((command) => ({ command })),
    ...(names.objectTypes ?? []).map((objectType) => ({ objectType })),
    ...(names.blockDrivers ?? []).map((blockDriver) => ({ blockDriver })),
    ...(names.exportTypes ?? []).map((exportType) => ({ exportType })),
  ];
}

/** What every COLO side needs, whatever its devices: QEMU's COLO machinery itself. */
export const COLO_BASE_REQUIREMENTS: readonly Requirement[] = [
  { migrationCapability: 'x-colo' },
  { command: 'query-colo-status' },
  { command: 'x-colo-lost-heartbeat' },
  { event: 'COLO_EXIT' },
  { command: 'qom-list' },
  { command: 'qom-list-types' },
];

/** What a QEMU offers, as far as the probes look. */
export interface Capabilities {
  readonly schema: QmpSchema;
  readonly objectTypes: ReadonlySet<string>;
  readonly blockDrivers: ReadonlySet<string>;
  readonly exportTypes: ReadonlySet<string>;
  readonly migrationCapabilities: ReadonlySet<string>;
}

const probes = new WeakMap<QmpClient, Promise<Capabilities>>();

/** Probes the QEMU behind `client` once per connection (schema + object types); later calls reuse the answer. */
export function capabilities(client: QmpClient, ctx: OpContext): Promise<Capabilities> {
  let p = probes.get(client);
  if (!p) {
    p = (async () => {
      const schema = await QmpSchema.query(client, { signal: ctx.signal });
      const types = schema.hasCommand('qom-list-types')
        ? await client.execute<{ name: string }[]>('qom-list-types', { abstract: false }, { signal: ctx.signal })
        : [];
      return {
        schema,
        objectTypes: new Set(types.map((t) => t.name)),
        blockDrivers: new Set(schema.enumValues('blockdev-add', ['driver']) ?? []),
        exportTypes: new Set(schema.enumValues('block-export-add', ['type']) ?? []),
        migrationCapabilities: new Set(schema.enumValues('migrate-set-capabilities', ['capabilities', 'capability']) ?? []),
      };
    })();
    probes.set(client, p);
    p.catch(() => probes.delete(client));
  }
  return p;
}

/** The requirements `caps` lacks, as human-readable names ("object type colo-compare"); empty when all are there. */
export function missing(caps: Capabilities, required: readonly Requirement[]): string[] {
  const out: string[] = [];
  for (const r of required) {
    if ('command' in r && !caps.schema.hasCommand(r.command)) out.push(`QMP command ${r.command}`);
    if ('event' in r && !caps.schema.hasEvent(r.event)) out.push(`QMP event ${r.event}`);
    if ('objectType' in r && !caps.objectTypes.has(r.objectType)) out.push(`object type ${r.objectType}`);
    if ('blockDriver' in r && !caps.blockDrivers.has(r.blockDriver)) out.push(`block driver ${r.blockDriver}`);
    if ('exportType' in r && !caps.exportTypes.has(r.exportType)) out.push(`block export type ${r.exportType}`);
    if ('migrationCapability' in r && !caps.migrationCapabilities.has(r.migrationCapability)) {
      out.push(`migration capability ${r.migrationCapability}`);
    }
  }
  return out;
}

/**
 * What QEMU reported since a point in time, for the checkpoint ops: QEMU
 * runs COLO checkpoints itself (STOP ... RESUME on each side), so the
 * subkinds observe them rather than cause them.
 */
export interface Observed {
  /** STOP events (a checkpoint, or any other pause). */
  vmStops: number;
  /** RESUME events (the end of a checkpoint, or any other resume). */
  vmResumes: number;
  /** The last COLO_EXIT: COLO stopped on this QEMU (failover or error). */
  coloExit: QmpEvent<'COLO_EXIT'> | undefined;
  /** QUORUM_REPORT_BAD events, by node name. */
  readonly quorumBad: Map<string, number>;
}

/** State every device of one COLO subkind shares in one operation (made by `init`, freed by `cleanup`). */
export interface ColoShared {
  readonly lease: QmpLease;
  readonly client: QmpClient;
  /** Requirements this QEMU lacks (empty: it has everything); `match` declines every device when not empty. */
  readonly missing: readonly string[];
  /** Where the QEMU is, for messages. */
  readonly where: string;
  /** Per-device observers fed from the one event subscription. */
  readonly observers: Set<Observed>;
  readonly unsubscribe: () => void;
  /** NBD server of the secondary disk subkind: one per QEMU, shared by its devices. */
  nbd: { readonly key: string; readonly users: Set<string>; started: boolean } | undefined;
}

/** `init` of every COLO subkind: leases the connection, probes, subscribes to events. Changes nothing in QEMU. */
export async function openShared(options: ColoQemuOptions, required: readonly Requirement[], ctx: OpContext): Promise<ColoShared> {
  const pool = options.pool ?? sharedQmpPool;
  const lease = await pool.acquire(options.qmp, {
    signal: ctx.signal,
    ...(options.commandTimeoutMs ? { commandTimeoutMs: options.commandTimeoutMs } : {}),
  });
  try {
    const caps = await capabilities(lease.client, ctx);
    const observers = new Set<Observed>();
    const unsubscribe = lease.client.onEvent((e) => {
      for (const o of observers) observe(o, e);
    });
    const where = typeof options.qmp === 'string' ? options.qmp : JSON.stringify(options.qmp);
    return { lease, client: lease.client, missing: missing(caps, required), where, observers, unsubscribe, nbd: undefined };
  } catch (e) {
    await lease.release();
    throw e;
  }
}

/** `cleanup` of every COLO subkind. Never throws. */
export async function closeShared(shared: ColoShared): Promise<void> {
  shared.unsubscribe();
  shared.observers.clear();
  await shared.lease.release();
}

function observe(o: Observed, e: QmpEvent): void {
  if (e.event === 'STOP') o.vmStops++;
  else if (e.event === 'RESUME') o.vmResumes++;
  else if (e.event === 'COLO_EXIT') o.coloExit = e as QmpEvent<'COLO_EXIT'>;
  else if (e.event === 'QUORUM_REPORT_BAD') {
    const node = String((e.data as { 'node-name'?: string })['node-name'] ?? '');
    o.quorumBad.set(node, (o.quorumBad.get(node) ?? 0) + 1);
  }
}

/** A fresh observer, fed until `stopObserving`. */
export function startObserving(shared: ColoShared): Observed {
  const o: Observed = { vmStops: 0, vmResumes: 0, coloExit: undefined, quorumBad: new Map() };
  shared.observers.add(o);
  return o;
}

// ---------------------------------------------------------------------------
// Resources: what set-up adds to QEMU, recorded before each change is asked
// for, so that teardown (after a failure at any step, a lost answer or a
// timeout) removes exactly what may exist and nothing else.

/** One thing set-up adds to a QEMU. */
export type Resource =
  | { readonly type: 'chardev'; readonly id: string }
  | { readonly type: 'object'; readonly id: string }
  | { readonly type: 'node'; readonly nodeName: string }
  | { readonly type: 'child'; readonly parent: string; readonly nodeName: string }
  | { readonly type: 'export'; readonly id: string }
  | { readonly type: 'nbd-user'; readonly device: string };

/** Per-device data of every COLO subkind (private to the subkinds). */
export interface ColoDeviceData {
  /**
   * What set-up asked QEMU to add, in order. Invariant: an entry is pushed
   * before its command is sent and removed only once teardown saw it gone,
   * so after any failure it covers everything that may exist.
   */
  readonly made: Resource[];
  /** QEMU's events since set-up began. */
  readonly observed: Observed;
}

/** Runs one set-up step: records `resource` first, then asks QEMU. */
export async function make(data: ColoDeviceData, resource: Resource, ask: () => Promise<unknown>, ctx: OpContext): Promise<void> {
  if (ctx.signal.aborted) throw abortError(ctx.signal, 'set-up');
  data.made.push(resource);
  await ask();
}

/** What exists in a QEMU, of the kinds a resource list needs. */
export interface QemuState {
  objects?: Set<string>;
  chardevs?: Set<string>;
  nodes?: Set<string>;
  exports?: Set<string>;
  graph?: BlockGraph;
}

export interface BlockGraph {
  readonly nodes: readonly { readonly id: number; readonly name: string; readonly type: string }[];
  readonly edges: readonly { readonly parent: number; readonly child: number; readonly name: string }[];
}

/** Queries only what checking `resources` needs. */
export async function queryState(client: QmpClient, resources: readonly Resource[], signal?: AbortSignal): Promise<QemuState> {
  const types = new Set(resources.map((r) => r.type));
  const o = signal ? { signal } : {};
  const [objects, chardevs, nodes, exports, graph] = await Promise.all([
    types.has('object') ? client.execute<{ name: string }[]>('qom-list', { path: '/objects' }, o) : undefined,
    types.has('chardev') ? client.execute<{ label: string }[]>('query-chardev', undefined, o) : undefined,
    types.has('node') ? client.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true }, o) : undefined,
    types.has('export') ? client.execute<{ id: string }[]>('query-block-exports', undefined, o) : undefined,
    types.has('child') ? client.execute<BlockGraph>('x-debug-query-block-graph', undefined, o) : undefined,
  ]);
  return {
    ...(objects ? { objects: new Set(objects.map((x) => x.name)) } : {}),
    ...(chardevs ? { chardevs: new Set(chardevs.map((x) => x.label)) } : {}),
    ...(nodes ? { nodes: new Set(nodes.map((x) => x['node-name'])) } : {}),
    ...(exports ? { exports: new Set(exports.map((x) => x.id)) } : {}),
    ...(graph ? { graph } : {}),
  };
}

/** The name of the edge from `parent` (a block backend or node name) to the node `child`, if there is one. */
export function childEdge(graph: BlockGraph, parent: string, child: string): string | undefined {
  const byName = (n: string, type: string) => graph.nodes.find((x) => x.name === n && x.type === type);
  const childNode = byName(child, 'block-driver');
  if (!childNode) return undefined;
  let parentId = byName(parent, 'block-driver')?.id;
  if (parentId === undefined) {
    // A block backend (a -drive id): its root node is the parent.
    const blk = byName(parent, 'block-backend');
    parentId = blk && graph.edges.find((e) => e.parent === blk.id && e.name === 'root')?.child;
  }
  return graph.edges.find((e) => e.parent === parentId && e.child === childNode.id)?.name;
}

/**
 * Teardown of every COLO subkind: undoes `data.made` newest first. Each
 * entry is removed only if QEMU still has it (checked from one state query),
 * so teardown is idempotent, tolerates half-made state and never removes
 * what it did not add. Collects failures and throws them together at the
 * end; entries that failed stay recorded for a second attempt.
 */
export async function undoAll(shared: ColoShared, data: ColoDeviceData | undefined, signal?: AbortSignal): Promise<void> {
  if (!data) return;
  shared.observers.delete(data.observed);
  if (data.made.length === 0) return;
  const client = shared.client;
  const state = await queryState(client, data.made, signal);
  const failures: string[] = [];
  for (let i = data.made.length - 1; i >= 0; i--) {
    const r = data.made[i]!;
    try {
      await undo(shared, r, state, signal);
      data.made.splice(i, 1);
    } catch (e) {
      failures.push(`${describe(r)}: ${(e as Error).message}`);
    }
  }
  if (failures.length > 0) {
    throw new RemusError('OP_FAILED', `could not remove from QEMU ${shared.where}: ${failures.join('; ')}`, { details: { failures } });
  }
}

function describe(r: Resource): string {
  switch (r.type) {
    case 'chardev':
    case 'object':
    case 'export':
      return `${r.type} ${r.id}`;
    case 'node':
      return `block node ${r.nodeName}`;
    case 'child':
      return `quorum child ${r.nodeName} of ${r.parent}`;
    case 'nbd-user':
      return 'NBD server';
  }
}

async function undo(shared: ColoShared, r: Resource, state: QemuState, signal: AbortSignal | undefined): Promise<void> {
  const c = shared.client;
  const o = signal ? { signal } : {};
  switch (r.type) {
    case 'object':
      if (state.objects!.has(r.id)) await c.execute('object-del', { id: r.id }, o);
      return;
    case 'chardev':
      if (state.chardevs!.has(r.id)) await c.execute('chardev-remove', { id: r.id }, o);
      return;
    case 'node':
      if (state.nodes!.has(r.nodeName)) await c.execute('blockdev-del', { 'node-name': r.nodeName }, o);
      return;
    case 'child': {
      const edge = childEdge(state.graph!, r.parent, r.nodeName);
      if (edge) await c.execute('x-blockdev-change', { parent: r.parent, child: edge }, o);
      return;
    }
    case 'export':
      if (!state.exports!.has(r.id)) return;
      // `hard` disconnects the primary's NBD client: this is teardown, the export must go.
      await c.execute('block-export-del', { id: r.id, mode: 'hard' }, o);
      await waitExportGone(c, r.id, signal);
      return;
    case 'nbd-user': {
      const nbd = shared.nbd;
      if (!nbd) return;
      nbd.users.delete(r.device);
      if (nbd.users.size > 0 || !nbd.started) return;
      try {
        await c.execute('nbd-server-stop', undefined, o);
      } catch (e) {
        if (!(isQmpRefusal(e, 'GenericError') && /not running/i.test(e.desc))) throw e;
      }
      shared.nbd = undefined;
      return;
    }
  }
}

/** block-export-del only starts the shutdown; the export leaves query-block-exports when its clients are gone (bounded: 5 s, polled every 20 ms). */
async function waitExportGone(c: QmpClient, id: string, signal?: AbortSignal): Promise<void> {
  await pollUntil(
    async (s) => !(await c.execute<{ id: string }[]>('query-block-exports', undefined, { signal: s })).some((x) => x.id === id),
    { what: `export ${id} to leave query-block-exports after block-export-del`, timeoutMs: 5000, intervalMs: 20, ...(signal ? { signal } : {}) },
  );
}

/**
 * Crash recovery (`reap` of every COLO subkind): finds what operation
 * `operation` tagged in this QEMU for `devices` of `kind` and removes it:
 * NBD exports (and the NBD server when no export is left), quorum children
 * and replication nodes, proxy objects (iothreads last), chardevs.
 */
export async function reapQemu(
  options: ColoQemuOptions,
  kind: string,
  operation: string,
  devices: readonly DeviceSpec[],
  ctx: OpContext,
): Promise<string[]> {
  const mine = devices.filter((d) => d.kind === kind);
  if (mine.length === 0) return [];
  const lease = await (options.pool ?? sharedQmpPool).acquire(options.qmp, { signal: ctx.signal });
  const c = lease.client;
  const o = { signal: ctx.signal };
  const prefixes = mine.map((d) => coloIds(operation, d.id).prefix);
  const tagged = (id: string): boolean => prefixes.some((p) => id.startsWith(p));
  const lines: string[] = [];
  try {
    if (kind === 'disk') {
      const exports = await c.execute<{ id: string; type: string }[]>('query-block-exports', undefined, o);
      const ours = exports.filter((e) => tagged(e.id));
      for (const e of ours) {
        await c.execute('block-export-del', { id: e.id, mode: 'hard' }, o);
        await waitExportGone(c, e.id, ctx.signal);
        lines.push(`removed NBD export ${e.id}`);
      }
      if (ours.length > 0 && ours.length === exports.filter((e) => e.type === 'nbd').length) {
        try {
          await c.execute('nbd-server-stop', undefined, o);
          lines.push('stopped the NBD server');
        } catch (e) {
          if (!(isQmpRefusal(e) && /not running/i.test(e.desc))) throw e;
        }
      }
      const names = new Set(mine.map((d) => coloIds(operation, d.id).primaryDisk.node));
      const graph = await c.execute<BlockGraph>('x-debug-query-block-graph', undefined, o);
      for (const node of graph.nodes.filter((n) => n.type === 'block-driver' && names.has(n.name))) {
        for (const edge of graph.edges.filter((e) => e.child === node.id)) {
          const parent = graph.nodes.find((n) => n.id === edge.parent);
          if (parent?.type !== 'block-driver') continue;
          await c.execute('x-blockdev-change', { parent: parent.name, child: edge.name }, o);
          lines.push(`removed quorum child ${edge.name} (${node.name}) of ${parent.name}`);
        }
        await c.execute('blockdev-del', { 'node-name': node.name }, o);
        lines.push(`removed block node ${node.name}`);
      }
    }
    const objects = (await c.execute<{ name: string; type: string }[]>('qom-list', { path: '/objects' }, o)).filter((x) => tagged(x.name));
    // Filters and colo-compare before the iothread colo-compare runs in.
    objects.sort((a, b) => Number(a.type.includes('iothread')) - Number(b.type.includes('iothread')));
    for (const x of objects) {
      await c.execute('object-del', { id: x.name }, o);
      lines.push(`removed object ${x.name}`);
    }
    const chardevs = (await c.execute<{ label: string }[]>('query-chardev', undefined, o)).filter((x) => tagged(x.label));
    for (const x of chardevs) {
      await c.execute('chardev-remove', { id: x.label }, o);
      lines.push(`removed chardev ${x.label}`);
    }
    return lines;
  } finally {
    await lease.release();
  }
}
