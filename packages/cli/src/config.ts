/**
 * The `remus run` configuration file (JSON): its shape, defaults, and the
 * validation that runs before anything on the host is touched. Every problem
 * is reported with its JSON path (`devices[1].kind`) and how to fix it.
 */
import { readFileSync } from 'node:fs';
import { REALTIME_MODES, RemusError, closestName, type DeviceSpec, type OpName, type OpTimeouts, type RealtimeMode } from '@remus/core';
import { validateCriuDomain, type CriuDomainConfig } from './criu/config.js';
import { MAX_DEPTH, isArgv, isObject, num, oneOf, tooDeep, unknownKeys, type Report } from './validation.js';

/** Who acknowledges checkpoints of the process domain (see @remus/domain-process). */
export type AckConfig =
  | { readonly type: 'local' }
  | { readonly type: 'immediate' }
  | { readonly type: 'remote'; readonly host: string; readonly port: number }
  | { readonly type: 'remote'; readonly path: string };

export interface ProcessDomainConfig {
  readonly type: 'process';
  /** Command to start and protect (argument vector). Exactly one of `command` and `pid`. */
  readonly command?: readonly string[];
  /** Running process to protect, with its descendants. */
  readonly pid?: number;
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly cgroup: 'auto' | 'v1' | 'v2';
  readonly ack: AckConfig;
}

export interface PluginConfig {
  /** Package name, resolved from the config file's directory, then from the remus install. */
  readonly package: string;
  /** Subkind name -> its options, in the order they join the ops list. */
  readonly subkinds: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

/** A validated configuration with defaults filled in. */
export interface RemusConfig {
  readonly intervalMs: number;
  readonly schedule: 'after-commit' | 'fixed-rate';
  /**
   * The checkpoint loop's thread under SCHED_FIFO (core's `enterRealtime`): `auto` tries and
   * runs at normal priority with a warning when the host refuses, `on` fails the run then,
   * `off` never asks.
   */
  readonly realtime: RealtimeMode;
  readonly maxCheckpoints: number | undefined;
  readonly durationMs: number | undefined;
  readonly onFailure: 'resume' | 'leave-suspended';
  readonly domainTimeoutMs: number;
  readonly timeouts: OpTimeouts;
  readonly domain: ProcessDomainConfig | CriuDomainConfig;
  readonly plugins: readonly PluginConfig[];
  readonly devices: readonly DeviceSpec[];
}

/** One thing wrong with a configuration. */
export interface ConfigProblem {
  /** JSON path, e.g. `devices[1].kind` (`$` for the whole file). */
  readonly path: string;
  readonly message: string;
  /** What to write instead. */
  readonly fix: string;
}

const TOP_KEYS = ['$schema', 'intervalMs', 'schedule', 'realtime', 'maxCheckpoints', 'durationMs', 'onFailure', 'domainTimeoutMs', 'timeouts', 'domain', 'plugins', 'devices'];
const DOMAIN_KEYS = ['type', 'command', 'pid', 'cwd', 'env', 'cgroup', 'ack'];
const PLUGIN_KEYS = ['package', 'subkinds'];
const DEVICE_KEYS = ['id', 'kind', 'params'];
const OP_NAMES: readonly OpName[] = ['init', 'cleanup', 'match', 'setup', 'teardown', 'postsuspend', 'preresume', 'commit', 'reap'];

/** Reads and validates a config file. Throws INVALID_ARGUMENT listing every problem. */
export function loadConfig(file: string): RemusConfig {
  return validateConfig(readJsonFile(file), file);
}

/** Reads a JSON file; INVALID_ARGUMENT when it cannot be read or parsed (path `$`). */
export function readJsonFile(file: string, what = 'config'): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new RemusError('INVALID_ARGUMENT', `cannot read ${what} ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw configError(file, [{ path: '$', message: `is not valid JSON (${(e as Error).message})`, fix: 'fix the JSON syntax (no comments or trailing commas)' }]);
  }
}

/** Validates a parsed config and fills in defaults. Throws INVALID_ARGUMENT listing every problem. */
export function validateConfig(raw: unknown, source = 'config'): RemusConfig {
  const { config, problems } = checkConfig(raw);
  if (problems.length > 0 || config === undefined) throw configError(source, problems);
  return config;
}

/**
 * Validates a parsed config without throwing: every problem found, and the
 * config with defaults filled in (undefined when the value is not an object
 * or nests deeper than {@link MAX_DEPTH}; otherwise as far as it could be
 * read, for further checks that report their problems alongside).
 */
export function checkConfig(raw: unknown): { config: RemusConfig | undefined; problems: ConfigProblem[] } {
  const problems: ConfigProblem[] = [];
  const p = (path: string, message: string, fix: string): void => void problems.push({ path, message, fix });
  if (!isObject(raw)) {
    return { config: undefined, problems: [{ path: '$', message: 'must be a JSON object', fix: 'write { "domain": {...}, "plugins": [...], "devices": [...] }' }] };
  }
  const deep = tooDeep(raw);
  if (deep !== undefined) {
    return { config: undefined, problems: [{ path: deep, message: `nests deeper than ${MAX_DEPTH} levels`, fix: 'a remus config is a few levels deep: remove the nesting' }] };
  }
  unknownKeys(raw, TOP_KEYS, '', p);
  const intervalMs = num(raw, 'intervalMs', '', p, { def: 200, min: 1, fix: 'milliseconds between checkpoints, at least 1, e.g. 200 (Xen) or 25 (40 per second)' });
  const schedule = oneOf(raw, 'schedule', '', p, ['after-commit', 'fixed-rate'], 'after-commit');
  const realtime = oneOf(raw, 'realtime', '', p, REALTIME_MODES, 'auto');
  const maxCheckpoints = num(raw, 'maxCheckpoints', '', p, { min: 1, integer: true, fix: 'a whole number of checkpoints >= 1, or leave it out to run until stopped' });
  const durationMs = num(raw, 'durationMs', '', p, { min: 1, fix: 'milliseconds to run before stopping, or leave it out to run until stopped' });
  const onFailure = oneOf(raw, 'onFailure', '', p, ['resume', 'leave-suspended'], 'resume');
  const domainTimeoutMs = num(raw, 'domainTimeoutMs', '', p, { def: 30_000, min: 1, fix: 'milliseconds each domain step may take, e.g. 30000' }) as number;
  const timeouts: Record<string, number> = {};
  if (raw.timeouts !== undefined) {
    if (!isObject(raw.timeouts)) p('timeouts', 'must be an object', `map op names (${OP_NAMES.join(', ')}) to milliseconds`);
    else {
      unknownKeys(raw.timeouts, OP_NAMES, 'timeouts', p);
      for (const op of OP_NAMES) {
        const v = num(raw.timeouts, op, 'timeouts', p, { min: 1, fix: 'a time limit in milliseconds, e.g. 5000' });
        if (v !== undefined) timeouts[op] = v;
      }
    }
  }
  const domain = validateDomain(raw.domain, p);
  const plugins = validatePlugins(raw.plugins, p);
  const devices = validateDevices(raw.devices, p);
  const config: RemusConfig = {
    intervalMs: intervalMs as number,
    schedule: schedule as RemusConfig['schedule'],
    realtime: realtime as RemusConfig['realtime'],
    maxCheckpoints,
    durationMs,
    onFailure: onFailure as RemusConfig['onFailure'],
    domainTimeoutMs,
    timeouts,
    domain: domain as ProcessDomainConfig | CriuDomainConfig,
    plugins,
    devices,
  };
  return { config, problems };
}


function validateDomain(d: unknown, p: Report): ProcessDomainConfig | CriuDomainConfig | undefined {
  if (d === undefined) {
    p('domain', 'is missing', 'add "domain": { "type": "process", "command": ["node", "server.js"] } (or "pid": 1234)');
    return undefined;
  }
  if (!isObject(d)) {
    p('domain', 'must be an object', 'write { "type": "process", "command": [...] }');
    return undefined;
  }
  if (d.type === 'criu') return validateCriuDomain(d, p);
  if (d.type !== 'process') {
    const near = typeof d.type === 'string' ? closestName(d.type, ['process', 'criu']) : undefined;
    p('domain.type', `${JSON.stringify(d.type)} is not a domain type this remus knows`, `${near ? `did you mean "${near}"? ` : ''}use "process" (a Linux process tree, @remus/domain-process) or "criu" (its memory and TCP connections too, @remus/domain-criu)`);
    // The type decides which keys a domain has: with a type this remus does not know, its keys are not judged.
    if (typeof d.type === 'string') return undefined;
  }
  unknownKeys(d, DOMAIN_KEYS, 'domain', p);
  const hasCommand = d.command !== undefined;
  const hasPid = d.pid !== undefined;
  if (hasCommand === hasPid) {
    p('domain', hasCommand ? 'has both command and pid' : 'has neither command nor pid', 'give exactly one: "command": ["prog", "arg"] to start a process, or "pid": 1234 to protect a running one');
  }
  if (hasCommand && !isArgv(d.command)) {
    p('domain.command', 'must be a non-empty array of non-empty strings', 'an argument vector, e.g. ["node", "server.js", "--port", "8080"] (no shell text)');
  }
  if (hasPid && !(Number.isInteger(d.pid) && (d.pid as number) > 1)) p('domain.pid', `${JSON.stringify(d.pid)} is not a process id`, 'an integer pid > 1 of a running process');
  if (d.cwd !== undefined && typeof d.cwd !== 'string') p('domain.cwd', 'must be a string', 'a directory path');
  if (d.env !== undefined && (!isObject(d.env) || Object.values(d.env).some((v) => typeof v !== 'string'))) {
    p('domain.env', 'must map names to strings', 'e.g. { "PORT": "8080" }');
  }
  const cgroup = oneOf(d, 'cgroup', 'domain', p, ['auto', 'v1', 'v2'], 'auto');
  const ack = validateAck(d.ack, p);
  return { type: 'process', command: d.command as string[] | undefined, pid: d.pid as number | undefined, cwd: d.cwd as string | undefined, env: d.env as Record<string, string> | undefined, cgroup: cgroup as ProcessDomainConfig['cgroup'], ack };
}

function validateAck(a: unknown, p: Report): AckConfig {
  if (a === undefined) return { type: 'local' };
  const fix = 'use { "type": "local" } (in-process backup), { "type": "remote", "host": "10.0.0.2", "port": 7788 } or { "type": "immediate" } (no backup)';
  if (!isObject(a)) {
    p('domain.ack', 'must be an object', fix);
    return { type: 'local' };
  }
  if (a.type === 'local' || a.type === 'immediate') {
    unknownKeys(a, ['type'], 'domain.ack', p);
    return { type: a.type };
  }
  if (a.type !== 'remote') {
    p('domain.ack.type', `${JSON.stringify(a.type)} is not an ack type`, fix);
    return { type: 'local' };
  }
  unknownKeys(a, ['type', 'host', 'port', 'path'], 'domain.ack', p);
  if (typeof a.path === 'string' && a.host === undefined && a.port === undefined) return { type: 'remote', path: a.path };
  if (typeof a.host !== 'string' || a.host === '') p('domain.ack.host', 'must be a host name or address', 'e.g. "10.0.0.2", or give "path" for a Unix socket');
  if (!(Number.isInteger(a.port) && (a.port as number) > 0 && (a.port as number) < 65536)) p('domain.ack.port', `${JSON.stringify(a.port)} is not a TCP port`, 'an integer 1-65535, where `remus backup --listen` listens');
  return { type: 'remote', host: a.host as string, port: a.port as number };
}

function validatePlugins(list: unknown, p: Report): PluginConfig[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) {
    p('plugins', 'must be an array', 'e.g. [{ "package": "@remus/nic-nfqueue", "subkinds": { "nic-nfqueue": {} } }]');
    return [];
  }
  const out: PluginConfig[] = [];
  const seen = new Map<string, string>();
  list.forEach((x, i) => {
    const at = `plugins[${i}]`;
    if (!isObject(x)) {
      p(at, 'must be an object', '{ "package": "@remus/nic-nfqueue", "subkinds": { "nic-nfqueue": {} } }');
      return;
    }
    unknownKeys(x, PLUGIN_KEYS, at, p);
    if (typeof x.package !== 'string' || !/^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i.test(x.package)) {
      p(`${at}.package`, `${JSON.stringify(x.package)} is not a package name`, 'the npm package of the plugin, e.g. "@remus/nic-netbuf"');
    }
    if (!isObject(x.subkinds) || Object.keys(x.subkinds).length === 0) {
      p(`${at}.subkinds`, 'must name at least one subkind', 'map subkind names to their options, e.g. { "nic-netbuf": {} }; `remus doctor` lists what each plugin provides');
      return;
    }
    for (const [name, opts] of Object.entries(x.subkinds)) {
      if (!isObject(opts)) p(`${at}.subkinds.${name}`, 'must be an object of options', 'use {} for the defaults');
      const first = seen.get(name);
      if (first) p(`${at}.subkinds.${name}`, `is already used by ${first}`, 'each subkind may appear once in the ops list');
      seen.set(name, `${at}.subkinds.${name}`);
    }
    out.push({ package: x.package as string, subkinds: x.subkinds as PluginConfig['subkinds'] });
  });
  return out;
}

/** Checks a device list (`{ id, kind, params }`, unique ids) found at JSON path `path`. */
export function validateDevices(list: unknown, p: Report, path = 'devices'): DeviceSpec[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) {
    p(path, 'must be an array', 'e.g. [{ "id": "guest0", "kind": "nic", "params": { ... } }]');
    return [];
  }
  const seen = new Map<string, number>();
  list.forEach((d, i) => {
    const at = `${path}[${i}]`;
    if (!isObject(d)) {
      p(at, 'must be an object', '{ "id": "guest0", "kind": "nic", "params": { ... } }');
      return;
    }
    unknownKeys(d, DEVICE_KEYS, at, p);
    if (typeof d.id !== 'string' || d.id === '') p(`${at}.id`, 'must be a non-empty string', 'a unique name for the device, e.g. "vif1.0"');
    else if (seen.has(d.id)) p(`${at}.id`, `"${d.id}" is already the id of ${path}[${seen.get(d.id)}]`, 'device ids must be unique');
    else seen.set(d.id, i);
    if (typeof d.kind !== 'string' || d.kind === '') p(`${at}.kind`, 'must be a non-empty string', 'the device kind, e.g. "nic" or "disk"');
    if (d.params !== undefined && !isObject(d.params)) p(`${at}.params`, 'must be an object', 'kind-specific parameters, e.g. { "interface": "vif1.0" }');
  });
  return list as DeviceSpec[];
}

/** One INVALID_ARGUMENT error listing every problem, one line each: `path: message (fix)`. */
export function configError(source: string, problems: readonly ConfigProblem[], code: 'INVALID_ARGUMENT' | 'PLUGIN_NOT_FOUND' | 'PLUGIN_INVALID' | 'PLUGIN_INCOMPATIBLE' = 'INVALID_ARGUMENT'): RemusError {
  const lines = problems.map((x) => `  ${x.path}: ${x.message}; fix: ${x.fix}`);
  return new RemusError(code, `${source}: ${problems.length} problem(s) in the configuration:\n${lines.join('\n')}`, {
    details: { problems },
  });
}
