/**
 * The `nic-netbuf` subkind: Remus output commit for one VM NIC.
 *
 * Everything the guest sends arrives on the host-side interface's ingress.
 * Setup redirects all of it (every protocol: IPv4, IPv6, ARP) to an IFB of
 * this plugin's own making whose root qdisc is `plug`; each checkpoint closes
 * the current epoch at postsuspend (plug BUFFER) and releases the oldest
 * closed epoch at commit (plug RELEASE_ONE), so no packet of epoch N leaves
 * before checkpoint N is committed.
 */
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import {
  RemusError,
  noMatch,
  runScript,
  validateInterfaceName,
  validateName,
  validateOperationId,
  type DeviceHandle,
  type DeviceSpec,
  type MatchResult,
  type OpContext,
  type SubkindOps,
} from '@remus/core';
import { TcChannel } from './channel.js';
import { attempt, ingressKind, ingressRedirects, linkInfo, listIfbs, must, netnsExists, rootQdisc, type Where } from './kernel.js';
import { withLock } from './lock.js';
import { PLUG_BUFFER, PLUG_RELEASE_ONE, RtnlChannel, fifoOptions, parseHandle, plugOptions, type QdiscChange } from './rtnl.js';

/** Options of {@link nicNetbuf}. Every field is optional. */
export interface NicNetbufOptions {
  /** Bytes the plug qdisc may hold before it drops (its `limit`). Default 10 000 000 (Xen's value). */
  readonly limitBytes?: number;
  /**
   * An operator's setup/teardown script used instead of the built-in recipe
   * (like Xen's `remus-netbuf-setup`). Absolute path. See the README for its
   * arguments and environment.
   */
  readonly script?: string;
  /** Time limit of one script run, ms. Default 30 000. */
  readonly scriptTimeoutMs?: number;
  /** Time limit of one `ip`/`tc` command in setup, teardown and reap, ms. Default 10 000. */
  readonly commandTimeoutMs?: number;
  /** How long setup, teardown and reap wait for the host-wide setup lock, ms. Default 20 000. */
  readonly lockTimeoutMs?: number;
  /** Name of the host-wide setup lock (an abstract Unix socket). Default `remus-nic-netbuf`. */
  readonly lockName?: string;
  /** The tc binary. Default `tc` from PATH. */
  readonly tcPath?: string;
}

/** Setup steps in order; fault injection and error details name them. */
export const SETUP_STEPS = ['check-ingress', 'create-ifb', 'tag-ifb', 'add-qdisc', 'ifb-up', 'add-ingress', 'add-redirect', 'open-channel'] as const;
export type SetupStep = (typeof SETUP_STEPS)[number];

/**
 * Test-only knobs, not exported from the package entry. `standIn` replaces
 * the plug qdisc by another qdisc (e.g. `['bfifo', 'limit', '10000']`) on a
 * kernel without sch_plug: setup installs it at the same handle and every
 * checkpoint op sends a `change` with the same arguments through the same
 * channel (on the netlink socket: TCA_KIND and struct tc_fifo_qopt, so only
 * `bfifo|pfifo limit N` can stand in for NICs in this process's namespace),
 * so everything but the buffering itself can be exercised.
 * `beforeStep` runs before each setup step; throwing there injects a failure.
 */
export interface NetbufInternals {
  readonly standIn?: readonly string[];
  readonly beforeStep?: (step: SetupStep, handle: DeviceHandle<NetbufShared, NicData>) => void | Promise<void>;
}

/** The state every NIC of one operation shares. */
export interface NetbufShared {
  /**
   * The control channels: one per network namespace (key: namespace name,
   * '' for this process's), opened by the first setup there and reused by
   * every NIC in it; closed by cleanup. A failed open is removed so the next
   * setup retries.
   */
  readonly channels: Map<string, Promise<TcChannel>>;
  /**
   * The in-process NETLINK_ROUTE socket for NICs in this process's own
   * namespace: opened by the first such setup, shared by all of them,
   * closed by cleanup.
   */
  rtnl: RtnlChannel | undefined;
  /** The sch_plug probe, started by the first match: undefined = present, else why not. */
  plugProbe: Promise<string | undefined> | undefined;
}

/**
 * One NIC's state, owned by this subkind. Every kernel object is recorded
 * the moment it exists so teardown (also after a failed or aborted setup)
 * removes exactly what was made.
 */
export interface NicData {
  readonly ifname: string;
  readonly netns: string | undefined;
  /** The operation (ctx.operation of setup). */
  readonly operation: string;
  /** The alias put on the IFB: `remus-netbuf:<operation>:<ifname>`; reap finds crashed runs' IFBs by it. */
  readonly tag: string;
  /** The IFB carrying the plug; set before `ip link add` (or from the script's output). */
  ifb: string | undefined;
  /** True once this plugin's `ip link add` of `ifb` succeeded. An IFB is deleted only if this is true or it carries `tag`. */
  ifbCreated: boolean;
  /** Handle of the buffering qdisc at the IFB's root (e.g. `1:`); set once it is installed. Checkpoint ops need it. */
  qdiscHandle: string | undefined;
  /** True once `tc qdisc add dev <ifname> ingress` succeeded, until teardown removed it. */
  ingressAdded: boolean;
  /** True once the operator's setup script was started, until its teardown run succeeded. */
  scriptStarted: boolean;
  /** The namespace's tc batch channel (NIC in another namespace); set at the end of setup. */
  channel: TcChannel | undefined;
  /** The operation's netlink socket (NIC in this process's namespace); set at the end of setup instead of `channel`. */
  rtnl: RtnlChannel | undefined;
  /** The IFB's ifindex, recorded at setup when `rtnl` is used (the checkpoint ops do no lookup). */
  ifindex: number | undefined;
  /** Epochs closed by postsuspend and released by commit. */
  closed: number;
  released: number;
}

type Handle = DeviceHandle<NetbufShared, NicData>;

const TAG_PREFIX = 'remus-netbuf:';
const DEFAULT_LIMIT = 10_000_000;
const PROBE_IFB = 'rbprobe';

/**
 * Makes the `nic-netbuf` ops. Throws INVALID_ARGUMENT for bad options.
 * Devices: `{ kind: 'nic', params: { ifname?, netns?, buffer? } }`; `ifname`
 * defaults to the device id; `buffer: false` declines the NIC.
 */
export function nicNetbuf(options: NicNetbufOptions = {}): SubkindOps<NetbufShared, NicData> {
  return createNetbuf(options, {});
}

/** {@link nicNetbuf} with test-only internals (see {@link NetbufInternals}). */
export function createNetbuf(options: NicNetbufOptions, internals: NetbufInternals): SubkindOps<NetbufShared, NicData> {
  const o = checkOptions(options);
  const standIn = internals.standIn;
  const bufferArgs = standIn ?? ['plug', 'limit', String(o.limitBytes)];
  const blockArgs = standIn ?? ['plug', 'block'];
  const releaseArgs = standIn ?? ['plug', 'release'];
  const where = (netns: string | undefined): Where => ({ netns, timeoutMs: o.commandTimeoutMs });
  // The same changes as netlink messages (TCA_KIND + TCA_OPTIONS) for the in-process socket.
  const standInChange = standIn ? fifoChange(standIn) : undefined;
  const blockChange: QdiscChange | undefined = standIn ? standInChange : { kind: 'plug', options: plugOptions(PLUG_BUFFER) };
  const releaseChange: QdiscChange | undefined = standIn ? standInChange : { kind: 'plug', options: plugOptions(PLUG_RELEASE_ONE) };

  const step = async (name: SetupStep, h: Handle, ctx: OpContext): Promise<void> => {
    if (ctx.signal.aborted) throw abortError(ctx.signal, `setup of ${h.data?.ifname} stopped before ${name}`);
    await internals.beforeStep?.(name, h);
  };

  const channelFor = (shared: NetbufShared, netns: string | undefined, ctx: OpContext): Promise<TcChannel> => {
    const key = netns ?? '';
    let open = shared.channels.get(key);
    if (open) {
      // A channel that died is replaced here (setup may spawn), never in a checkpoint op.
      open = open.then((c) => (c.alive ? c : reopen()));
    } else {
      open = reopen();
    }
    shared.channels.set(key, open);
    return open;
    function reopen(): Promise<TcChannel> {
      const p = TcChannel.open(netns, { tcPath: o.tcPath, signal: ctx.signal, timeoutMs: o.commandTimeoutMs });
      p.catch(() => {
        if (shared.channels.get(key) === open) shared.channels.delete(key);
      });
      return p;
    }
  };

  const builtInSetup = async (h: Handle, ctx: OpContext): Promise<void> => {
    const d = h.data!;
    const at = where(d.netns);
    await step('check-ingress', h, ctx);
    const existing = await ingressKind(d.ifname, at);
    if (existing) throw foreignIngress(d, existing);

    await step('create-ifb', h, ctx);
    for (let tries = 0; !d.ifbCreated; tries++) {
      d.ifb = `rb${randomBytes(4).toString('hex')}`;
      const failed = await attempt('ip', ['link', 'add', d.ifb, 'type', 'ifb'], at);
      if (failed === undefined) {
        d.ifbCreated = true;
        break;
      }
      const name = d.ifb;
      d.ifb = undefined; // not ours: never touch it
      if (!/File exists/.test(failed) || tries >= 4) {
        throw new RemusError('OP_FAILED', `cannot create IFB ${name}${inNs(d.netns)}: ${failed}`, { details: { step: 'create-ifb', stderr: failed } });
      }
    }
    const ifb = d.ifb!;

    await step('tag-ifb', h, ctx);
    // addrgenmode none: no IPv6 link-local address, hence no router solicitations or MLD
    // reports of the IFB's own landing in its plug (only the guest's packets are held).
    await must('ip', ['link', 'set', 'dev', ifb, 'alias', d.tag, 'addrgenmode', 'none'], at, `cannot tag IFB ${ifb}`);

    await step('add-qdisc', h, ctx);
    await must('tc', ['qdisc', 'add', 'dev', ifb, 'root', 'handle', '1:', ...bufferArgs], at, plugHint(ifb, standIn));
    d.qdiscHandle = '1:';

    await step('ifb-up', h, ctx);
    await must('ip', ['link', 'set', 'dev', ifb, 'up'], at, `cannot bring IFB ${ifb} up`);

    await step('add-ingress', h, ctx);
    const failed = await attempt('tc', ['qdisc', 'add', 'dev', d.ifname, 'ingress'], at);
    if (failed !== undefined) {
      if (/Exclusivity flag|File exists/.test(failed)) throw foreignIngress(d, 'ingress');
      throw new RemusError('OP_FAILED', `cannot add an ingress qdisc to ${d.ifname}${inNs(d.netns)}: ${failed}`, { details: { step: 'add-ingress' } });
    }
    d.ingressAdded = true;

    await step('add-redirect', h, ctx);
    // `protocol all`: IPv4, IPv6 and ARP alike (Xen redirected IPv4 only).
    await must(
      'tc',
      ['filter', 'add', 'dev', d.ifname, 'parent', 'ffff:', 'protocol', 'all', 'prio', '10', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', ifb],
      at,
      `cannot redirect the ingress of ${d.ifname} to ${ifb}`,
    );
  };

  const scriptSetup = async (h: Handle, ctx: OpContext): Promise<void> => {
    const d = h.data!;
    d.scriptStarted = true;
    const r = await runScript(o.script!, ['setup'], { env: scriptEnv(h, o, ctx.operation, ''), signal: ctx.signal, timeoutMs: o.scriptTimeoutMs });
    const line = r.stdout.split('\n').reverse().find((l) => l.startsWith('ifb='));
    if (!line) {
      throw new RemusError('OP_FAILED', `netbuf script ${o.script} did not print the IFB it chose (a line "ifb=NAME" on stdout)`, {
        details: { stdout: r.stdout.slice(-2000) },
      });
    }
    d.ifb = validateInterfaceName(line.slice(4).trim(), `IFB printed by ${o.script}`);
    const root = await rootQdisc(d.ifb, where(d.netns));
    const want = standIn?.[0] ?? 'plug';
    if (root?.kind !== want) {
      throw new RemusError('OP_FAILED', `netbuf script ${o.script} chose IFB ${d.ifb}, but its root qdisc is ${root?.kind ?? 'missing'}, not ${want}`, {
        details: { ifb: d.ifb, root },
      });
    }
    d.qdiscHandle = root.handle;
  };

  const builtInTeardown = async (d: NicData): Promise<string[]> => {
    if (d.netns !== undefined && !netnsExists(d.netns)) {
      // The namespace is gone, and with it the NIC, its ingress qdisc and our IFB.
      d.ingressAdded = false;
      d.ifb = undefined;
      d.ifbCreated = false;
      return [];
    }
    const at = where(d.netns);
    const problems: string[] = [];
    if (d.ingressAdded) {
      const redirects = await ingressRedirects(d.ifname, at);
      // Ours: only redirects to our IFB (or to a deleted device). Someone else's replacement is left alone.
      const ours = redirects !== undefined && redirects.every((t) => t === d.ifb || t === '*');
      if (ours) {
        const failed = await attempt('tc', ['qdisc', 'del', 'dev', d.ifname, 'ingress'], at);
        if (failed !== undefined && (await ingressKind(d.ifname, at)) !== undefined) problems.push(`cannot remove the ingress qdisc of ${d.ifname}: ${failed}`);
      }
      if (problems.length === 0) d.ingressAdded = false;
    }
    if (d.ifb !== undefined) {
      const link = await linkInfo(d.ifb, at);
      if (link && link.kind === 'ifb' && (d.ifbCreated || link.ifalias === d.tag)) {
        const failed = await attempt('ip', ['link', 'del', 'dev', d.ifb], at);
        if (failed !== undefined && (await linkInfo(d.ifb, at)) !== undefined) problems.push(`cannot delete IFB ${d.ifb}: ${failed}`);
      }
      if (problems.length === 0) {
        d.ifb = undefined;
        d.ifbCreated = false;
      }
    }
    return problems;
  };

  /**
   * Setup's last step for a NIC in this process's namespace: the shared
   * netlink socket (opened on first use), the IFB's ifindex and the parsed
   * handle, so the checkpoint ops do no lookup.
   */
  const openRtnl = async (h: Handle, ctx: OpContext): Promise<void> => {
    const d = h.data!;
    if (!blockChange || !releaseChange) {
      throw new RemusError('INVALID_ARGUMENT', `stand-in qdisc ${JSON.stringify(standIn)} has no netlink encoding (supported: bfifo|pfifo limit N)`);
    }
    if (d.qdiscHandle === undefined || parseHandle(d.qdiscHandle) === undefined) {
      throw new RemusError('OP_FAILED', `IFB ${d.ifb}: cannot use qdisc handle ${JSON.stringify(d.qdiscHandle)} (need a non-zero major:minor)`, {
        details: { step: 'open-channel', handle: d.qdiscHandle },
      });
    }
    if (!h.shared.rtnl?.alive) h.shared.rtnl = RtnlChannel.open(o.commandTimeoutMs);
    const rtnl = h.shared.rtnl;
    d.ifindex = await rtnl.ifindex(d.ifb!, ctx.signal);
    d.rtnl = rtnl;
  };

  const checkpointOp = async (h: Handle, ctx: OpContext, op: 'postsuspend' | 'commit', args: readonly string[]): Promise<void> => {
    const d = h.data;
    if ((!d?.channel && !d?.rtnl) || d.ifb === undefined || d.qdiscHandle === undefined) {
      throw new RemusError('STATE', `${op} on ${h.device.id} before its setup completed`);
    }
    if (d.rtnl) {
      const change = op === 'postsuspend' ? blockChange! : releaseChange!;
      const what = `${op === 'postsuspend' ? 'plug block' : 'plug release'} (${change.kind}) of NIC ${d.ifname} on IFB ${d.ifb}`;
      await d.rtnl.change(d.ifindex!, parseHandle(d.qdiscHandle)!, change, what, ctx.signal);
      return;
    }
    await d.channel!.run(['qdisc', 'change', 'dev', d.ifb, 'root', 'handle', d.qdiscHandle, ...args], ctx.signal);
  };

  return {
    name: 'nic-netbuf',
    kind: 'nic',

    /** Makes the shared state; channels open lazily, one per namespace, at the first setup there. */
    init(): NetbufShared {
      return { channels: new Map(), rtnl: undefined, plugProbe: undefined };
    },

    /** Closes every control channel (ends its tc process) and the netlink socket. Never throws. */
    async cleanup(shared): Promise<void> {
      const opens = [...shared.channels.values()];
      shared.channels.clear();
      shared.rtnl?.close();
      shared.rtnl = undefined;
      await Promise.all(opens.map((p) => p.then((c) => c.close(), () => undefined)));
    },

    /**
     * Takes every NIC whose interface exists when the kernel has sch_plug.
     * Says no to a NIC with `params.buffer: false` (like `xl remus -n`).
     * Throws INVALID_ARGUMENT for bad params, a missing namespace or a
     * missing interface; says no (with the reason) when sch_plug is missing,
     * probed once per operation in a throwaway namespace.
     */
    async match(h, ctx): Promise<MatchResult> {
      const { ifname, netns } = readParams(h.device);
      if (h.device.params?.['buffer'] === false) return noMatch(`buffering is turned off for ${h.device.id} (params.buffer: false)`);
      if (netns !== undefined && !netnsExists(netns)) {
        throw new RemusError('INVALID_ARGUMENT', `device ${h.device.id}: network namespace ${netns} does not exist (see \`ip netns list\`)`, {
          details: { netns },
        });
      }
      if (!(await linkInfo(ifname, where(netns)))) {
        throw new RemusError('INVALID_ARGUMENT', `device ${h.device.id}: interface ${ifname}${inNs(netns)} does not exist; check params.ifname`, {
          details: { ifname, netns },
        });
      }
      if (standIn) return true;
      h.shared.plugProbe ??= probePlug(o.commandTimeoutMs, ctx);
      const missing = await h.shared.plugProbe;
      return missing === undefined ? true : noMatch(missing);
    },

    /**
     * Builds the buffer under the host-wide lock: refuses a foreign ingress
     * qdisc, creates and tags an IFB of its own, installs the plug (holding
     * from the start), brings the IFB up, redirects all ingress of the NIC
     * to it; then opens (or reuses) the namespace's control channel. Each
     * object is recorded as soon as it exists.
     */
    async setup(h, ctx): Promise<void> {
      const { ifname, netns } = readParams(h.device);
      h.data = {
        ifname,
        netns,
        operation: ctx.operation,
        tag: `${TAG_PREFIX}${ctx.operation}:${ifname}`,
        ifb: undefined,
        ifbCreated: false,
        qdiscHandle: undefined,
        ingressAdded: false,
        scriptStarted: false,
        channel: undefined,
        rtnl: undefined,
        ifindex: undefined,
        closed: 0,
        released: 0,
      };
      await withLock(o.lockName, o.lockTimeoutMs, ctx.signal, () => (o.script ? scriptSetup(h, ctx) : builtInSetup(h, ctx)));
      await step('open-channel', h, ctx);
      if (isOwnNamespace(netns)) await openRtnl(h, ctx);
      else h.data.channel = await channelFor(h.shared, netns, ctx);
    },

    /**
     * Removes what setup recorded, under the lock: the NIC's ingress qdisc
     * (only while it still redirects to our IFB), then our IFB with its
     * plug (packets still held are dropped). Or runs the operator's script
     * with `teardown`. Idempotent; works after a setup that failed anywhere.
     */
    async teardown(h): Promise<void> {
      const d = h.data;
      if (!d) return;
      d.channel = undefined;
      d.rtnl = undefined;
      const problems = await withLock(o.lockName, o.lockTimeoutMs, undefined, async () => {
        if (!o.script) return builtInTeardown(d);
        if (!d.scriptStarted) return [];
        await runScript(o.script, ['teardown'], { env: scriptEnv(h, o, d.operation, d.ifb ?? ''), timeoutMs: o.scriptTimeoutMs });
        d.scriptStarted = false;
        d.ifb = undefined;
        return [];
      });
      if (problems.length > 0) {
        throw new RemusError('OP_FAILED', `teardown of ${d.ifname}${inNs(d.netns)} left objects behind: ${problems.join('; ')}`, {
          details: { problems },
        });
      }
    },

    /** Closes the current epoch: plug BUFFER, one netlink request on the shared in-process socket (own namespace) or one line on the namespace's tc channel. */
    async postsuspend(h, ctx): Promise<void> {
      await checkpointOp(h, ctx, 'postsuspend', blockArgs);
      h.data!.closed++;
    },

    /** Releases the oldest closed epoch: plug RELEASE_ONE, one netlink request on the shared in-process socket (own namespace) or one line on the namespace's tc channel. */
    async commit(h, ctx): Promise<void> {
      await checkpointOp(h, ctx, 'commit', releaseArgs);
      h.data!.released++;
    },

    /**
     * Removes a crashed run's objects: in each namespace of `devices` (the
     * host's if none), every IFB tagged `remus-netbuf:<operation>:`, and the
     * ingress qdisc of its NIC if that still redirects only to it.
     */
    async reap(operation, devices, ctx): Promise<readonly string[]> {
      validateOperationId(operation);
      const spaces = new Set<string | undefined>();
      for (const dev of devices) if (dev.kind === 'nic') spaces.add(readParams(dev).netns);
      if (spaces.size === 0) spaces.add(undefined);
      const prefix = `${TAG_PREFIX}${operation}:`;
      return withLock(o.lockName, o.lockTimeoutMs, ctx.signal, async () => {
        const removed: string[] = [];
        for (const netns of spaces) {
          if (netns !== undefined && !netnsExists(netns)) continue;
          const at = where(netns);
          for (const ifb of await listIfbs(at)) {
            if (!ifb.ifalias.startsWith(prefix)) continue;
            const nic = ifb.ifalias.slice(prefix.length);
            const redirects = isInterfaceName(nic) ? await ingressRedirects(nic, at) : undefined;
            if (redirects && redirects.length > 0 && redirects.every((t) => t === ifb.ifname)) {
              await must('tc', ['qdisc', 'del', 'dev', nic, 'ingress'], at, `cannot remove the ingress qdisc of ${nic}`);
              removed.push(`removed ingress qdisc of ${nic}${inNs(netns)} (redirected to ${ifb.ifname})`);
            }
            await must('ip', ['link', 'del', 'dev', ifb.ifname], at, `cannot delete IFB ${ifb.ifname}`);
            removed.push(`removed IFB ${ifb.ifname}${inNs(netns)} tagged ${ifb.ifalias}`);
          }
        }
        return removed;
      });
    },

    /** Epochs closed, released and still held, as counted by this process (no I/O). */
    stats(h): Readonly<Record<string, number>> {
      const d = h.data;
      if (!d) return { epochsClosed: 0, epochsReleased: 0, epochsHeld: 0 };
      return { epochsClosed: d.closed, epochsReleased: d.released, epochsHeld: Math.max(0, d.closed - d.released) };
    },
  };
}

interface CheckedOptions {
  readonly limitBytes: number;
  readonly script: string | undefined;
  readonly scriptTimeoutMs: number;
  readonly commandTimeoutMs: number;
  readonly lockTimeoutMs: number;
  readonly lockName: string;
  readonly tcPath: string;
}

function checkOptions(options: NicNetbufOptions): CheckedOptions {
  if (options === null || typeof options !== 'object') throw new RemusError('INVALID_ARGUMENT', 'nic-netbuf options must be an object');
  const positive = (v: unknown, what: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > max) {
      throw new RemusError('INVALID_ARGUMENT', `nic-netbuf option ${what} must be a positive integer up to ${max}, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const script = options.script;
  if (script !== undefined && (typeof script !== 'string' || !script.startsWith('/'))) {
    throw new RemusError('INVALID_ARGUMENT', `nic-netbuf option script must be an absolute path, got ${JSON.stringify(script)}`);
  }
  const tcPath = options.tcPath ?? 'tc';
  if (typeof tcPath !== 'string' || tcPath === '') throw new RemusError('INVALID_ARGUMENT', 'nic-netbuf option tcPath must be a non-empty string');
  return {
    limitBytes: positive(options.limitBytes, 'limitBytes', DEFAULT_LIMIT, 0xffff_ffff),
    script,
    scriptTimeoutMs: positive(options.scriptTimeoutMs, 'scriptTimeoutMs', 30_000),
    commandTimeoutMs: positive(options.commandTimeoutMs, 'commandTimeoutMs', 10_000),
    lockTimeoutMs: positive(options.lockTimeoutMs, 'lockTimeoutMs', 20_000),
    lockName: validateName(options.lockName ?? 'remus-nic-netbuf', 'nic-netbuf option lockName'),
    tcPath,
  };
}

/** The NIC's interface (params.ifname, else the device id) and namespace; throws INVALID_ARGUMENT. */
function readParams(device: DeviceSpec): { ifname: string; netns: string | undefined } {
  const p = device.params ?? {};
  const ifname = validateInterfaceName(p['ifname'] ?? device.id, `device ${device.id}: params.ifname`);
  const netns = p['netns'] === undefined ? undefined : validateName(p['netns'], `device ${device.id}: params.netns`);
  return { ifname, netns };
}

/**
 * True when `netns` is this process's network namespace: no namespace, or a
 * named one (`/run/netns/NAME`) that is the same kernel object as
 * `/proc/self/ns/net`. Only then can an in-process netlink socket reach it.
 */
function isOwnNamespace(netns: string | undefined): boolean {
  if (netns === undefined) return true;
  try {
    const mine = statSync('/proc/self/ns/net');
    const named = statSync(`/run/netns/${netns}`);
    return mine.ino === named.ino && mine.dev === named.dev;
  } catch {
    return false;
  }
}

/** The stand-in's change as a netlink message: `bfifo|pfifo limit N` -> struct tc_fifo_qopt; else undefined. */
function fifoChange(args: readonly string[]): QdiscChange | undefined {
  const [kind, key, value] = args;
  if ((kind !== 'bfifo' && kind !== 'pfifo') || key !== 'limit' || args.length !== 3 || !/^\d+$/.test(value ?? '')) return undefined;
  return { kind, options: fifoOptions(Number(value)) };
}

function isInterfaceName(name: string): boolean {
  try {
    validateInterfaceName(name);
    return true;
  } catch {
    return false;
  }
}

function scriptEnv(h: Handle, o: CheckedOptions, operation: string, ifb: string): Record<string, string> {
  const d = h.data!;
  return {
    vifname: d.ifname,
    IFB: ifb,
    REMUS_DEVICE: h.device.id,
    REMUS_NETNS: d.netns ?? '',
    REMUS_OPERATION: operation,
    REMUS_TAG: d.tag,
    REMUS_PLUG_LIMIT: String(o.limitBytes),
  };
}

/**
 * Tries a plug qdisc on a scratch IFB inside a throwaway namespace.
 * Resolves undefined when sch_plug works, else the reason it does not.
 */
async function probePlug(timeoutMs: number, ctx: OpContext): Promise<string | undefined> {
  const ns = `remus-netbuf-probe-${process.pid}-${randomBytes(3).toString('hex')}`;
  const host: Where = { netns: undefined, timeoutMs };
  await must('ip', ['netns', 'add', ns], host, 'cannot create a namespace to probe for sch_plug');
  try {
    if (ctx.signal.aborted) throw abortError(ctx.signal, 'sch_plug probe aborted');
    const inside: Where = { netns: ns, timeoutMs };
    const noIfb = await attempt('ip', ['link', 'add', PROBE_IFB, 'type', 'ifb'], inside);
    if (noIfb !== undefined) return `the kernel cannot create IFB devices (${noIfb})`;
    const noPlug = await attempt('tc', ['qdisc', 'add', 'dev', PROBE_IFB, 'root', 'handle', '1:', 'plug', 'limit', '10000'], inside);
    if (noPlug === undefined) return undefined;
    if (/unknown/i.test(noPlug)) return `the kernel lacks sch_plug (tc: ${noPlug}); load module sch_plug or use a kernel built with CONFIG_NET_SCH_PLUG`;
    return `a plug qdisc cannot be installed: ${noPlug}`;
  } finally {
    await attempt('ip', ['netns', 'del', ns], host);
  }
}

function foreignIngress(d: NicData, kind: string): RemusError {
  return new RemusError(
    'OP_FAILED',
    `interface ${d.ifname}${inNs(d.netns)} already has an ${kind} qdisc that this operation did not create ` +
      '(another program, another Remus operation buffering this NIC, or a crashed run); ' +
      `if it is not in use, remove it (\`tc${d.netns === undefined ? '' : ` -n ${d.netns}`} qdisc del dev ${d.ifname} ${kind === 'clsact' ? 'clsact' : 'ingress'}\`), ` +
      'or reap the crashed operation',
    { details: { step: 'check-ingress', ifname: d.ifname, netns: d.netns, kind } },
  );
}

function plugHint(ifb: string, standIn: readonly string[] | undefined): string {
  return standIn ? `cannot add the ${standIn[0]} qdisc to ${ifb}` : `cannot add the plug qdisc to ${ifb} (does the kernel have sch_plug?)`;
}

function inNs(netns: string | undefined): string {
  return netns === undefined ? '' : ` (network namespace ${netns})`;
}

function abortError(signal: AbortSignal, what: string): RemusError {
  const r: unknown = signal.reason;
  if (r instanceof RemusError) return r;
  return new RemusError('ABORTED', what, { cause: r });
}
