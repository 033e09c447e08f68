/**
 * The pair file of `remus colo start` (JSON): both sides of a QEMU COLO pair
 * (QMP sockets, pid, @remus/colo devices), the migration URI, the checkpoint
 * delay, the watchdog and the network fence. Validated like the run config:
 * every problem at once, each with its JSON path and a fix, before anything
 * is touched. The device params, the watchdog defaults and the QMP address
 * forms are @remus/colo's and @remus/qmp's own (loaded first, see
 * {@link PairLibs}): no second copy here.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { basename, extname, isAbsolute } from 'node:path';
import { validateInterfaceName, validateName, type DeviceSpec } from '@remus/core';
import type { ColoDeviceKind, ColoFenceDescription, ColoPairDescription, ColoRole, ColoWatchdogOptions } from '@remus/colo';
import type { SocketAddress as QmpAddress } from '@remus/core';
import { processStart } from '../journal.js';
import { configError, readJsonFile, validateDevices, type ConfigProblem } from '../config.js';
import { loadColo, loadQmp, type ColoLib, type QmpLib } from '../libs.js';
import { isArgv, isObject, join, num, unknownKeys, type Report } from '../validation.js';

export interface ColoSideConfig {
  readonly qmp: QmpAddress;
  readonly qmpEvents?: QmpAddress;
  readonly pid?: number;
  readonly devices: readonly DeviceSpec[];
}

/** Takes a side's tap off / puts it on the clients' bridge (`ip link set TAP [no]master BRIDGE`, in `netns` if given). */
export interface ColoFenceConfig {
  readonly netns?: string;
  readonly bridge: string;
  readonly primaryTap: string;
  readonly secondaryTap: string;
}

/**
 * Automatic reprotect: after every failover the driver runs `command` (an
 * argument vector, no shell), which starts a fresh secondary QEMU and prints
 * the new pair file on stdout (the survivor as `primary`).
 */
export interface ColoAutoReprotectConfig {
  readonly command: readonly string[];
  /** Time limit of the command, ms. */
  readonly timeoutMs: number;
}

/** A validated pair file with defaults filled in. */
export interface ColoPairConfig {
  /** Names the control socket (`STATE_DIR/colo-<name>.sock`); default: the file name without extension. */
  readonly name: string;
  readonly primary: ColoSideConfig;
  readonly secondary: ColoSideConfig;
  readonly migrationUri: string;
  readonly checkpointDelayMs: number;
  readonly commandTimeoutMs: number;
  readonly startTimeoutMs: number;
  readonly watchdog: Required<ColoWatchdogOptions> | false;
  readonly fence: ColoFenceConfig | undefined;
  readonly autoReprotect: ColoAutoReprotectConfig | undefined;
  /** The same pair as @remus/colo's description (for `coloPairOptions`); the fence as `ip link set` argument vectors. */
  readonly description: ColoPairDescription;
}

/**
 * What checking a pair file takes from @remus/colo (its device params and
 * watchdog defaults) and @remus/qmp (its address forms): each defined once,
 * there. Loaded by {@link loadPairLibs}; tests pass the modules themselves.
 */
export interface PairLibs {
  readonly colo: Pick<ColoLib, 'COLO_DEVICE_PARAMS' | 'coloParamProblems' | 'DEFAULT_WATCHDOG'>;
  readonly qmp: Pick<QmpLib, 'parseQmpAddress' | 'formatQmpAddress'>;
}

/** Loads @remus/colo and @remus/qmp for `forWhat` (PLUGIN_NOT_FOUND naming the install command when one is missing). */
export async function loadPairLibs(forWhat: string): Promise<PairLibs> {
  return { colo: await loadColo(forWhat), qmp: await loadQmp(forWhat) };
}

const TOP_KEYS = ['$schema', 'name', 'primary', 'secondary', 'migrationUri', 'checkpointDelayMs', 'commandTimeoutMs', 'startTimeoutMs', 'watchdog', 'fence', 'autoReprotect'];
const SIDE_KEYS = ['qmp', 'qmpEvents', 'pid', 'devices'];
const WATCHDOG_KEYS = ['intervalMs', 'probeTimeoutMs', 'misses'];
const FENCE_KEYS = ['netns', 'bridge', 'primaryTap', 'secondaryTap'];
const AUTO_REPROTECT_KEYS = ['command', 'timeoutMs'];

/**
 * Reads and validates a pair file, for `forWhat` (e.g. "remus colo start"):
 * loads @remus/colo and @remus/qmp first. Throws INVALID_ARGUMENT listing
 * every problem. `livePids`: a pid must be a running process (for start).
 */
export async function loadPairConfig(file: string, forWhat: string, livePids = true): Promise<ColoPairConfig> {
  const libs = await loadPairLibs(forWhat);
  return validatePairConfig(readJsonFile(file, 'pair file'), libs, file, livePids);
}

/** Validates a parsed pair file. `source` names it in messages and gives the default name. */
export function validatePairConfig(raw: unknown, libs: PairLibs, source = 'pair.json', livePids = true): ColoPairConfig {
  const { DEFAULT_WATCHDOG } = libs.colo;
  const { formatQmpAddress } = libs.qmp;
  const problems: ConfigProblem[] = [];
  const p: Report = (path, message, fix) => void problems.push({ path, message, fix });
  if (!isObject(raw)) {
    throw configError(source, [{ path: '$', message: 'must be a JSON object', fix: 'write { "primary": {...}, "secondary": {...}, "migrationUri": "tcp:127.0.0.1:9998" }' }]);
  }
  unknownKeys(raw, TOP_KEYS, '', p);
  const name = raw.name === undefined ? basename(source, extname(source)) : raw.name;
  try {
    validateName(name, 'pair name');
  } catch {
    p(raw.name === undefined ? '$' : 'name', `${JSON.stringify(name)} is not a usable pair name`, 'set "name" to letters, digits, "-", "_" or "." (it names the control socket)');
  }
  const primary = validateSide(raw.primary, 'primary', p, livePids, libs);
  const secondary = validateSide(raw.secondary, 'secondary', p, livePids, libs);
  if (typeof raw.migrationUri !== 'string' || !/^(tcp|unix|rdma|exec|fd):\S+$/.test(raw.migrationUri)) {
    p('migrationUri', raw.migrationUri === undefined ? 'is missing' : `${JSON.stringify(raw.migrationUri)} is not a migration URI`, 'where the secondary listens, as given to its -incoming, e.g. "tcp:127.0.0.1:9998"');
  }
  const checkpointDelayMs = num(raw, 'checkpointDelayMs', '', p, { def: 2000, min: 1, integer: true, fix: "QEMU's x-checkpoint-delay: ms between checkpoints while the outputs agree, e.g. 2000" }) as number;
  const commandTimeoutMs = num(raw, 'commandTimeoutMs', '', p, { def: 10_000, min: 1, fix: 'time limit of each QMP command in ms, e.g. 10000' }) as number;
  const startTimeoutMs = num(raw, 'startTimeoutMs', '', p, { def: 120_000, min: 1, fix: 'time limit of the start (set-up and migration) in ms, e.g. 120000' }) as number;
  const watchdog = validateWatchdog(raw.watchdog, p, DEFAULT_WATCHDOG);
  const fence = validateFence(raw.fence, p);
  const autoReprotect = validateAutoReprotect(raw.autoReprotect, p);
  if (problems.length > 0) throw configError(source, problems);
  const sides = { primary: primary as ColoSideConfig, secondary: secondary as ColoSideConfig };
  const describe = (s: ColoSideConfig) => ({
    qmp: formatQmpAddress(s.qmp),
    ...(s.qmpEvents ? { qmpEvents: formatQmpAddress(s.qmpEvents) } : {}),
    ...(s.pid !== undefined ? { pid: s.pid } : {}),
    devices: s.devices,
  });
  const description: ColoPairDescription = {
    primary: describe(sides.primary),
    secondary: describe(sides.secondary),
    migrationUri: raw.migrationUri as string,
    checkpointDelayMs,
    commandTimeoutMs,
    watchdog,
    ...(fence ? { fence: fenceCommands(fence) } : {}),
  };
  return { name: name as string, ...sides, migrationUri: raw.migrationUri as string, checkpointDelayMs, commandTimeoutMs, startTimeoutMs, watchdog, fence, autoReprotect, description };
}

/** The `watchdog` of a pair or side file: an object (defaults filled in) or false for none. */
export function validateWatchdog(w: unknown, p: Report, defaults: Required<ColoWatchdogOptions>): Required<ColoWatchdogOptions> | false {
  if (w === false) return false;
  if (w === undefined) return { ...defaults };
  if (!isObject(w)) {
    p('watchdog', 'must be an object or false', `e.g. ${JSON.stringify(defaults)}, or false for none (then nothing notices a dead peer)`);
    return { ...defaults };
  }
  unknownKeys(w, WATCHDOG_KEYS, 'watchdog', p);
  return {
    intervalMs: num(w, 'intervalMs', 'watchdog', p, { def: defaults.intervalMs, min: 1, fix: 'ms between liveness probes, e.g. 200' }) as number,
    probeTimeoutMs: num(w, 'probeTimeoutMs', 'watchdog', p, { def: defaults.probeTimeoutMs, min: 1, fix: 'ms a probe may take, e.g. 1500' }) as number,
    misses: num(w, 'misses', 'watchdog', p, { def: defaults.misses, min: 1, integer: true, fix: 'missed probes in a row that declare a side hung, e.g. 3' }) as number,
  };
}

function validateAutoReprotect(a: unknown, p: Report): ColoAutoReprotectConfig | undefined {
  return validateCommandHook(a, 'autoReprotect', p, 'the command that starts a fresh secondary and prints the new pair file', ['/usr/local/sbin/start-spare-secondary', '--pair', 'web'], 120_000);
}

/**
 * A hook `{ "command": [ABSOLUTE_PATH, ...], "timeoutMs" }` at `at`: an
 * argument vector (no shell) whose program is an executable file given by
 * its absolute path (no PATH lookup); undefined when absent or bad (reported).
 */
export function validateCommandHook(a: unknown, at: string, p: Report, what: string, exampleArgv: readonly string[], defaultTimeoutMs: number): ColoAutoReprotectConfig | undefined {
  if (a === undefined) return undefined;
  const example = `{ "command": ${JSON.stringify(exampleArgv)}, "timeoutMs": ${defaultTimeoutMs} }`;
  if (!isObject(a)) {
    p(at, 'must be an object', `${what}: ${example}`);
    return undefined;
  }
  unknownKeys(a, AUTO_REPROTECT_KEYS, at, p);
  const c = a.command;
  let command: string[] | undefined;
  if (!isArgv(c)) {
    p(`${at}.command`, c === undefined ? 'is missing' : 'must be an argument vector (a non-empty array of non-empty strings; no shell text)', `e.g. ${JSON.stringify(exampleArgv)}`);
  } else if (!isAbsolute(c[0]!)) {
    p(`${at}.command[0]`, `${JSON.stringify(c[0])} is not an absolute path`, `give the program by its absolute path (no PATH lookup), e.g. ${JSON.stringify(exampleArgv[0])}`);
  } else {
    try {
      accessSync(c[0]!, constants.X_OK);
      if (!statSync(c[0]!).isFile()) throw new Error('not a file');
      command = c;
    } catch {
      p(`${at}.command[0]`, `${JSON.stringify(c[0])} is not an executable file`, 'install the program there and make it executable (chmod +x), or correct the path');
    }
  }
  const timeoutMs = num(a, 'timeoutMs', at, p, { def: defaultTimeoutMs, min: 1, fix: `time limit of the command in ms, e.g. ${defaultTimeoutMs}` }) as number;
  return command ? { command, timeoutMs } : undefined;
}

/** The fence as commands: `ip [-n NETNS] link set TAP master BRIDGE` to attach a side, `... nomaster` to detach it. */
function fenceCommands(f: ColoFenceConfig): ColoFenceDescription {
  const ip = (tap: string, ...rest: string[]): string[] => ['ip', ...(f.netns ? ['-n', f.netns] : []), 'link', 'set', tap, ...rest];
  return {
    attach: { primary: ip(f.primaryTap, 'master', f.bridge), secondary: ip(f.secondaryTap, 'master', f.bridge) },
    detach: { primary: ip(f.primaryTap, 'nomaster'), secondary: ip(f.secondaryTap, 'nomaster') },
  };
}

/** One side's QEMU (`qmp`, `qmpEvents`, `pid`, `devices` with @remus/colo's params for `role`), at path `at`. */
export function validateSide(s: unknown, role: ColoRole, p: Report, livePids: boolean, libs: PairLibs, at0: string = role): ColoSideConfig | undefined {
  const example = '{ "qmp": "/run/qemu/${role}.qmp", "qmpEvents": "/run/qemu/${role}-events.qmp", "pid": 1234, "devices": [...] }';
  if (!isObject(s)) {
    p(at0, s === undefined ? 'is missing' : 'must be an object', `describe the ${role} QEMU: ${example}`);
    return undefined;
  }
  unknownKeys(s, SIDE_KEYS, at0, p);
  const qmp = address(s, 'qmp', role, p, true, libs, at0);
  const qmpEvents = address(s, 'qmpEvents', role, p, false, libs, at0);
  if (s.pid !== undefined) {
    if (!(Number.isInteger(s.pid) && (s.pid as number) > 1)) p(`${at0}.pid`, `${JSON.stringify(s.pid)} is not a process id`, `the pid of the ${role} QEMU (an integer > 1), or leave it out`);
    else if (livePids && processStart(s.pid as number) === undefined) p(`${at0}.pid`, `process ${s.pid} is not running`, `start the ${role} QEMU first, or correct the pid`);
  }
  const devices = validateColoDevices(s.devices, role, p, libs, `${at0}.devices`);
  if (devices === undefined) return undefined;
  return { qmp: qmp as QmpAddress, ...(qmpEvents ? { qmpEvents } : {}), ...(typeof s.pid === 'number' ? { pid: s.pid } : {}), devices };
}

/** A side's COLO devices for `role` at path `at` (a non-empty list; kinds and params as @remus/colo judges them). */
export function validateColoDevices(list: unknown, role: ColoRole, p: Report, libs: PairLibs, at: string): DeviceSpec[] | undefined {
  if (!Array.isArray(list) || list.length === 0) {
    p(at, list === undefined ? 'is missing' : 'must be a non-empty array', `the ${role}'s COLO devices: a "nic" and a "disk", with @remus/colo's params`);
    return undefined;
  }
  const devices = validateDevices(list, p, at);
  devices.forEach((d, i) => {
    if (!isObject(d) || !isObject(d.params ?? {})) return;
    if (!Object.hasOwn(libs.colo.COLO_DEVICE_PARAMS[role], d.kind)) {
      if (typeof d.kind === 'string' && d.kind !== '') p(`${at}[${i}].kind`, `"${d.kind}" is not a COLO device kind`, 'use "nic" (the COLO proxy) or "disk" (block replication)');
      return;
    }
    const kind = d.kind as ColoDeviceKind;
    const params = d.params ?? {};
    // Unknown names the CLI's way (path, "did you mean"); missing and malformed ones as @remus/colo judges them.
    unknownKeys(params, Object.keys(libs.colo.COLO_DEVICE_PARAMS[role][kind]), `${at}[${i}].params`, p);
    for (const x of libs.colo.coloParamProblems(role, kind, params, { unknown: false })) p(join(`${at}[${i}].params`, x.param), x.message, x.fix);
  });
  return devices;
}

function address(s: Record<string, unknown>, key: string, role: ColoRole, p: Report, required: boolean, libs: PairLibs, at0: string = role): QmpAddress | undefined {
  const v = s[key];
  const fix = `the ${role} QEMU's ${key === 'qmp' ? 'QMP socket (-qmp unix:PATH,server=on,wait=off)' : 'second QMP socket, for events and watchdog probes'}: a unix socket path, "host:port", { "path" } or { "host", "port" }`;
  if (v === undefined) {
    if (required) p(`${at0}.${key}`, 'is missing', fix);
    return undefined;
  }
  try {
    if (typeof v !== 'string' && !isObject(v)) throw new Error('not an address');
    return libs.qmp.parseQmpAddress(v);
  } catch {
    p(`${at0}.${key}`, `${JSON.stringify(v)} is not a QMP socket address`, fix);
    return undefined;
  }
}

/**
 * The names of a network fence at `fence`: `netns` (optional) a namespace
 * name, each of `interfaces` (required) an interface name. True when all are
 * good; each problem reported.
 */
export function fenceNames(f: Record<string, unknown>, interfaces: readonly string[], p: Report): boolean {
  let ok = true;
  const check = (key: string, validate: (v: unknown) => unknown, fix: string): void => {
    if (f[key] === undefined && key === 'netns') return;
    try {
      validate(f[key]);
    } catch (e) {
      ok = false;
      p(`fence.${key}`, f[key] === undefined ? 'is missing' : (e as Error).message, fix);
    }
  };
  check('netns', (v) => validateName(v, 'network namespace'), 'the network namespace (ip netns) holding the bridge and taps, or leave it out for the current one');
  for (const key of interfaces) check(key, (v) => validateInterfaceName(v, key), 'an interface name of at most 15 characters');
  return ok;
}

function validateFence(f: unknown, p: Report): ColoFenceConfig | undefined {
  if (f === undefined) return undefined;
  const example = '{ "netns": "colo-h", "bridge": "br0", "primaryTap": "tap-pri", "secondaryTap": "tap-sec" }';
  if (!isObject(f)) {
    p('fence', 'must be an object', `the clients' bridge and each side's tap: ${example}`);
    return undefined;
  }
  unknownKeys(f, FENCE_KEYS, 'fence', p);
  fenceNames(f, ['bridge', 'primaryTap', 'secondaryTap'], p);
  if (f.primaryTap !== undefined && f.primaryTap === f.secondaryTap) p('fence.secondaryTap', 'is the same as primaryTap', "each side needs its own tap: the fence takes one off the bridge before the other joins");
  return f as unknown as ColoFenceConfig;
}
