/**
 * A COLO pair described as plain data (a JSON file, CLI flags), checked and
 * turned into {@link ColoPairOptions} for {@link ColoPair.connect}. The
 * network fence, a function in the options, is described as argument
 * vectors run through the core's `runScript` (no shell).
 */
import { RemusError, runScript, validateOperationId, type DeviceSpec } from '@remus/core';
import type { ColoPairOptions, ColoSide } from './driver.js';
import type { ColoNetworkFence } from './fence.js';
import { coloMarker, coloParamProblems, type ColoDeviceKind, type ColoRole } from './params.js';
import type { ColoWatchdogOptions } from './watchdog.js';

/** One side, as data. */
export interface ColoSideDescription {
  /** QMP command socket: a unix path or `"host:port"`. */
  readonly qmp: string;
  /** Optional second QMP socket for events and watchdog probes. */
  readonly qmpEvents?: string;
  /** Pid of the side's QEMU on this host (liveness and fencing). */
  readonly pid?: number;
  /** The side's COLO devices (see the subkinds' params). */
  readonly devices: readonly DeviceSpec[];
}

/**
 * Commands that connect a side to the clients' network (`attach`) and take
 * it off (`detach`, must succeed when it already is off), as argument
 * vectors per side, e.g. `{ "detach": { "primary": ["ip", "link", "set",
 * "tap-p", "nomaster"] } }`. A side without a command is left alone.
 */
export interface ColoFenceDescription {
  readonly attach?: Partial<Record<ColoRole, readonly string[]>>;
  readonly detach?: Partial<Record<ColoRole, readonly string[]>>;
  /** Bound of each command, ms. Default 10 000. */
  readonly timeoutMs?: number;
}

/** A whole pair, as data: {@link ColoPairOptions} without functions. */
export interface ColoPairDescription {
  readonly primary: ColoSideDescription;
  readonly secondary: ColoSideDescription;
  readonly migrationUri: string;
  readonly checkpointDelayMs?: number;
  readonly operationId?: string;
  readonly commandTimeoutMs?: number;
  readonly watchdog?: ColoWatchdogOptions | false;
  readonly fence?: ColoFenceDescription;
}

function bad(path: string, want: string, value: unknown): never {
  throw new RemusError('INVALID_ARGUMENT', `COLO pair description: ${path} must be ${want} (got ${JSON.stringify(value) ?? 'nothing'})`, {
    details: { field: path },
  });
}

function record(v: unknown, path: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) bad(path, 'an object', v);
  return v as Record<string, unknown>;
}

function str(v: unknown, path: string): string {
  if (typeof v !== 'string' || v === '') bad(path, 'a non-empty string', v);
  return v;
}

function int(v: unknown, path: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(path, `an integer ${min}-${max}`, v);
  return v;
}

function optional<T>(o: Record<string, unknown>, key: string, read: (v: unknown, path: string) => T, path: string): { [k: string]: T } {
  return o[key] === undefined ? {} : { [key]: read(o[key], path ? `${path}.${key}` : key) };
}

function argv(v: unknown, path: string): string[] {
  if (!Array.isArray(v) || v.length === 0 || !v.every((a) => typeof a === 'string')) bad(path, 'a non-empty array of strings (an argument vector)', v);
  return v as string[];
}

function side(v: unknown, path: ColoRole): ColoSide {
  const o = record(v, path);
  const devices = o['devices'];
  if (!Array.isArray(devices) || devices.length === 0) bad(`${path}.devices`, 'a non-empty array of devices', devices);
  devices.forEach((d, i) => {
    const dev = record(d, `${path}.devices[${i}]`);
    str(dev['id'], `${path}.devices[${i}].id`);
    const kind = str(dev['kind'], `${path}.devices[${i}].kind`);
    const params = dev['params'] === undefined ? {} : record(dev['params'], `${path}.devices[${i}].params`);
    // A COLO-shaped device (its subkind's marker param present): its params as COLO_DEVICE_PARAMS defines them.
    if ((kind === 'nic' || kind === 'disk') && params[coloMarker(path, kind)] !== undefined) {
      const problems = coloParamProblems(path, kind as ColoDeviceKind, params);
      if (problems.length > 0) {
        throw new RemusError('INVALID_ARGUMENT', `COLO pair description: ${problems.map((p) => `${path}.devices[${i}].params.${p.param} ${p.message} (${p.fix})`).join('; ')}`, {
          details: { field: `${path}.devices[${i}].params`, problems },
        });
      }
    }
  });
  return {
    qmp: str(o['qmp'], `${path}.qmp`),
    devices: devices as DeviceSpec[],
    ...optional(o, 'qmpEvents', str, path),
    ...optional(o, 'pid', (x, p) => int(x, p, 1, 2 ** 22), path),
  };
}

function commands(v: unknown, path: string): Partial<Record<ColoRole, string[]>> {
  const o = record(v, path);
  return { ...optional(o, 'primary', argv, path), ...optional(o, 'secondary', argv, path) };
}

function watchdogOf(v: unknown, path: string): ColoWatchdogOptions | false {
  if (v === false) return false;
  const w = record(v, path);
  const ms = (x: unknown, p: string) => int(x, p, 1, 600_000);
  return { ...optional(w, 'intervalMs', ms, path), ...optional(w, 'probeTimeoutMs', ms, path), ...optional(w, 'misses', (x, p) => int(x, p, 1, 1000), path) };
}

/** A {@link ColoNetworkFence} that runs the described commands (no shell), each bounded and aborted with the driver. */
export function commandFence(d: ColoFenceDescription): ColoNetworkFence {
  const run = async (which: 'attach' | 'detach', role: ColoRole, signal: AbortSignal): Promise<void> => {
    const cmd = d[which]?.[role];
    if (!cmd) return;
    await runScript(cmd[0]!, cmd.slice(1), { timeoutMs: d.timeoutMs ?? 10_000, signal });
  };
  return { attach: (role, signal) => run('attach', role, signal), detach: (role, signal) => run('detach', role, signal) };
}

/**
 * Checks `value` (e.g. parsed JSON) as a {@link ColoPairDescription} and
 * returns options for {@link ColoPair.connect} (add `onEvent` for progress).
 * Throws INVALID_ARGUMENT naming the first bad field; a COLO device's params
 * are checked here against {@link COLO_DEVICE_PARAMS} (every problem of that
 * device), and what needs the QEMU (a netdev, a quorum) by the subkinds' `match`.
 */
export function coloPairOptions(value: unknown): ColoPairOptions {
  const o = record(value, 'the description');
  const fence = o['fence'] === undefined ? undefined : record(o['fence'], 'fence');
  return {
    primary: side(o['primary'], 'primary'),
    secondary: side(o['secondary'], 'secondary'),
    migrationUri: str(o['migrationUri'], 'migrationUri'),
    ...optional(o, 'checkpointDelayMs', (x, p) => int(x, p, 1, 3_600_000), ''),
    ...optional(o, 'operationId', (x) => validateOperationId(x), ''),
    ...optional(o, 'commandTimeoutMs', (x, p) => int(x, p, 1, 600_000), ''),
    ...optional(o, 'watchdog', watchdogOf, ''),
    ...(fence === undefined
      ? {}
      : {
          fence: commandFence({
            ...optional(fence, 'attach', commands, 'fence'),
            ...optional(fence, 'detach', commands, 'fence'),
            ...optional(fence, 'timeoutMs', (x, p) => int(x, p, 1, 600_000), 'fence'),
          }),
        }),
  };
}
