/**
 * The params of COLO devices, defined once: each side's `nic` and `disk`,
 * what kind of value each param takes and whether it may be left out. The
 * subkinds read params through {@link readColoParams} (and declare them to
 * the core as `params` / `checkParams`); a pair file's checker (the CLI)
 * lists every problem with {@link coloParamProblems}.
 */
import { RemusError, closestName, parseSocketAddress, type SocketAddress } from '@remus/core';

/** A side of a COLO pair. */
export type ColoRole = 'primary' | 'secondary';

/** The device kinds COLO handles: the COLO proxy (`nic`) and block replication (`disk`). */
export type ColoDeviceKind = 'nic' | 'disk';

/** What a param holds: a socket address (core's `SocketAddress` forms), a QEMU id, or whole seconds 1-3600. */
export type ColoParamKind = 'address' | 'id' | 'seconds';

/** One param: its kind, and whether it may be left out. */
export interface ColoParamSpec {
  readonly kind: ColoParamKind;
  readonly optional?: true;
}

/**
 * Every COLO device param, per side and kind. The first param of each is
 * the marker that makes a device COLO-shaped for that side's subkind
 * (a device without it is "not mine").
 */
export const COLO_DEVICE_PARAMS = {
  primary: {
    nic: { compare: { kind: 'address' }, netdev: { kind: 'id' }, mirror: { kind: 'address' }, primaryIn: { kind: 'address' }, compareOut: { kind: 'address' } },
    disk: { quorum: { kind: 'id' }, nbd: { kind: 'address' }, export: { kind: 'id' } },
  },
  secondary: {
    nic: { mirror: { kind: 'address' }, netdev: { kind: 'id' }, compare: { kind: 'address' }, reconnectSeconds: { kind: 'seconds', optional: true } },
    disk: { node: { kind: 'id' }, nbd: { kind: 'address' }, export: { kind: 'id', optional: true }, quorum: { kind: 'id', optional: true } },
  },
} as const satisfies Record<ColoRole, Record<ColoDeviceKind, Record<string, ColoParamSpec>>>;

/** How to write a value of each kind, for messages. */
export const COLO_PARAM_FIX: Readonly<Record<ColoParamKind, string>> = {
  address: 'a socket address: { "host": "127.0.0.1", "port": 9003 }, "127.0.0.1:9003" or { "path": "/run/colo/x.sock" }',
  id: 'a QEMU id: letters, digits, "-", "." and "_", starting with a letter',
  seconds: 'a whole number of seconds, 1-3600',
};

/** The param whose presence marks a device as COLO-shaped for `role`'s `kind` subkind. */
export function coloMarker(role: ColoRole, kind: ColoDeviceKind): string {
  return Object.keys(COLO_DEVICE_PARAMS[role][kind])[0]!;
}

/** Reads one value of `kind`; throws INVALID_ARGUMENT naming `what`. */
export function readColoParam(kind: 'address', value: unknown, what: string): SocketAddress;
export function readColoParam(kind: 'id', value: unknown, what: string): string;
export function readColoParam(kind: 'seconds', value: unknown, what: string): number;
export function readColoParam(kind: ColoParamKind, value: unknown, what: string): SocketAddress | string | number;
export function readColoParam(kind: ColoParamKind, value: unknown, what: string): SocketAddress | string | number {
  switch (kind) {
    case 'address':
      return parseSocketAddress(value, what);
    case 'id':
      if (typeof value !== 'string' || !/^[A-Za-z][A-Za-z0-9_.-]{0,127}$/.test(value)) {
        throw new RemusError('INVALID_ARGUMENT', `${what} ${JSON.stringify(value)} is not a QEMU id: use letters, digits, "-", "." and "_", starting with a letter`, {
          details: { [what]: value },
        });
      }
      return value;
    case 'seconds':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 3600) {
        throw new RemusError('INVALID_ARGUMENT', `${what} must be an integer 1-3600 (got ${JSON.stringify(value)})`, { details: { [what]: value } });
      }
      return value;
  }
}

/** One problem with a device's params: which param, what is wrong, how to write it. */
export interface ColoParamProblem {
  readonly param: string;
  readonly message: string;
  readonly fix: string;
}

/** The params of `kind` on either side: one device spec may serve both sides' ops lists, each subkind reading its own. */
export function coloKindParams(kind: ColoDeviceKind): string[] {
  return [...new Set([...Object.keys(COLO_DEVICE_PARAMS.primary[kind]), ...Object.keys(COLO_DEVICE_PARAMS.secondary[kind])])];
}

/**
 * Every problem with the params of a COLO device of `role` and `kind`:
 * unknown to that side (with the closest known name; skipped with
 * `unknown: false`, for a spec shared by both sides), missing, malformed.
 */
export function coloParamProblems(
  role: ColoRole,
  kind: ColoDeviceKind,
  params: Readonly<Record<string, unknown>>,
  options: { readonly unknown?: boolean } = {},
): ColoParamProblem[] {
  const specs: Readonly<Record<string, ColoParamSpec>> = COLO_DEVICE_PARAMS[role][kind];
  const known = Object.keys(specs);
  const problems: ColoParamProblem[] = [];
  for (const key of options.unknown === false ? [] : Object.keys(params)) {
    if (Object.hasOwn(specs, key)) continue;
    const near = closestName(key, known);
    problems.push({ param: key, message: `is not a param of a COLO ${role} ${kind}${near ? ` (did you mean "${near}"?)` : ''}`, fix: `known params: ${known.join(', ')}` });
  }
  for (const [key, spec] of Object.entries(specs)) {
    const value = params[key];
    if (value === undefined) {
      if (!spec.optional) problems.push({ param: key, message: 'is missing', fix: COLO_PARAM_FIX[spec.kind] });
      continue;
    }
    try {
      readColoParam(spec.kind, value, key);
    } catch {
      const what = spec.kind === 'address' ? 'a socket address' : spec.kind === 'id' ? 'a QEMU id' : 'a number of seconds';
      problems.push({ param: key, message: `${JSON.stringify(value)} is not ${what}`, fix: COLO_PARAM_FIX[spec.kind] });
    }
  }
  return problems;
}

type Value<K extends ColoParamKind> = K extends 'address' ? SocketAddress : K extends 'id' ? string : number;
type Read<T extends Record<string, ColoParamSpec>> = {
  readonly [P in keyof T]: T[P] extends { optional: true } ? Value<T[P]['kind']> | undefined : Value<T[P]['kind']>;
};

/** The params of device `device`, read and typed; throws INVALID_ARGUMENT naming the first bad param (`device X: params.Y`). */
export function readColoParams<R extends ColoRole, K extends ColoDeviceKind>(
  role: R,
  kind: K,
  params: Readonly<Record<string, unknown>>,
  device: string,
): Read<(typeof COLO_DEVICE_PARAMS)[R][K]> {
  const specs: Readonly<Record<string, ColoParamSpec>> = COLO_DEVICE_PARAMS[role][kind];
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) {
    const value = params[key];
    if (value === undefined && spec.optional) continue;
    out[key] = readColoParam(spec.kind, value, `device ${device}: params.${key}`);
  }
  return out as Read<(typeof COLO_DEVICE_PARAMS)[R][K]>;
}
