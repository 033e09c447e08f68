/**
 * The `nic-nfqueue` subkind: holds what a guest sends through one NIC in a
 * kernel NFQUEUE, per epoch, and releases an epoch with batch verdicts
 * when its checkpoint is committed. For kernels without `sch_plug`.
 */
import {
  NIC_PARAMS,
  missingInterface,
  netnsExists,
  noMatch,
  readNicParams,
  RemusError,
  requireNetns,
  validateDuration,
  validateName,
  type DeviceHandle,
  type DeviceSpec,
  type MatchResult,
  type OpContext,
  type SubkindOps,
  checkOptionNames,
} from '@remus/core';
import { BufferProcess, InProcessBuffer, type BufferEndpoint, type QueueStats } from './buffer-client.js';
import {
  deleteRule,
  ensureBridgeNetfilter,
  findRules,
  insertRule,
  lookupLink,
  probeBridge,
  probeHost,
  queueNumbersInUse,
  ruleSpec,
  ruleTag,
  type Family,
  type HostCommands,
  type HostProbe,
  type LinkInfo,
  type Mode,
} from './host.js';

/** The steps of `setup`, in order; fault injection (tests) and error details name them. */
export const SETUP_STEPS = ['resolve', 'buffer-process', 'bridge-netfilter', 'bind-queue', 'rule-ipv4', 'rule-ipv6', 'verify'] as const;
export type SetupStep = (typeof SETUP_STEPS)[number];

/** Options of {@link nicNfqueue}. */
export interface NicNfqueueOptions {
  /**
   * Network namespace (a name under /run/netns) of devices that give no
   * `params.netns`. Undefined: the namespace this process runs in. Its
   * buffer starts at `init`.
   */
  readonly netns?: string;
  /**
   * Where the buffer of a device in this process's own namespace runs.
   * `true` (default): in this process (no pipe round trip per checkpoint
   * op; packet messages are read on this process's event loop). `false`: in
   * a buffer process, as for every other namespace.
   */
  readonly inProcess?: boolean;
  /** Cap on packets held per NIC (the kernel queue's length). Default 10 000. */
  readonly maxPackets?: number;
  /** Cap on bytes held per NIC (original packet lengths). Default 64 MiB. */
  readonly maxBytes?: number;
  /** Queue numbers this subkind may take, inclusive. Default [47100, 47355]. */
  readonly queueRange?: readonly [number, number];
  /** `ip` command. Default `ip`. */
  readonly ip?: string;
  /** iptables command; `<it>-save` must exist too. Default `iptables` (the system's choice of nft or legacy). */
  readonly iptables?: string;
  /** ip6tables command; `<it>-save` must exist too. Default `ip6tables`. */
  readonly ip6tables?: string;
  /** Time limit for a buffer process to start. Default 10 000 ms. */
  readonly startTimeoutMs?: number;
}

/**
 * Test-only knobs, not exported from the package entry (the same shape as
 * nic-netbuf's). `beforeStep` runs before each setup step; throwing there
 * injects a failure at that step (teardown must then clean up).
 */
export interface NfqueueInternals {
  readonly beforeStep?: (step: SetupStep, handle: DeviceHandle<Shared, NicData>) => void | Promise<void>;
}

/**
 * Shared state of one operation.
 * Invariant: `buffers` has at most one entry per namespace (key '' = this
 * process's namespace); every entry is stopped by `cleanup`.
 */
interface Shared {
  readonly probe: HostProbe;
  readonly buffers: Map<string, Promise<BufferEndpoint>>;
}

/**
 * Per-device data, filled by setup as each resource comes into existence.
 * `queueBound` and `rulesMaybe` are set BEFORE the step that creates the
 * resource runs, so teardown also cleans up a step that was cut short.
 */
interface NicData {
  readonly netns: string | undefined;
  readonly ifname: string;
  readonly tag: string;
  mode?: Mode;
  bridge?: string;
  /** Bridge netfilter switches setup turned on (left on; see README). */
  bridgeSwitches?: string[];
  buffer?: BufferEndpoint;
  /** A bind was asked for: teardown must unbind by tag. */
  queueBound?: boolean;
  queue?: number;
  /** Rules may exist in these families: teardown must look for them. */
  rulesMaybe: Family[];
  /** Latest figures from the buffer. */
  stats?: QueueStats;
  tornDown?: boolean;
  /** The checkpoint whose mark found nothing held (its commit needs no request), else undefined. */
  emptyEpoch?: number;
  /** Commits answered here because their epoch was empty (added to the buffer's `epochs`). */
  emptyCommits: number;
}

/** How long a checkpoint request to the buffer may take at most (the core's op timeout usually fires first). */
const REQUEST_TIMEOUT_MS = 10_000;

function nsKey(netns: string | undefined): string {
  return netns ?? '';
}

/** The device params this subkind reads: the common `nic` ones and `mode`. */
const PARAMS = [...NIC_PARAMS, 'mode'] as const;

interface DeviceParams {
  readonly ifname: string;
  readonly netns: string | undefined;
  readonly buffer: boolean;
  readonly mode: Mode | 'auto';
}

/** Reads and validates a device's params (the core's `nic` reader plus `mode`); pure, throws INVALID_ARGUMENT. */
function readParams(device: DeviceSpec, defaultNetns: string | undefined): DeviceParams {
  const { ifname, netns, buffer } = readNicParams(device);
  const mode = device.params?.['mode'] ?? 'auto';
  if (mode !== 'auto' && mode !== 'routed' && mode !== 'bridged') {
    throw new RemusError('INVALID_ARGUMENT', `device ${device.id}: params.mode must be "routed", "bridged" or "auto", not ${JSON.stringify(mode)}`);
  }
  return { ifname, netns: netns ?? defaultNetns, buffer, mode };
}

/** The mode a device is handled in: its `params.mode`, or bridged exactly when the interface is a bridge port. */
function resolveMode(device: DeviceSpec, params: DeviceParams, link: LinkInfo): Mode {
  const mode = params.mode === 'auto' ? (link.bridge ? 'bridged' : 'routed') : params.mode;
  if (mode === 'bridged' && !link.bridge) {
    throw new RemusError('INVALID_ARGUMENT', `device ${device.id}: mode "bridged" but ${params.ifname} is not a bridge port`);
  }
  return mode;
}

/** The interface in its namespace; INVALID_ARGUMENT (the core's one error for NIC subkinds) when the namespace or interface is missing. */
async function findLink(cmds: HostCommands, device: DeviceSpec, params: DeviceParams, signal: AbortSignal): Promise<LinkInfo> {
  requireNetns(device, params.netns);
  const link = await lookupLink(cmds, params.netns, params.ifname, signal);
  if (!link) throw missingInterface(device, params.ifname, params.netns);
  return link;
}

function positiveInt(v: unknown, what: string, fallback: number, max = 2 ** 32 - 1): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw new RemusError('INVALID_ARGUMENT', `nic-nfqueue: ${what} must be an integer from 1 to ${max}, not ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Makes the `nic-nfqueue` subkind. Validates the options at once (throws
 * INVALID_ARGUMENT); touches nothing until the core calls its ops.
 */
export function nicNfqueue(options: NicNfqueueOptions = {}): SubkindOps<Shared, NicData> {
  return createNfqueue(options, {});
}

/** {@link nicNfqueue} with test-only internals (see {@link NfqueueInternals}). */
export function createNfqueue(options: NicNfqueueOptions, internals: NfqueueInternals): SubkindOps<Shared, NicData> {
  checkOptionNames(options, ['netns', 'inProcess', 'maxPackets', 'maxBytes', 'queueRange', 'ip', 'iptables', 'ip6tables', 'startTimeoutMs'], 'nic-nfqueue');
  const defaultNetns = options.netns === undefined ? undefined : validateName(options.netns, 'nic-nfqueue: options.netns');
  const maxPackets = positiveInt(options.maxPackets, 'maxPackets', 10_000);
  const maxBytes = positiveInt(options.maxBytes, 'maxBytes', 64 << 20, Number.MAX_SAFE_INTEGER);
  const [first, last] = options.queueRange ?? [47100, 47355];
  if (!Number.isInteger(first) || !Number.isInteger(last) || first < 0 || last > 65535 || first > last) {
    throw new RemusError('INVALID_ARGUMENT', `nic-nfqueue: queueRange must be [first, last] within 0-65535, not ${JSON.stringify(options.queueRange)}`);
  }
  const cmds: HostCommands = {
    ip: options.ip ?? 'ip',
    iptables: options.iptables ?? 'iptables',
    ip6tables: options.ip6tables ?? 'ip6tables',
  };
  if (options.inProcess !== undefined && typeof options.inProcess !== 'boolean') {
    throw new RemusError('INVALID_ARGUMENT', `nic-nfqueue: inProcess must be true or false, not ${JSON.stringify(options.inProcess)}`);
  }
  const inProcess = options.inProcess ?? true;
  const startTimeoutMs = options.startTimeoutMs === undefined ? 10_000 : validateDuration(options.startTimeoutMs, 'nic-nfqueue: startTimeoutMs', { min: 1 });

  /**
   * The buffer of a namespace, started on first use (at most once per operation): in this
   * process for its own namespace (unless `inProcess: false`), else a buffer process.
   */
  const bufferFor = (shared: Shared, netns: string | undefined, signal: AbortSignal): Promise<BufferEndpoint> => {
    const key = nsKey(netns);
    let p = shared.buffers.get(key);
    if (!p) {
      p =
        netns === undefined && inProcess
          ? Promise.resolve().then(() => InProcessBuffer.open(signal))
          : BufferProcess.start({ netns, ip: cmds.ip, timeoutMs: startTimeoutMs, signal });
      shared.buffers.set(key, p);
      // A failed start must not stay cached as the namespace's buffer.
      p.catch(() => {
        if (shared.buffers.get(key) === p) shared.buffers.delete(key);
      });
    }
    return p;
  };

  const step = async (s: SetupStep, handle: DeviceHandle<Shared, NicData>): Promise<void> => {
    await internals.beforeStep?.(s, handle);
  };

  const checkpointRequest = async (handle: DeviceHandle<Shared, NicData>, op: 'mark' | 'release', ctx: OpContext): Promise<void> => {
    const d = handle.data;
    if (!d?.buffer || d.queue === undefined) {
      throw new RemusError('STATE', `device ${handle.device.id} has no bound queue: setup did not finish`);
    }
    // postsuspend must wait for the answer: the boundary is the last packet the
    // buffer has seen when it handles the request, so it must handle
    // it before the guest resumes (afterwards it would take in epoch N+1).
    const reply = await d.buffer.request({ op, queue: d.queue, checkpoint: ctx.checkpoint }, ctx.signal, REQUEST_TIMEOUT_MS);
    if (reply.stats) d.stats = reply.stats;
    if (op === 'mark') d.emptyEpoch = reply.empty === true ? ctx.checkpoint : undefined;
  };

  return {
    name: 'nic-nfqueue',
    kind: 'nic',
    params: PARAMS,

    /** Checks the device's params (the `nic` ones and `mode`) without touching the host; throws INVALID_ARGUMENT. */
    checkParams(device): void {
      readParams(device, defaultNetns);
    },

    /**
     * Probes the host once (nfnetlink_queue, NFQUEUE target, iptables and
     * ip6tables) and, if it can buffer, starts the buffer (the
     * shared netlink socket) for the default namespace.
     */
    async init(ctx) {
      const probe = await probeHost(cmds, ctx.signal);
      const shared: Shared = { probe, buffers: new Map() };
      if (probe.ok && (defaultNetns === undefined || netnsExists(defaultNetns))) {
        await bufferFor(shared, defaultNetns, ctx.signal);
      }
      return shared;
    },

    /** Stops every buffer (closing their sockets unbinds any queue left, and the kernel drops what it held). */
    async cleanup(shared) {
      const all = [...shared.buffers.values()];
      shared.buffers.clear();
      await Promise.all(all.map(async (p) => (await p.catch(() => undefined))?.stop()));
    },

    /**
     * Takes a NIC (`params.ifname`, else the device id) when the host can
     * buffer it. Says no (with a reason) to a NIC with `params.buffer:
     * false`, when the kernel or tools lack NFQUEUE support, or when a
     * bridged port lacks bridge netfilter. Throws INVALID_ARGUMENT when the
     * params are invalid or the interface or namespace is missing.
     */
    async match(handle, ctx): Promise<MatchResult> {
      const params = readParams(handle.device, defaultNetns);
      if (!params.buffer) return noMatch(`buffering is turned off for ${handle.device.id} (params.buffer: false)`);
      requireNetns(handle.device, params.netns);
      if (!handle.shared.probe.ok) return noMatch(handle.shared.probe.reason);
      const link = await findLink(cmds, handle.device, params, ctx.signal);
      if (resolveMode(handle.device, params, link) === 'bridged') {
        const b = probeBridge();
        if (!b.ok) return noMatch(b.reason);
      }
      return true;
    },

    /**
     * Starts (or reuses) the namespace's buffer (in this process for its own namespace), binds a free queue
     * number, and inserts the IPv4 and IPv6 rules that queue what the guest
     * sends through the interface. Records each resource before making it.
     */
    async setup(handle, ctx) {
      const { device } = handle;
      await step('resolve', handle);
      const params = readParams(device, defaultNetns);
      const d: NicData = { netns: params.netns, ifname: params.ifname, tag: ruleTag(ctx.operation, device.id), rulesMaybe: [], emptyCommits: 0 };
      handle.data = d;
      const link = await findLink(cmds, device, params, ctx.signal);
      d.mode = resolveMode(device, params, link);
      d.bridge = link.bridge;

      await step('buffer-process', handle);
      d.buffer = await bufferFor(handle.shared, d.netns, ctx.signal);

      if (d.mode === 'bridged') {
        await step('bridge-netfilter', handle);
        d.bridgeSwitches = await ensureBridgeNetfilter(cmds, d.netns, d.bridge!, ctx.signal);
      }

      await step('bind-queue', handle);
      const exclude = await queueNumbersInUse(cmds, d.netns, ctx.signal);
      d.queueBound = true;
      const bound = await d.buffer.request(
        { op: 'bind', tag: d.tag, exclude, first, last, maxPackets, maxBytes, copyRange: 1 },
        ctx.signal,
        REQUEST_TIMEOUT_MS,
      );
      d.queue = bound.queue;
      if (bound.stats) d.stats = bound.stats;

      for (const family of ['ipv4', 'ipv6'] as const) {
        await step(family === 'ipv4' ? 'rule-ipv4' : 'rule-ipv6', handle);
        d.rulesMaybe.push(family);
        await insertRule(cmds, d.netns, family, ruleSpec(d.mode, d.ifname, d.tag, d.queue!), ctx.signal);
      }

      await step('verify', handle);
      // The queue is bound by a buffer that is still alive: the rules point at a live buffer.
      if (!d.buffer.alive) {
        throw new RemusError('OP_FAILED', `buffer for ${device.id} died during setup (${d.buffer.describeExit()})`);
      }
    },

    /**
     * Unbinds the NIC's queue first (the kernel DROPS what it still holds:
     * that output belongs to an epoch no backup committed), then deletes every
     * rule tagged for this device. Idempotent; works after a failed or cut
     * short setup; a dead buffer counts as already unbound.
     */
    async teardown(handle, ctx) {
      const d = handle.data;
      if (!d) return;
      const errors: unknown[] = [];
      if (d.queueBound && d.buffer?.alive) {
        try {
          const r = await d.buffer.request({ op: 'unbind', tag: d.tag }, ctx.signal, REQUEST_TIMEOUT_MS);
          if (r.stats) d.stats = r.stats;
        } catch (e) {
          // A buffer that died meanwhile unbound everything by dying.
          if (d.buffer.alive) errors.push(e);
        }
      }
      d.queueBound = false;
      // A namespace that is gone took its rules with it.
      if (d.netns !== undefined && !netnsExists(d.netns)) d.rulesMaybe = [];
      if (d.rulesMaybe.length > 0) {
        // Every rule is tried even when one fails; every failure is kept.
        try {
          const mine = (t: string): boolean => t === d.tag;
          for (const rule of await findRules(cmds, d.netns, mine, ctx.signal)) {
            await deleteRule(cmds, d.netns, rule, ctx.signal).catch((e: unknown) => errors.push(e));
          }
          const left = await findRules(cmds, d.netns, mine, ctx.signal);
          if (left.length > 0) throw new Error(`rules still present after delete: ${left.map((r) => r.spec.join(' ')).join('; ')}`);
          d.rulesMaybe = [];
        } catch (e) {
          errors.push(e);
        }
      }
      d.tornDown = true;
      if (errors.length > 0) {
        const problems = errors.map((e) => (e instanceof Error ? e.message : String(e)));
        throw new RemusError('OP_FAILED', `teardown of ${handle.device.id} left something behind: ${problems.join('; ')}`, {
          details: { problems },
          cause: errors.length === 1 ? errors[0] : new AggregateError(errors, `${errors.length} teardown steps failed`),
        });
      }
    },

    /** Records the epoch boundary: the last packet the buffer has seen belongs to the epoch just closed. */
    async postsuspend(handle, ctx) {
      await checkpointRequest(handle, 'mark', ctx);
    },

    /** Releases every packet up to the recorded boundary with batch verdicts (ACKed; a small first one puts the first packets on the wire sooner); order is kept. */
    async commit(handle, ctx) {
      const d = handle.data;
      // The buffer held nothing when this epoch closed (its mark said so): nothing to release, no round trip.
      if (d?.emptyEpoch !== undefined && d.emptyEpoch === ctx.checkpoint && d.buffer?.alive) {
        d.emptyEpoch = undefined;
        d.emptyCommits++;
        return;
      }
      await checkpointRequest(handle, 'release', ctx);
    },

    /**
     * Deletes the rules a crashed operation left, in the namespace of each of
     * its devices (and the default one). Its queues died with its buffer
     * processes (they exit when their parent's pipe closes).
     */
    async reap(operation, devices, ctx) {
      const spaces = new Set<string | undefined>([defaultNetns]);
      for (const dev of devices) if (dev.kind === 'nic') spaces.add(readParams(dev, defaultNetns).netns);
      const prefix = `remus:${operation}:`;
      const removed: string[] = [];
      // The crashed run may have used another backend than this factory's
      // (legacy vs nft): look in each, one after the other, so a backend
      // reached under two names finds its rules only once.
      const backends: { cmds: HostCommands; required: boolean }[] = [
        { cmds, required: true },
        { cmds: { ...cmds, iptables: 'iptables-legacy', ip6tables: 'ip6tables-legacy' }, required: false },
        { cmds: { ...cmds, iptables: 'iptables-nft', ip6tables: 'ip6tables-nft' }, required: false },
      ];
      for (const ns of spaces) {
        if (ns !== undefined && !netnsExists(ns)) continue;
        for (const b of backends) {
          let rules;
          try {
            rules = await findRules(b.cmds, ns, (t) => t.startsWith(prefix), ctx.signal);
          } catch (e) {
            if (b.required || ctx.signal.aborted) throw e;
            continue; // That backend is not installed.
          }
          for (const rule of rules) {
            await deleteRule(b.cmds, ns, rule, ctx.signal);
            const bin = rule.family === 'ipv4' ? b.cmds.iptables : b.cmds.ip6tables;
            removed.push(`${bin} raw PREROUTING rule ${rule.tag} (queue ${rule.queue ?? '?'})${ns === undefined ? '' : ` in netns ${ns}`}`);
          }
        }
      }
      return removed;
    },

    /**
     * held/released/dropped packets (and bytes), as the buffer last
     * reported them (every checkpoint op, and every ~250 ms while they
     * change); `bufferAlive` is 0 once the buffer is gone.
     */
    stats(handle): Record<string, number> {
      const d = handle.data;
      const s = (d?.queue !== undefined ? d.buffer?.latestStats(d.queue) : undefined) ?? d?.stats;
      const alive = d?.buffer?.alive ? 1 : 0;
      if (!s) return { held: 0, released: 0, dropped: 0, bufferAlive: alive };
      return {
        held: s.held,
        heldBytes: s.heldBytes,
        released: s.released,
        releasedBytes: s.releasedBytes,
        dropped: s.dropped,
        capDropped: s.capDropped,
        queueFullDropped: s.queueFullDropped,
        socketDropped: s.socketDropped,
        flushDropped: s.flushDropped,
        epochs: s.epochs + (d?.emptyCommits ?? 0),
        queue: s.queue,
        bufferAlive: alive,
        bufferPid: d?.buffer?.pid ?? 0,
      };
    },
  };
}
