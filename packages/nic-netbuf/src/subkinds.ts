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
import { statSync } from 'node:fs';
import {
  abortError,
  netnsExists,
  NIC_PARAMS,
  noMatch,
  readNicParams,
  RemusError,
  requireNetns,
  missingInterface,
  validateInterfaceName,
  validateCount,
  validateDuration,
  validateName,
  validateOperationId,
  type DeviceSpec,
  type MatchResult,
  type OpContext,
  type SubkindOps,
  checkOptionNames,
} from '@remus/core';
import { TcChannel } from './channel.js';
import { nativeControl, netlinkControl, tcControl } from './control.js';
import { loadNativeRtnl, NativeRtnlChannel } from './native.js';
import { inNs, type Handle, type NetbufShared, type NicData } from './data.js';
import { ingressRedirects, linkInfo, listIfbs, must, type Where } from './kernel.js';
import { withLock } from './lock.js';
import { schPlug, type BufferQdisc } from './qdisc.js';
import { builtInRecipe, checkScriptDeviceId, scriptRecipe, type Recipe, type SetupStep } from './recipe.js';
import { RtnlChannel } from './rtnl.js';

export { SETUP_STEPS, type SetupStep } from './recipe.js';

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
  /**
   * How checkpoint ops reach a NIC's qdisc. `auto` (default): the native
   * synchronous netlink socket of the NIC's namespace when the package's
   * addon is built, else `event`. `native`: that socket, or setup fails
   * (UNSUPPORTED_HOST) when the addon is missing. `event`: the event-driven
   * channels (the in-process `netlink` socket in this process's namespace,
   * a `tc -batch` process in others).
   */
  readonly channel?: 'auto' | 'native' | 'event';
}

/**
 * Test-only knobs, not exported from the package entry (the same shape as
 * nic-nfqueue's). `qdisc` replaces sch_plug by another buffering qdisc (on a
 * kernel without sch_plug, tests inject a bfifo stand-in at the same place,
 * sent the same changes through the same channels; test/fixtures/stand-in.mjs).
 * `beforeStep` runs before each setup step; throwing there injects a failure.
 */
export interface NetbufInternals {
  readonly qdisc?: BufferQdisc;
  readonly beforeStep?: (step: SetupStep, handle: Handle) => void | Promise<void>;
}

const TAG_PREFIX = 'remus-netbuf:';
const DEFAULT_LIMIT = 10_000_000;
/** Longest a native checkpoint op waits for the kernel's ACK on the main thread (it normally answers in microseconds). */
const NATIVE_TIMEOUT_MS = 1000;

/**
 * Makes the `nic-netbuf` ops. Throws INVALID_ARGUMENT for bad options.
 * Devices: `{ kind: 'nic', params: { ifname?, netns?, buffer? } }` (the
 * core's `nic` params); `ifname` defaults to the device id; `buffer: false`
 * declines the NIC.
 */
export function nicNetbuf(options: NicNetbufOptions = {}): SubkindOps<NetbufShared, NicData> {
  return createNetbuf(options, {});
}

/** {@link nicNetbuf} with test-only internals (see {@link NetbufInternals}). */
export function createNetbuf(options: NicNetbufOptions, internals: NetbufInternals): SubkindOps<NetbufShared, NicData> {
  const o = checkOptions(options);
  const qdisc = internals.qdisc ?? schPlug(o.limitBytes);
  const where = (netns: string | undefined): Where => ({ netns, timeoutMs: o.commandTimeoutMs });

  const step = async (name: SetupStep, h: Handle, ctx: OpContext): Promise<void> => {
    if (ctx.signal.aborted) throw abortError(ctx.signal, `setup of ${h.data?.ifname} stopped before ${name}`);
    await internals.beforeStep?.(name, h);
  };
  const recipe: Recipe = o.script
    ? scriptRecipe(qdisc, { path: o.script, timeoutMs: o.scriptTimeoutMs, commandTimeoutMs: o.commandTimeoutMs, limitBytes: o.limitBytes })
    : builtInRecipe(qdisc, o.commandTimeoutMs, step);

  /** The tc batch channel of a namespace other than this process's; a dead one is replaced here (setup may spawn), never in a checkpoint op. */
  const channelFor = (shared: NetbufShared, netns: string, ctx: OpContext): Promise<TcChannel> => {
    let open = shared.channels.get(netns);
    open = open ? open.then((c) => (c.alive ? c : reopen())) : reopen();
    shared.channels.set(netns, open);
    return open;
    function reopen(): Promise<TcChannel> {
      const p = TcChannel.open(netns, { tcPath: o.tcPath, signal: ctx.signal, timeoutMs: o.commandTimeoutMs });
      p.catch(() => {
        if (shared.channels.get(netns) === open) shared.channels.delete(netns);
      });
      return p;
    }
  };

  /**
   * Setup's last step: the NIC's plug control. In this process's namespace,
   * the operation's netlink socket (opened on first use); elsewhere, the
   * namespace's tc channel.
   */
  const openControl = async (h: Handle, ctx: OpContext): Promise<void> => {
    const d = h.data!;
    const ifb = d.ifb!;
    const handle = d.qdiscHandle!;
    if (o.channel !== 'event') {
      const addon = loadNativeRtnl();
      if ('missing' in addon) {
        if (o.channel === 'native') throw new RemusError('UNSUPPORTED_HOST', addon.missing);
      } else {
        const own = isOwnNamespace(d.netns);
        const key = own ? '' : d.netns!;
        let channel = h.shared.native.get(key);
        if (!channel?.alive) {
          channel = new NativeRtnlChannel(addon, own ? undefined : d.netns);
          h.shared.native.set(key, channel);
        }
        d.control = nativeControl(channel, ifb, handle, Math.min(o.commandTimeoutMs, NATIVE_TIMEOUT_MS));
        return;
      }
    }
    if (isOwnNamespace(d.netns)) {
      if (!h.shared.rtnl?.alive) h.shared.rtnl = RtnlChannel.open(o.commandTimeoutMs);
      d.control = await netlinkControl(h.shared.rtnl, ifb, handle, ctx.signal);
    } else {
      d.control = tcControl(await channelFor(h.shared, d.netns!, ctx), ifb, handle);
    }
  };

  const checkpointOp = async (h: Handle, ctx: OpContext, op: 'postsuspend' | 'commit'): Promise<void> => {
    const d = h.data;
    if (!d?.control) throw new RemusError('STATE', `${op} on ${h.device.id} before its setup completed`);
    const change = op === 'postsuspend' ? qdisc.block : qdisc.release;
    const what = `${op === 'postsuspend' ? 'plug block' : 'plug release'} (${change.netlink.kind}) of NIC ${d.ifname} on IFB ${d.ifb}`;
    await d.control.change(change, what, ctx.signal);
  };

  return {
    name: 'nic-netbuf',
    kind: 'nic',
    params: NIC_PARAMS,

    /**
     * Checks the device's `nic` params without touching the host (and, with
     * an operator script, that its id can be passed to it). Throws INVALID_ARGUMENT.
     */
    checkParams(device: DeviceSpec): void {
      const { buffer } = readNicParams(device);
      if (o.script && buffer) checkScriptDeviceId(device.id, o.script);
    },

    /** Makes the shared state; channels open lazily, one per namespace, at the first setup there. */
    init(): NetbufShared {
      return { channels: new Map(), native: new Map(), rtnl: undefined, probe: undefined };
    },

    /** Closes every control channel (ends its tc process) and the netlink socket. Never throws. */
    async cleanup(shared): Promise<void> {
      const opens = [...shared.channels.values()];
      shared.channels.clear();
      shared.rtnl?.close();
      shared.rtnl = undefined;
      for (const c of shared.native.values()) c.close();
      shared.native.clear();
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
      const { ifname, netns, buffer } = readNicParams(h.device);
      if (!buffer) return noMatch(`buffering is turned off for ${h.device.id} (params.buffer: false)`);
      requireNetns(h.device, netns);
      if (!(await linkInfo(ifname, where(netns)))) throw missingInterface(h.device, ifname, netns);
      h.shared.probe ??= qdisc.probe(o.commandTimeoutMs, ctx.signal);
      const missing = await h.shared.probe;
      return missing === undefined ? true : noMatch(missing);
    },

    /**
     * Builds the buffer under the host-wide lock with the recipe (built in:
     * refuses a foreign ingress qdisc, creates and tags an IFB of its own,
     * installs the plug (holding from the start), brings the IFB up,
     * redirects all ingress of the NIC to it; or the operator's script); then
     * opens the NIC's plug control. Each object is recorded as soon as it exists.
     */
    async setup(h, ctx): Promise<void> {
      const { ifname, netns } = readNicParams(h.device);
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
        control: undefined,
        closed: 0,
        released: 0,
      };
      await withLock(o.lockName, o.lockTimeoutMs, ctx.signal, () => recipe.setup(h, ctx));
      await step('open-channel', h, ctx);
      await openControl(h, ctx);
    },

    /**
     * Removes what setup recorded, under the lock, with the recipe (built in:
     * the NIC's ingress qdisc, only while it still redirects to our IFB,
     * then our IFB with its plug; packets still held are dropped; or the
     * operator's script with `teardown`). Idempotent; works after a setup
     * that failed anywhere.
     */
    async teardown(h): Promise<void> {
      const d = h.data;
      if (!d) return;
      d.control = undefined;
      const problems = await withLock(o.lockName, o.lockTimeoutMs, undefined, () => recipe.teardown(h));
      if (problems.length > 0) {
        throw new RemusError('OP_FAILED', `teardown of ${d.ifname}${inNs(d.netns)} left objects behind: ${problems.join('; ')}`, {
          details: { problems },
        });
      }
    },

    /** Closes the current epoch: plug BUFFER, one request on the NIC's plug control (netlink socket or tc channel). */
    async postsuspend(h, ctx): Promise<void> {
      await checkpointOp(h, ctx, 'postsuspend');
      h.data!.closed++;
    },

    /** Releases the oldest closed epoch: plug RELEASE_ONE, one request on the NIC's plug control (netlink socket or tc channel). */
    async commit(h, ctx): Promise<void> {
      await checkpointOp(h, ctx, 'commit');
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
      for (const dev of devices) if (dev.kind === 'nic') spaces.add(readNicParams(dev).netns);
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
  readonly channel: 'auto' | 'native' | 'event';
}

function checkOptions(options: NicNetbufOptions): CheckedOptions {
  if (options === null || typeof options !== 'object') throw new RemusError('INVALID_ARGUMENT', 'nic-netbuf options must be an object');
  checkOptionNames(options, ['limitBytes', 'script', 'scriptTimeoutMs', 'commandTimeoutMs', 'lockTimeoutMs', 'lockName', 'tcPath', 'channel'], 'nic-netbuf');
  const count = (v: unknown, what: string, fallback: number): number => (v === undefined ? fallback : validateCount(v, `nic-netbuf option ${what}`, { max: 0xffff_ffff }));
  const ms = (v: unknown, what: string, fallback: number): number => (v === undefined ? fallback : validateDuration(v, `nic-netbuf option ${what}`, { min: 1 }));
  const script = options.script;
  if (script !== undefined && (typeof script !== 'string' || !script.startsWith('/'))) {
    throw new RemusError('INVALID_ARGUMENT', `nic-netbuf option script must be an absolute path, got ${JSON.stringify(script)}`);
  }
  const tcPath = options.tcPath ?? 'tc';
  if (typeof tcPath !== 'string' || tcPath === '') throw new RemusError('INVALID_ARGUMENT', 'nic-netbuf option tcPath must be a non-empty string');
  const channel = options.channel ?? 'auto';
  if (channel !== 'auto' && channel !== 'native' && channel !== 'event') {
    throw new RemusError('INVALID_ARGUMENT', `nic-netbuf option channel must be "auto", "native" or "event", got ${JSON.stringify(channel)}`);
  }
  return {
    channel,
    limitBytes: count(options.limitBytes, 'limitBytes', DEFAULT_LIMIT),
    script,
    scriptTimeoutMs: ms(options.scriptTimeoutMs, 'scriptTimeoutMs', 30_000),
    commandTimeoutMs: ms(options.commandTimeoutMs, 'commandTimeoutMs', 10_000),
    lockTimeoutMs: ms(options.lockTimeoutMs, 'lockTimeoutMs', 20_000),
    lockName: validateName(options.lockName ?? 'remus-nic-netbuf', 'nic-netbuf option lockName'),
    tcPath,
  };
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

function isInterfaceName(name: string): boolean {
  try {
    validateInterfaceName(name);
    return true;
  } catch {
    return false;
  }
}
