/**
 * The four COLO subkinds: the COLO proxy (nic) and block replication (disk),
 * each for the primary and for the secondary QEMU. They share one shape,
 * made by {@link coloSubkind}: `init` leases the QMP connection and probes
 * the QEMU; `match` declines devices that are not COLO-shaped or a QEMU that
 * lacks what COLO needs (before anything is changed); `setup` adds exactly
 * the chardevs, objects, block nodes and exports its plan lists, recording
 * each before asking; `teardown` removes what is still there, newest first.
 */
import {
  RemusError,
  formatSocketAddress,
  noMatch,
  validateName,
  type DeviceHandle,
  type DeviceSpec,
  type MatchResult,
  type OpContext,
  type OpsList,
  type SocketAddress,
  type SubkindOps,
  checkOptionNames,
} from '@remus/core';
import { QmpError, isQmpRefusal, type QmpClient } from '@remus/qmp';
import { optValue, qmpSocketAddress } from './address.js';
import { coloKindParams, coloMarker, coloParamProblems, readColoParams, type ColoDeviceKind, type ColoRole } from './params.js';
import {
  COLO_BASE_REQUIREMENTS,
  closeShared,
  make,
  needs,
  openShared,
  reapQemu,
  startObserving,
  undoAll,
  type ColoDeviceData,
  type ColoQemuOptions,
  type ColoShared,
  type Requirement,
} from './qemu.js';
import { coloIds } from './ids.js';

/** Params of a primary COLO nic (`kind: 'nic'`). Addresses are `{ host, port }`, `"host:port"` or `{ path }`. */
export interface ColoPrimaryNicParams {
  /** The QEMU netdev id the guest's NIC uses (`-netdev tap,id=hn0,...`). Must exist. */
  readonly netdev: string;
  /** Listening address the secondary's tx redirector connects to (filter-mirror output; COLO-FT.txt: :9003). */
  readonly mirror: SocketAddress | string;
  /** Listening address the secondary's rx redirector connects to (colo-compare secondary_in; COLO-FT.txt: :9004). */
  readonly compare: SocketAddress | string;
  /** Local loop: the rx redirector sends the primary's packets here, colo-compare reads them (COLO-FT.txt: :9001). A unix path is fine. */
  readonly primaryIn: SocketAddress | string;
  /** Local loop: colo-compare sends released packets here, the other rx redirector reads them (COLO-FT.txt: :9005). */
  readonly compareOut: SocketAddress | string;
}

/** Params of a secondary COLO nic (`kind: 'nic'`). */
export interface ColoSecondaryNicParams {
  /** The QEMU netdev id the guest's NIC uses. Must exist. */
  readonly netdev: string;
  /** The primary's `mirror` address (its tx traffic arrives here). */
  readonly mirror: SocketAddress | string;
  /** The primary's `compare` address (this side's rx output goes there). */
  readonly compare: SocketAddress | string;
  /** Seconds between reconnect attempts of the two client chardevs (the primary may listen later). Default 1. */
  readonly reconnectSeconds?: number;
}

/** Params of a primary COLO disk (`kind: 'disk'`). */
export interface ColoPrimaryDiskParams {
  /** The quorum the guest's disk sits on (`-drive id=colo-disk0,driver=quorum,...`): a drive id or node name. Must be a quorum. */
  readonly quorum: string;
  /** The secondary's NBD server. */
  readonly nbd: SocketAddress | string;
  /** The export name on the secondary (its `export`). */
  readonly export: string;
}

/** Params of a secondary COLO disk (`kind: 'disk'`). */
export interface ColoSecondaryDiskParams {
  /** The drive id or node name to export: the disk the replication driver's hidden/active images sit on (COLO-FT.txt: `parent0`). Must exist. */
  readonly node: string;
  /** Where the NBD server listens (the primary's `nbd`). One NBD server per QEMU: every disk of the operation must name the same one. */
  readonly nbd: SocketAddress | string;
  /** The export name the primary asks for. Default: `node`. */
  readonly export?: string;
  /** Optional check: this replication quorum (COLO-FT.txt: `colo-disk0`) must exist. */
  readonly quorum?: string;
}

/** A subkind's plan for one device: what it checks in `match` and adds in `setup`. */
interface Plan {
  /** Throws INVALID_ARGUMENT / DEVICE_NOT_READY if the QEMU cannot take this device as configured. Reads only. */
  check(client: QmpClient, ctx: OpContext): Promise<void>;
  /** Adds everything, one recorded step at a time. */
  build(shared: ColoShared, data: ColoDeviceData, ctx: OpContext): Promise<void>;
}

interface ColoSubkindSpec {
  readonly name: string;
  readonly role: ColoRole;
  readonly kind: ColoDeviceKind;
  readonly requires: readonly Requirement[];
  /** Reads and validates the params (throws INVALID_ARGUMENT, see params.ts), names the QEMU ids. */
  plan(params: Readonly<Record<string, unknown>>, device: string, operation: string): Plan;
}

function coloSubkind(spec: ColoSubkindSpec, options: ColoQemuOptions): SubkindOps {
  if (options === null || typeof options !== 'object' || options.qmp === undefined) {
    throw new RemusError('INVALID_ARGUMENT', `${spec.name}: options.qmp (the QEMU's QMP socket) is required, e.g. ${spec.name.replace(/-(\w)/g, (_, c: string) => c.toUpperCase())}({ qmp: '/run/qemu/qmp.sock' })`);
  }
  checkOptionNames(options, ['qmp', 'pool', 'commandTimeoutMs'], spec.name);
  const requires = [...COLO_BASE_REQUIREMENTS, ...spec.requires];
  /** The param that marks a device as COLO-shaped for this subkind; devices without it are "not mine". */
  const marker = coloMarker(spec.role, spec.kind);
  const planFor = (h: DeviceHandle<ColoShared, ColoDeviceData>, ctx: OpContext): Plan =>
    spec.plan(h.device.params ?? {}, validateName(h.device.id, 'device id'), ctx.operation);
  const ops: SubkindOps<ColoShared, ColoDeviceData> = {
    name: spec.name,
    kind: spec.kind,
    /** Both sides' params of this kind: one spec may serve both ops lists (the core refuses any other). */
    params: coloKindParams(spec.kind),
    /** Every problem with a COLO-shaped device's params for this side (missing, malformed; see params.ts), before anything is touched. Pure. */
    checkParams(device: DeviceSpec): void {
      const params = device.params ?? {};
      if (params[marker] === undefined) return; // not mine: match declines it
      const problems = coloParamProblems(spec.role, spec.kind, params, { unknown: false });
      if (problems.length > 0) {
        throw new RemusError('INVALID_ARGUMENT', `device ${device.id}: ${problems.map((p) => `params.${p.param} ${p.message} (${p.fix})`).join('; ')}`, {
          device: device.id,
          subkind: spec.name,
          details: { problems },
        });
      }
    },
    /** Leases the QMP connection and probes the QEMU (schema, object types). Changes nothing. */
    init: (ctx) => openShared(options, requires, ctx),
    /** Releases the connection lease (the last release closes it). */
    cleanup: (shared) => closeShared(shared),
    /**
     * "Not mine" for a device without the subkind's marker param, and for
     * every device when the QEMU lacks a COLO feature (the reason lists
     * what is missing). Throws for a COLO device that is misconfigured (bad
     * params, a netdev or drive QEMU does not have). Reads only.
     */
    match: async (h, ctx): Promise<MatchResult> => {
      const params = h.device.params ?? {};
      if (params[marker] === undefined) return noMatch(`no params.${marker}: not a COLO ${spec.kind}`);
      if (h.shared.missing.length > 0) {
        return noMatch(`QEMU at ${h.shared.where} lacks what COLO needs: ${h.shared.missing.join(', ')}`);
      }
      await planFor(h, ctx).check(h.shared.client, ctx);
      return true;
    },
    /** Adds the device's chardevs/objects/nodes/exports through QMP, recording each before it is asked for. */
    setup: async (h, ctx) => {
      const plan = planFor(h, ctx);
      const data: ColoDeviceData = { made: [], observed: startObserving(h.shared) };
      h.data = data;
      await plan.build(h.shared, data, ctx);
    },
    /** Removes what setup recorded and QEMU still has, newest first. Idempotent; also after a failed or aborted setup. */
    teardown: (h, ctx) => undoAll(h.shared, h.data, ctx.signal),
    /**
     * After a crash of the process that ran `operation`: removes from this
     * QEMU everything tagged with that operation for the given devices of
     * this subkind's kind (ids `colo.<operation>.<device>.*`, the hashed
     * replication node), and stops the NBD server if an export it removed
     * was the last. Returns one line per thing removed; idempotent.
     */
    reap: (operation, devices, ctx) => reapQemu(options, spec.kind, operation, devices, ctx),
    /**
     * QEMU runs COLO checkpoints itself, so there is nothing to do at
     * postsuspend/preresume (absent). At commit the subkind confirms that
     * COLO is still running on its QEMU: a COLO_EXIT (failover, error) or,
     * for a primary disk, a QUORUM_REPORT_BAD from its replication child
     * since setup fails the commit, so the caller learns the protection is
     * gone; so does a commit on a device already torn down. No I/O: it reads what the event subscription saw.
     */
    commit: (h) => {
      const o = h.data?.observed;
      if (!o) return;
      if (!h.shared.observers.has(o)) {
        throw new RemusError('OP_FAILED', `device ${h.device.id} was torn down on QEMU ${h.shared.where}: it is no longer protected`, { details: { resources: h.data!.made.length } });
      }
      if (o.coloExit) {
        const d = o.coloExit.data;
        throw new RemusError('OP_FAILED', `COLO exited on QEMU ${h.shared.where} (mode ${d.mode}, reason ${d.reason}): the device is no longer protected`, {
          details: { event: 'COLO_EXIT', ...d },
        });
      }
      // QUORUM_REPORT_BAD names the failing child: a replication node this device added means the secondary's disk fell behind.
      const mine = new Set(h.data!.made.flatMap((r) => (r.type === 'node' ? [r.nodeName] : [])));
      const bad = [...o.quorumBad.entries()].filter(([node]) => mine.has(node));
      if (bad.length > 0) {
        throw new RemusError('OP_FAILED', `replication child reported bad on QEMU ${h.shared.where} (${bad.map(([n, k]) => `${n} x${k}`).join(', ')}): the secondary's disk is not in sync`, {
          details: { event: 'QUORUM_REPORT_BAD', nodes: bad.map(([n]) => n) },
        });
      }
    },
    /** What QEMU reported since setup: `vmStops`/`vmResumes` (COLO checkpoints pause and resume the VM), `coloExits`, `quorumReportsBad`. */
    stats: (h): Record<string, number> => {
      const o = h.data?.observed;
      if (!o) return {};
      return {
        vmStops: o.vmStops,
        vmResumes: o.vmResumes,
        coloExits: o.coloExit ? 1 : 0,
        quorumReportsBad: [...o.quorumBad.values()].reduce((a, b) => a + b, 0),
        resources: h.data!.made.length,
      };
    },
  };
  return ops as SubkindOps;
}

// ---------------------------------------------------------------------------
// Checks shared by the plans (read-only QMP queries).

/** Netdev ids, from HMP `info network` (QMP has no query for netdevs in QEMU 7.2). */
async function netdevs(client: QmpClient, ctx: OpContext): Promise<Set<string>> {
  const text = await client.hmp('info network', { signal: ctx.signal });
  const out = new Set<string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^[\s\\]*([A-Za-z][\w.-]*): index=\d+,type=([\w-]+)/.exec(line);
    if (m && m[2] !== 'nic') out.add(m[1]!);
  }
  return out;
}

async function requireNetdev(client: QmpClient, netdev: string, ctx: OpContext): Promise<void> {
  const have = await netdevs(client, ctx);
  if (!have.has(netdev)) {
    throw new RemusError('INVALID_ARGUMENT', `netdev ${netdev} is not in this QEMU (netdevs: ${[...have].join(', ') || 'none'})`, {
      details: { netdev },
    });
  }
}

interface BlockInfo {
  device: string;
  inserted?: { 'node-name': string; drv: string };
}
interface NodeInfo {
  'node-name': string;
  drv: string;
}

/** Resolves a drive id or node name to its node name and driver; undefined if QEMU has neither. */
async function findNode(client: QmpClient, name: string, ctx: OpContext): Promise<NodeInfo | undefined> {
  const [blocks, nodes] = await Promise.all([
    client.execute<BlockInfo[]>('query-block', undefined, { signal: ctx.signal }),
    client.execute<NodeInfo[]>('query-named-block-nodes', { flat: true }, { signal: ctx.signal }),
  ]);
  const node = nodes.find((n) => n['node-name'] === name);
  if (node) return node;
  const blk = blocks.find((b) => b.device === name)?.inserted;
  return blk ? { 'node-name': blk['node-name'], drv: blk.drv } : undefined;
}

function chardevSocket(id: string, addr: SocketAddress, server: boolean, reconnect?: number): Record<string, unknown> {
  const data: Record<string, unknown> = { addr: qmpSocketAddress(addr), server };
  if (server) data['wait'] = false;
  if (reconnect !== undefined) data['reconnect'] = reconnect;
  return { id, backend: { type: 'socket', data } };
}

/**
 * The filter-rewriter on `netdev`, if this QEMU has one: a promoted
 * secondary keeps its rewriter for the VM's lifetime (driver rule), and
 * when it becomes a primary again (reprotect) its proxy filters go before
 * it (QEMU docs/COLO-FT.txt: `insert: before, position: id=rew0`).
 */
async function rewriterOn(client: QmpClient, netdev: string, ctx: OpContext): Promise<string | undefined> {
  const objects = await client.execute<{ name: string; type: string }[]>('qom-list', { path: '/objects' }, { signal: ctx.signal });
  for (const o of objects.filter((x) => x.type === 'child<filter-rewriter>')) {
    const on = await client.execute<string>('qom-get', { path: `/objects/${o.name}`, property: 'netdev' }, { signal: ctx.signal });
    if (on === netdev) return o.name;
  }
  return undefined;
}

/** The two recorded set-up steps of both proxies: a socket chardev (`chardev-add`) and an object (`object-add`). */
function proxyAdder(shared: ColoShared, data: ColoDeviceData, ctx: OpContext) {
  const c = shared.client;
  const o = { signal: ctx.signal };
  return {
    chardev: (id: string, addr: SocketAddress, server: boolean, reconnect?: number) =>
      make(data, { type: 'chardev', id }, () => c.execute('chardev-add', chardevSocket(id, addr, server, reconnect), o), ctx),
    object: (args: Record<string, unknown> & { id: string }) => make(data, { type: 'object', id: args.id }, () => c.execute('object-add', args, o), ctx),
  };
}

// ---------------------------------------------------------------------------
// The four subkinds.

/** QMP commands both proxies use. */
const NIC_COMMANDS = ['chardev-add', 'chardev-remove', 'query-chardev', 'object-add', 'object-del', 'human-monitor-command'];

/**
 * The COLO proxy on the primary: six socket chardevs (two servers the
 * secondary connects to, two local loops), filter-mirror (tx to the
 * secondary), two filter-redirectors (rx into colo-compare, colo-compare's
 * output back out), an iothread and colo-compare, exactly as QEMU's
 * docs/COLO-FT.txt wires them; on a QEMU that has a filter-rewriter on the
 * netdev (a promoted secondary, reprotected), the filters go before it. Device params: {@link ColoPrimaryNicParams}.
 */
export function coloPrimaryNic(options: ColoQemuOptions): SubkindOps {
  return coloSubkind(
    {
      name: 'colo-primary-nic',
      role: 'primary',
      kind: 'nic',
      requires: needs({ commands: NIC_COMMANDS, objectTypes: ['filter-mirror', 'filter-redirector', 'colo-compare', 'iothread'] }),
      plan(params, device, operation) {
        const { netdev, mirror, compare, primaryIn, compareOut } = readColoParams('primary', 'nic', params, device);
        const id = coloIds(operation, device).primaryNic;
        return {
          check: (client, ctx) => requireNetdev(client, netdev, ctx),
          async build(shared, data, ctx) {
            const { chardev, object } = proxyAdder(shared, data, ctx);
            const rewriter = await rewriterOn(shared.client, netdev, ctx);
            const place = rewriter === undefined ? {} : { insert: 'before', position: `id=${rewriter}` };
            await chardev(id.mirror, mirror, true);
            await chardev(id.compare, compare, true);
            await chardev(id.pri, primaryIn, true);
            await chardev(id.priIn, primaryIn, false);
            await chardev(id.out, compareOut, true);
            await chardev(id.outIn, compareOut, false);
            await object({ 'qom-type': 'filter-mirror', id: id.filterMirror, netdev, queue: 'tx', outdev: id.mirror, ...place });
            await object({ 'qom-type': 'filter-redirector', id: id.redirectOut, netdev, queue: 'rx', indev: id.out, ...place });
            await object({ 'qom-type': 'filter-redirector', id: id.redirectIn, netdev, queue: 'rx', outdev: id.pri, ...place });
            await object({ 'qom-type': 'iothread', id: id.iothread });
            await object({
              'qom-type': 'colo-compare',
              id: id.compareObj,
              primary_in: id.priIn,
              secondary_in: id.compare,
              outdev: id.outIn,
              iothread: id.iothread,
            });
          },
        };
      },
    },
    options,
  );
}

/**
 * The COLO proxy on the secondary: two client chardevs to the primary's
 * mirror and compare servers (reconnecting, so the secondary may be set up
 * first, as COLO requires), two filter-redirectors (tx in from the mirror,
 * rx out to colo-compare) and filter-rewriter (TCP sequence numbers).
 * Device params: {@link ColoSecondaryNicParams}.
 */
export function coloSecondaryNic(options: ColoQemuOptions): SubkindOps {
  return coloSubkind(
    {
      name: 'colo-secondary-nic',
      role: 'secondary',
      kind: 'nic',
      requires: needs({ commands: NIC_COMMANDS, objectTypes: ['filter-redirector', 'filter-rewriter'] }),
      plan(params, device, operation) {
        const { netdev, mirror, compare, reconnectSeconds } = readColoParams('secondary', 'nic', params, device);
        const reconnect = reconnectSeconds ?? 1;
        const id = coloIds(operation, device).secondaryNic;
        return {
          check: (client, ctx) => requireNetdev(client, netdev, ctx),
          async build(shared, data, ctx) {
            const { chardev, object } = proxyAdder(shared, data, ctx);
            await chardev(id.red0, mirror, false, reconnect);
            await chardev(id.red1, compare, false, reconnect);
            await object({ 'qom-type': 'filter-redirector', id: id.f1, netdev, queue: 'tx', indev: id.red0 });
            await object({ 'qom-type': 'filter-redirector', id: id.f2, netdev, queue: 'rx', outdev: id.red1 });
            await object({ 'qom-type': 'filter-rewriter', id: id.rew, netdev, queue: 'all' });
          },
        };
      },
    },
    options,
  );
}

/**
 * Block replication on the primary: a `replication,mode=primary` node over
 * an NBD client to the secondary's export (HMP `drive_add -n`, as QEMU's
 * docs do: QMP has no equivalent taking these legacy options), then that
 * node added to the guest disk's quorum with `x-blockdev-change`. Device
 * params: {@link ColoPrimaryDiskParams}. The NBD server must answer: QEMU
 * opens the connection synchronously and its monitor waits meanwhile.
 */
export function coloPrimaryDisk(options: ColoQemuOptions): SubkindOps {
  return coloSubkind(
    {
      name: 'colo-primary-disk',
      role: 'primary',
      kind: 'disk',
      requires: needs({
        commands: ['human-monitor-command', 'x-blockdev-change', 'blockdev-del', 'query-named-block-nodes', 'query-block', 'x-debug-query-block-graph'],
        blockDrivers: ['replication', 'quorum', 'nbd'],
      }),
      plan(params, device, operation) {
        const { quorum, nbd, export: exportName } = readColoParams('primary', 'disk', params, device);
        const node = coloIds(operation, device).primaryDisk.node;
        const server =
          'path' in nbd ? `file.path=${optValue(nbd.path)}` : `file.host=${optValue(nbd.host)},file.port=${nbd.port}`;
        const driveAdd = `drive_add -n buddy driver=replication,mode=primary,file.driver=nbd,${server},file.export=${optValue(exportName)},node-name=${node}`;
        return {
          async check(client, ctx) {
            const q = await findNode(client, quorum, ctx);
            if (!q) throw new RemusError('INVALID_ARGUMENT', `device ${device}: quorum ${quorum} is not a drive or node of this QEMU`);
            if (q.drv !== 'quorum') {
              throw new RemusError('INVALID_ARGUMENT', `device ${device}: ${quorum} is a ${q.drv} node, not a quorum (COLO needs -drive driver=quorum,... under the guest disk)`);
            }
          },
          async build(shared, data, ctx) {
            const c = shared.client;
            await make(
              data,
              { type: 'node', nodeName: node },
              async () => {
                const out = (await c.hmp(driveAdd, { signal: ctx.signal })).trim();
                // drive_add -n prints nothing on success and the error text otherwise.
                if (out !== '' && out !== 'OK') {
                  throw new QmpError(`drive_add of the replication node to ${formatSocketAddress(nbd)} failed: ${out}`, { errorClass: 'GenericError', desc: out, command: 'human-monitor-command' });
                }
              },
              ctx,
            );
            await make(data, { type: 'child', parent: quorum, nodeName: node }, () => c.execute('x-blockdev-change', { parent: quorum, node }, { signal: ctx.signal }), ctx);
          },
        };
      },
    },
    options,
  );
}

/**
 * Block replication on the secondary: the NBD server (one per QEMU, shared
 * by the subkind's devices, stopped with the last) and a writable NBD export
 * of the disk under the replication driver, for the primary's replication
 * child to write into. Device params: {@link ColoSecondaryDiskParams}.
 */
export function coloSecondaryDisk(options: ColoQemuOptions): SubkindOps {
  return coloSubkind(
    {
      name: 'colo-secondary-disk',
      role: 'secondary',
      kind: 'disk',
      requires: needs({
        commands: ['nbd-server-start', 'nbd-server-stop', 'block-export-add', 'block-export-del', 'query-block-exports', 'query-named-block-nodes', 'query-block'],
        exportTypes: ['nbd'],
        blockDrivers: ['replication', 'quorum'],
      }),
      plan(params, device, operation) {
        const { node: nodeParam, nbd, export: exportParam, quorum } = readColoParams('secondary', 'disk', params, device);
        const exportName = exportParam ?? nodeParam;
        const exportId = coloIds(operation, device).secondaryDisk.export;
        const key = formatSocketAddress(nbd);
        const resolve = async (client: QmpClient, ctx: OpContext): Promise<string> => {
          const n = await findNode(client, nodeParam, ctx);
          if (!n) throw new RemusError('INVALID_ARGUMENT', `device ${device}: ${nodeParam} is not a drive or node of this QEMU`);
          return n['node-name'];
        };
        return {
          async check(client, ctx) {
            await resolve(client, ctx);
            if (quorum && !(await findNode(client, quorum, ctx))) {
              throw new RemusError('INVALID_ARGUMENT', `device ${device}: quorum ${quorum} is not a drive or node of this QEMU`);
            }
          },
          async build(shared, data, ctx) {
            const c = shared.client;
            const nodeName = await resolve(c, ctx);
            if (shared.nbd && shared.nbd.key !== key) {
              throw new RemusError('INVALID_ARGUMENT', `device ${device}: QEMU has one NBD server, already set up on ${shared.nbd.key}; every disk must name it (got ${key})`);
            }
            const nbdState = (shared.nbd ??= { key, users: new Set(), started: false });
            await make(
              data,
              { type: 'nbd-user', device },
              async () => {
                nbdState.users.add(device);
                if (nbdState.started) return;
                nbdState.started = true;
                try {
                  await c.execute('nbd-server-start', { addr: qmpSocketAddress(nbd) }, { signal: ctx.signal });
                } catch (e) {
                  // Refused for sure: nothing to stop. (A lost answer or timeout keeps `started`, and teardown stops it if it runs.)
                  if (isQmpRefusal(e)) nbdState.started = false;
                  throw e;
                }
              },
              ctx,
            );
            await make(
              data,
              { type: 'export', id: exportId },
              () => c.execute('block-export-add', { type: 'nbd', id: exportId, 'node-name': nodeName, name: exportName, writable: true }, { signal: ctx.signal }),
              ctx,
            );
          },
        };
      },
    },
    options,
  );
}

/** The ops list for the COLO primary QEMU: `[colo-primary-nic, colo-primary-disk]`. */
export function coloPrimaryOps(options: ColoQemuOptions): OpsList {
  return [coloPrimaryNic(options), coloPrimaryDisk(options)];
}

/** The ops list for the COLO secondary QEMU: `[colo-secondary-nic, colo-secondary-disk]`. Set it up before the primary's. */
export function coloSecondaryOps(options: ColoQemuOptions): OpsList {
  return [coloSecondaryNic(options), coloSecondaryDisk(options)];
}
