/**
 * The agent's configuration file: one JSON file shared by both hosts of a
 * pair; each agent is told which host it is (`--host`). Everything is
 * checked before anything is started or contacted; every problem is an
 * INVALID_ARGUMENT naming the field and the fix.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import {
  RemusError,
  closestName,
  describeCause,
  formatSocketAddress,
  isLoopbackHost,
  parseRealtimeMode,
  parseSocketAddress,
  validateDuration,
  type RealtimeMode,
  type SocketAddress,
} from '@remus/core';

/** One host of the pair. */
export interface HostConfig {
  /** Host name: the CN of its certificate, its name in etcd. `[a-z][a-z0-9-]{0,31}`. */
  readonly name: string;
  /** Where its agent listens for the other agent (TLS, mutual authentication). */
  readonly peer: { readonly host: string; readonly port: number };
  /** Where the protected service listens while this host is primary. */
  readonly service: { readonly host: string; readonly port: number };
}

/** The protected service. */
export type ServiceConfig = { readonly type: 'counter' } | ProcessServiceConfig | CriuServiceConfig;

/** The output buffer of a command's replies: a NIC subkind of a plugin installed next to the config. */
export interface ServiceOutputConfig {
  readonly package: string;
  readonly subkind: string;
  /** Its device params (a NIC subkind's `ifname`, `netns`...). */
  readonly params: Readonly<Record<string, unknown>>;
  /** Where the plugin is resolved from (the config's directory). */
  readonly from: readonly string[];
}

/**
 * `process`: the operator's command under @remus/domain-process (frozen at
 * each checkpoint), whose state is the file `stateFile` (the command keeps it
 * and replaces it atomically: write a temporary file, rename), replicated at
 * each checkpoint while frozen; its replies leave through `output`, a NIC
 * subkind of a plugin installed next to the config (e.g. nic-nfqueue on the
 * host side of the service's own network namespace).
 */
export interface ProcessServiceConfig {
  readonly type: 'process';
  /** Argument vector, the program by its absolute path (no shell, no PATH lookup). */
  readonly command: readonly string[];
  /** Absolute path of the state file. */
  readonly stateFile: string;
  /** The output buffer: plugin package, subkind and its device params. */
  readonly output: ServiceOutputConfig;
}

/**
 * `criu`: the operator's command under @remus/domain-criu. Its state is its
 * memory, files and TCP connections: at each checkpoint the frozen process
 * tree is dumped with CRIU (incremental over the last acknowledged dump) and
 * the images travel to the backup inside the agents' authenticated session;
 * a promoted backup restores the tree from its last complete checkpoint
 * (same PIDs, the same sockets: the service's network namespace must carry
 * the same addresses on both hosts). Replies leave through `output` as for
 * `process`.
 */
export interface CriuServiceConfig {
  readonly type: 'criu';
  /** Argument vector that starts the service on a fresh pair (absolute program path; `{host}` replaced). */
  readonly command: readonly string[];
  /** The service's network namespace name (`{host}` replaced): criu dumps and restores in it. Default: the agent's own. */
  readonly netns?: string;
  /** This host's image directory (`{host}` replaced; absolute). Default `<stateDir>/criu`. */
  readonly workDir: string;
  /** criu program, absolute. Default: `criu` on PATH, /usr/sbin, /sbin. */
  readonly criuPath?: string;
  /** Extra `criu dump` arguments (an argument vector, e.g. `["--ext-unix-sk"]`). */
  readonly dumpArgs: readonly string[];
  /** A full dump every this many checkpoints. Default 50. */
  readonly fullEvery?: number;
  readonly output: ServiceOutputConfig;
}

/**
 * The `service.type` values the agent knows (each one a workload, see workload.ts):
 * `counter`, the agent's built-in replicated counter service (one line in, one
 * JSON reply out carrying the counter and the epoch that released it), what the
 * nemesis harness protects; `process` and `criu` (above).
 */
export const SERVICE_TYPES = ['counter', 'process', 'criu'] as const;
export type ServiceType = (typeof SERVICE_TYPES)[number];

/** Validated configuration (paths absolute). */
export interface AgentConfig {
  /** Cluster name: the OU of every certificate, part of the etcd prefix. `[a-z0-9-]{1,32}`. */
  readonly cluster: string;
  /** Exactly two hosts, distinct names and addresses. */
  readonly hosts: readonly [HostConfig, HostConfig];
  readonly etcd: {
    /** `host:port` of each member; at least three (a third voter decides, never one host alone). */
    readonly endpoints: readonly string[];
    /** Election prefix. Default `/remus/<cluster>/primary`. */
    readonly prefix: string;
  };
  /** PEM files; `{host}` in a path is replaced by this host's name. */
  readonly tls: { readonly ca: string; readonly cert: string; readonly key: string };
  /** Lease TTL in whole seconds (>= 2). */
  readonly ttlSeconds: number;
  /** Subtracted from every role deadline, and waited after the old lease is gone. Default max(250, 10 % of TTL). */
  readonly marginMs: number;
  /** Optional hard fence run before every promotion; non-zero exit blocks it. */
  readonly hardFence?: { readonly command: readonly string[]; readonly timeoutMs: number };
  readonly service: ServiceConfig;
  /** Between checkpoints, ms. Default 50. */
  readonly intervalMs: number;
  /** Time limit of each checkpoint step (the backup's ack included), ms. Default 2000. */
  readonly stepTimeoutMs: number;
  /**
   * The primary's checkpoint loop under SCHED_FIFO (core's `applyRealtime`): `auto` tries and runs at
   * normal priority when the host refuses, `on` gives the role back on such a host, `off` (default) never
   * asks. Off by default: the agent's thread also carries TLS, the state stream and the arbiter, and a
   * real-time task cannot be moved into a cpu cgroup without real-time runtime (see the README).
   */
  readonly realtime: RealtimeMode;
  /** Epoch store and control socket live here; `{host}` is replaced. Default `/var/lib/remus-agent/{host}`. */
  readonly stateDir: string;
}

const TOP = ['cluster', 'hosts', 'etcd', 'tls', 'ttlSeconds', 'marginMs', 'hardFence', 'service', 'intervalMs', 'stepTimeoutMs', 'realtime', 'stateDir'];
const HOST_KEYS = ['name', 'peer', 'service'];
const NAME = /^[a-z][a-z0-9-]{0,31}$/;
const CLUSTER = /^[a-z0-9][a-z0-9-]{0,31}$/;
const NETNS = /^[A-Za-z0-9_.-]{1,64}$/;

function bad(message: string): RemusError {
  return new RemusError('INVALID_ARGUMENT', message);
}

function object(value: unknown, what: string, known: readonly string[]): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad(`${what} must be an object`);
  for (const k of Object.keys(value)) {
    if (!known.includes(k)) {
      const near = closestName(k, known);
      throw bad(`${what}: unknown field ${JSON.stringify(k)}${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''}; known: ${known.join(', ')}`);
    }
  }
  return value as Record<string, unknown>;
}

function string(value: unknown, what: string): string {
  if (typeof value !== 'string' || value === '') throw bad(`${what} must be a non-empty string`);
  return value;
}

function tcp(value: unknown, what: string): { host: string; port: number } {
  const a: SocketAddress = parseSocketAddress(value, what);
  if ('path' in a) throw bad(`${what} must be HOST:PORT`);
  return a;
}

/** A plugin package name (npm's rules, scoped or not). */
const PACKAGE = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;

function argv(value: unknown, what: string, example: string): string[] {
  if (!Array.isArray(value) || value.length === 0 || !value.every((x) => typeof x === 'string' && x !== '' && !x.includes('\0'))) {
    throw bad(`${what} must be an argument vector (a non-empty array of strings, no shell text), e.g. ${example}`);
  }
  if (!isAbsolute(value[0] as string)) throw bad(`${what}[0] ${JSON.stringify(value[0])} must be an absolute path (no PATH lookup), e.g. ${JSON.stringify(JSON.parse(example)[0])}`);
  return value as string[];
}

function output(value: unknown, base: string): ServiceOutputConfig {
  const out = object(value, 'service.output', ['package', 'subkind', 'params']);
  const pkg = string(out.package, 'service.output.package');
  if (!PACKAGE.test(pkg)) throw bad(`service.output.package ${JSON.stringify(pkg)} is not a package name, e.g. "@remus/nic-nfqueue"`);
  const subkind = string(out.subkind, 'service.output.subkind');
  const params = out.params === undefined ? {} : object(out.params, 'service.output.params', out.params !== null && typeof out.params === 'object' ? Object.keys(out.params) : []);
  return { package: pkg, subkind, params, from: [base] };
}

function processService(value: unknown, base: string): ProcessServiceConfig {
  const s = object(value, 'service', ['type', 'command', 'stateFile', 'output']);
  const command = argv(s.command, 'service.command', '["/usr/bin/node", "/srv/counter.js"]');
  const stateFile = string(s.stateFile, 'service.stateFile');
  if (stateFile.includes('\0')) throw bad('service.stateFile must be a path');
  return { type: 'process', command, stateFile: resolve(base, stateFile), output: output(s.output, base) };
}

function criuService(value: unknown, base: string, stateDir: string): CriuServiceConfig {
  const s = object(value, 'service', ['type', 'command', 'netns', 'workDir', 'criuPath', 'dumpArgs', 'fullEvery', 'output']);
  const command = argv(s.command, 'service.command', '["/usr/bin/python3", "/srv/counter.py"]');
  let netns: string | undefined;
  if (s.netns !== undefined) {
    netns = string(s.netns, 'service.netns');
    if (!NETNS.test(forHost(netns, 'h'))) throw bad(`service.netns ${JSON.stringify(netns)} must be a network namespace name (letters, digits, "_", "." and "-"; {host} allowed), as \`ip netns list\` shows it`);
  }
  const workDir = s.workDir === undefined ? join(stateDir, 'criu') : string(s.workDir, 'service.workDir');
  if (workDir.includes('\0')) throw bad('service.workDir must be a path');
  let criuPath: string | undefined;
  if (s.criuPath !== undefined) {
    criuPath = string(s.criuPath, 'service.criuPath');
    if (!isAbsolute(criuPath)) throw bad(`service.criuPath ${JSON.stringify(criuPath)} must be an absolute path, e.g. "/usr/sbin/criu"`);
  }
  let dumpArgs: string[] = [];
  if (s.dumpArgs !== undefined) {
    if (!Array.isArray(s.dumpArgs) || !s.dumpArgs.every((x) => typeof x === 'string' && /^--[a-z][a-z0-9-]*(=[^\0]*)?$/.test(x))) {
      throw bad('service.dumpArgs must be criu dump options, each one string "--name" or "--name=value", e.g. ["--ext-unix-sk", "--file-locks"]');
    }
    dumpArgs = s.dumpArgs as string[];
  }
  const fullEvery = s.fullEvery === undefined ? undefined : s.fullEvery;
  if (fullEvery !== undefined && !(typeof fullEvery === 'number' && Number.isInteger(fullEvery) && fullEvery >= 1 && fullEvery <= 100_000)) {
    throw bad(`service.fullEvery ${JSON.stringify(fullEvery)} must be a whole number of checkpoints from 1 to 100000`);
  }
  return {
    type: 'criu',
    command,
    ...(netns !== undefined ? { netns } : {}),
    workDir: resolve(base, workDir),
    ...(criuPath !== undefined ? { criuPath } : {}),
    dumpArgs,
    ...(fullEvery !== undefined ? { fullEvery: fullEvery as number } : {}),
    output: output(s.output, base),
  };
}

/** Checks a parsed config object; `base` resolves relative paths (the config file's directory). */
export function validateAgentConfig(value: unknown, base: string = process.cwd()): AgentConfig {
  const o = object(value, 'agent config', TOP);
  const cluster = string(o.cluster, 'cluster');
  if (!CLUSTER.test(cluster)) throw bad(`cluster ${JSON.stringify(cluster)} must be 1-32 characters of a-z, 0-9 and "-"`);
  if (!Array.isArray(o.hosts) || o.hosts.length !== 2) {
    throw bad(`hosts must list exactly two hosts (the pair), each { name, peer: "HOST:PORT", service: "HOST:PORT" }; got ${Array.isArray(o.hosts) ? o.hosts.length : typeof o.hosts}`);
  }
  const hosts = o.hosts.map((h, i): HostConfig => {
    const x = object(h, `hosts[${i}]`, HOST_KEYS);
    const name = string(x.name, `hosts[${i}].name`);
    if (!NAME.test(name)) throw bad(`hosts[${i}].name ${JSON.stringify(name)} must be 1-32 characters of a-z, 0-9 and "-", starting with a letter`);
    const peer = tcp(x.peer, `hosts[${i}].peer`);
    const service = tcp(x.service, `hosts[${i}].service`);
    if (peer.port === 0 || service.port === 0) throw bad(`hosts[${i}] (${name}): ports must be fixed, not 0 (the other host connects to them)`);
    return { name, peer, service };
  }) as [HostConfig, HostConfig];
  const [a, b] = hosts;
  if (a.name === b.name) throw bad(`hosts names host ${JSON.stringify(a.name)} twice: a pair is two different hosts (a host cannot be its own backup)`);
  if (formatSocketAddress(a.peer) === formatSocketAddress(b.peer)) {
    throw bad(`hosts ${a.name} and ${b.name} have the same peer address ${formatSocketAddress(a.peer)}: a pair is two different hosts`);
  }
  for (const h of hosts) {
    if (isLoopbackHost(h.peer.host)) throw bad(`hosts ${h.name}: peer address ${formatSocketAddress(h.peer)} is loopback; the other host cannot reach it`);
  }

  const etcd = object(o.etcd, 'etcd', ['endpoints', 'prefix']);
  if (!Array.isArray(etcd.endpoints) || etcd.endpoints.length < 3) {
    throw bad('etcd.endpoints must list at least three members ("HOST:PORT"): a third voter decides, never one of the two hosts alone (ha.md rule 1)');
  }
  const endpoints = etcd.endpoints.map((e, i) => formatSocketAddress(tcp(e, `etcd.endpoints[${i}]`)));
  if (new Set(endpoints).size !== endpoints.length) throw bad(`etcd.endpoints names a member twice (${endpoints.join(', ')})`);
  const prefix = etcd.prefix === undefined ? `/remus/${cluster}/primary` : string(etcd.prefix, 'etcd.prefix');
  if (!prefix.startsWith('/')) throw bad(`etcd.prefix ${JSON.stringify(prefix)} must start with "/"`);

  const tls = object(o.tls, 'tls', ['ca', 'cert', 'key']);
  const path = (v: unknown, what: string): string => {
    const p = string(v, what);
    return isAbsolute(p) ? p : resolve(base, p);
  };

  const ttlSeconds = o.ttlSeconds === undefined ? 5 : o.ttlSeconds;
  if (typeof ttlSeconds !== 'number' || !Number.isInteger(ttlSeconds) || ttlSeconds < 2 || ttlSeconds > 3600) {
    throw bad(`ttlSeconds ${JSON.stringify(ttlSeconds)} must be a whole number of seconds from 2 (etcd's minimum) to 3600`);
  }
  const marginMs = o.marginMs === undefined ? Math.max(250, ttlSeconds * 100) : validateDuration(o.marginMs, 'marginMs', { min: 1 });
  if (marginMs >= (ttlSeconds * 1000) / 2) throw bad(`marginMs ${marginMs} must be below half the TTL (${ttlSeconds * 500} ms)`);

  let hardFence: AgentConfig['hardFence'];
  if (o.hardFence !== undefined) {
    const f = object(o.hardFence, 'hardFence', ['command', 'timeoutMs']);
    if (!Array.isArray(f.command) || f.command.length === 0 || !f.command.every((x) => typeof x === 'string' && x !== '')) {
      throw bad('hardFence.command must be an argument vector (a non-empty array of strings, no shell text), e.g. ["/usr/local/bin/fence-peer", "--pdu", "pdu1"]');
    }
    hardFence = { command: f.command as string[], timeoutMs: f.timeoutMs === undefined ? 10_000 : validateDuration(f.timeoutMs, 'hardFence.timeoutMs', { min: 1 }) };
  }

  const serviceType = (o.service as { type?: unknown } | undefined)?.type ?? 'counter';
  if (!(SERVICE_TYPES as readonly unknown[]).includes(serviceType)) {
    const near = typeof serviceType === 'string' ? closestName(serviceType, SERVICE_TYPES) : undefined;
    throw bad(`service.type ${JSON.stringify(serviceType)} is not known${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''}; known: ${SERVICE_TYPES.map((t) => JSON.stringify(t)).join(', ')}`);
  }
  const stateDir = o.stateDir === undefined ? '/var/lib/remus-agent/{host}' : path(o.stateDir, 'stateDir');
  const service: ServiceConfig =
    serviceType === 'process'
      ? processService(o.service, base)
      : serviceType === 'criu'
        ? criuService(o.service, base, stateDir)
        : (object(o.service ?? { type: 'counter' }, 'service', ['type']), { type: 'counter' });

  const intervalMs = o.intervalMs === undefined ? 50 : validateDuration(o.intervalMs, 'intervalMs', { min: 1 });
  const stepTimeoutMs = o.stepTimeoutMs === undefined ? 2000 : validateDuration(o.stepTimeoutMs, 'stepTimeoutMs', { min: 1 });
  const realtime = o.realtime === undefined ? 'off' : parseRealtimeMode(o.realtime, 'realtime');
  return {
    cluster,
    hosts,
    etcd: { endpoints, prefix },
    tls: { ca: path(tls.ca, 'tls.ca'), cert: path(tls.cert, 'tls.cert'), key: path(tls.key, 'tls.key') },
    ttlSeconds,
    marginMs,
    ...(hardFence ? { hardFence } : {}),
    service,
    intervalMs,
    stepTimeoutMs,
    realtime,
    stateDir,
  };
}

/** Reads and checks a config file (JSON). */
export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw bad(`cannot read the agent config ${file}: ${describeCause(e)}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw bad(`agent config ${file} is not valid JSON: ${describeCause(e)}`);
  }
  try {
    return validateAgentConfig(value, dirname(resolve(file)));
  } catch (e) {
    if (e instanceof RemusError) throw new RemusError(e.code, `${file}: ${e.message}`, { cause: e.cause });
    throw e;
  }
}

/** This host and the other one, by name. INVALID_ARGUMENT when `host` is not in the config. */
export function pairOf(config: AgentConfig, host: string): { self: HostConfig; peer: HostConfig } {
  const i = config.hosts.findIndex((h) => h.name === host);
  if (i < 0) throw bad(`host ${JSON.stringify(host)} is not in the config (hosts: ${config.hosts.map((h) => h.name).join(', ')}); pass --host with one of them`);
  return { self: config.hosts[i] as HostConfig, peer: config.hosts[1 - i] as HostConfig };
}

/** `path` with `{host}` replaced. */
export function forHost(path: string, host: string): string {
  return path.replaceAll('{host}', host);
}
