/**
 * Input checks made before anything is touched: ops lists, device specs and
 * the names that reach external commands.
 */
import { randomBytes } from 'node:crypto';
import { RemusError } from './errors.js';
import type { DeviceSpec, OpName, OpsList } from './ops.js';

/** The longest delay Node's timers hold (2^31-1 ms, about 24.8 days); a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RangeOptions {
  /** Smallest allowed value (default 0 for durations, 1 for counts). */
  readonly min?: number;
  /** Largest allowed value (default {@link MAX_TIMER_MS} for durations, `Number.MAX_SAFE_INTEGER` for counts). */
  readonly max?: number;
}

/**
 * Checks a time in milliseconds (a timeout, an interval): a finite number
 * (fractions allowed) in `[min, max]`, at most what Node's timers hold.
 * Returns it; throws INVALID_ARGUMENT naming `what` and the allowed range.
 */
export function validateDuration(value: unknown, what: string, options: RangeOptions = {}): number {
  const min = options.min ?? 0;
  const max = Math.min(options.max ?? MAX_TIMER_MS, MAX_TIMER_MS);
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new RemusError(
      'INVALID_ARGUMENT',
      `${what} ${describeValue(value)} is not a valid time: use a number of milliseconds from ${min} to ${max}`,
      { details: { [what]: describeValue(value), min, max } },
    );
  }
  return value;
}

/**
 * Checks a count (checkpoints, connections, bytes): an integer in
 * `[min, max]`. Returns it; throws INVALID_ARGUMENT naming `what`.
 */
export function validateCount(value: unknown, what: string, options: RangeOptions = {}): number {
  const min = options.min ?? 1;
  const max = options.max ?? Number.MAX_SAFE_INTEGER;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new RemusError('INVALID_ARGUMENT', `${what} ${describeValue(value)} is not valid: use a whole number from ${min} to ${max}`, {
      details: { [what]: describeValue(value), min, max },
    });
  }
  return value;
}

/** Checks a set of per-op time limits (a subkind's or the layer's `timeouts`); throws INVALID_ARGUMENT or INVALID_SUBKIND naming the op. */
export function validateTimeouts(timeouts: unknown, what: string, code: 'INVALID_ARGUMENT' | 'INVALID_SUBKIND' = 'INVALID_ARGUMENT'): void {
  if (timeouts === undefined) return;
  if (timeouts === null || typeof timeouts !== 'object' || Array.isArray(timeouts)) {
    throw new RemusError(code, `${what} must be an object { op: milliseconds }, e.g. { setup: 60000 }`);
  }
  for (const [op, ms] of Object.entries(timeouts)) {
    if (!(OP_NAMES as readonly string[]).includes(op)) {
      throw new RemusError(code, `${what}.${op} is not an op${suggest(op, OP_NAMES)}; ops are ${OP_NAMES.join(', ')}`);
    }
    try {
      validateDuration(ms, `${what}.${op}`, { min: 1 });
    } catch (e) {
      throw new RemusError(code, (e as Error).message, { op });
    }
  }
}

const OP_NAMES: readonly OpName[] = ['init', 'cleanup', 'match', 'setup', 'teardown', 'postsuspend', 'preresume', 'commit', 'reap'];

/** A value for messages: JSON where possible, bounded in length. */
function describeValue(value: unknown): string {
  let s: string;
  try {
    s = typeof value === 'number' ? String(value) : (JSON.stringify(value) ?? String(value));
  } catch {
    s = Object.prototype.toString.call(value);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** The known name closest to `name` (edit distance at most a third of its length, at least 2), or undefined. */
export function closestName(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

/** `" (did you mean X?)"` or `""`. */
export function suggest(name: string, known: Iterable<string>): string {
  const c = closestName(name, known);
  return c === undefined ? '' : ` (did you mean ${JSON.stringify(c)}?)`;
}

function editDistance(a: string, b: string): number {
  if (a.length > 64 || b.length > 64) return a === b ? 0 : Infinity;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

const REQUIRED_OPS = ['setup', 'teardown'] as const;
const OPTIONAL_OPS = ['init', 'cleanup', 'match', 'postsuspend', 'preresume', 'commit', 'stats', 'reap', 'checkParams'] as const;

/** Throws INVALID_SUBKIND naming the subkind and the member at fault. */
export function validateOpsList(ops: OpsList): void {
  if (!Array.isArray(ops)) {
    throw new RemusError('INVALID_ARGUMENT', 'ops must be an array of subkinds (an ops list)', { op: 'create' });
  }
  const seen = new Set<string>();
  ops.forEach((o, i) => {
    const label = typeof o?.name === 'string' && o.name !== '' ? `subkind ${o.name}` : `ops[${i}]`;
    const bad = (why: string): never => {
      throw new RemusError('INVALID_SUBKIND', `${label}: ${why}`, { subkind: o?.name });
    };
    if (o === null || typeof o !== 'object') bad('is not an object; a subkind is an object with name, kind, setup and teardown');
    if (typeof o.name !== 'string' || o.name === '') bad('has no name; give it a unique string `name`');
    if (typeof o.kind !== 'string' || o.kind === '') bad('has no kind; set `kind` to the device kind it handles, e.g. "nic"');
    for (const m of REQUIRED_OPS) if (typeof o[m] !== 'function') bad(`must implement ${m}()`);
    for (const m of OPTIONAL_OPS) {
      if (o[m] !== undefined && typeof o[m] !== 'function') bad(`${m} must be a function or absent`);
    }
    try {
      validateTimeouts(o.timeouts, `${label}: timeouts`, 'INVALID_SUBKIND');
    } catch (e) {
      bad((e as Error).message.slice(label.length + 2));
    }
    if (o.params !== undefined && (!Array.isArray(o.params) || o.params.some((p: unknown) => typeof p !== 'string' || p === ''))) {
      bad('params must be an array of the param names it knows, e.g. ["ifname", "netns"]');
    }
    if (seen.has(o.name)) bad('appears twice in the ops list; subkind names must be unique');
    seen.add(o.name);
  });
}

/** Throws INVALID_ARGUMENT naming the device at fault. */
export function validateDevices(devices: readonly DeviceSpec[]): void {
  if (!Array.isArray(devices)) {
    throw new RemusError('INVALID_ARGUMENT', 'devices must be an array of { id, kind, params? }', { op: 'create' });
  }
  const seen = new Set<string>();
  devices.forEach((d, i) => {
    const bad = (why: string): never => {
      throw new RemusError('INVALID_ARGUMENT', `devices[${i}]${typeof d?.id === 'string' ? ` (${d.id})` : ''}: ${why}`, {
        device: typeof d?.id === 'string' ? d.id : undefined,
      });
    };
    if (d === null || typeof d !== 'object') bad('is not an object { id, kind, params? }');
    if (typeof d.id !== 'string' || d.id === '') bad('needs a non-empty string id');
    if (typeof d.kind !== 'string' || d.kind === '') bad('needs a non-empty string kind, e.g. "nic" or "disk"');
    if (d.params !== undefined && (d.params === null || typeof d.params !== 'object')) bad('params must be an object');
    if (seen.has(d.id)) bad(`duplicate id ${d.id}; device ids must be unique`);
    seen.add(d.id);
  });
}

const IFNAME = /^[A-Za-z0-9_.][A-Za-z0-9_.:-]*$/;

/**
 * Checks a network interface name before it reaches `ip`/`tc` or netlink:
 * 1-15 bytes, no `/`, whitespace or leading `-`, not `.` or `..`.
 * Returns the name; throws INVALID_ARGUMENT naming `what`.
 */
export function validateInterfaceName(name: unknown, what = 'interface name'): string {
  if (typeof name !== 'string' || name === '' || Buffer.byteLength(name) > 15 || !IFNAME.test(name) || name === '.' || name === '..') {
    throw new RemusError(
      'INVALID_ARGUMENT',
      `${what} ${JSON.stringify(name)} is not a valid Linux interface name: use 1-15 characters from A-Z a-z 0-9 _ . - : not starting with "-"`,
      { details: { name } },
    );
  }
  return name;
}

const SIMPLE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

/**
 * Checks a name that becomes a command argument or a path component
 * (network namespace, DRBD resource, QEMU object id): 1-64 characters from
 * A-Z a-z 0-9 _ . -, not starting with "." or "-". Returns it; throws INVALID_ARGUMENT.
 */
export function validateName(name: unknown, what: string): string {
  if (typeof name !== 'string' || !SIMPLE_NAME.test(name)) {
    throw new RemusError(
      'INVALID_ARGUMENT',
      `${what} ${JSON.stringify(name)} is not valid: use 1-64 characters from A-Z a-z 0-9 _ . - not starting with "." or "-"`,
      { details: { name } },
    );
  }
  return name;
}

const OPERATION_ID = /^[A-Za-z0-9_-]{1,32}$/;

/** Checks an operation id (see OpContext.operation). Returns it; throws INVALID_ARGUMENT. */
export function validateOperationId(id: unknown): string {
  if (typeof id !== 'string' || !OPERATION_ID.test(id)) {
    throw new RemusError('INVALID_ARGUMENT', `operation id ${JSON.stringify(id)} is not valid: use 1-32 characters from A-Z a-z 0-9 _ -`);
  }
  return id;
}

/** A fresh operation id: `r` + 12 hex digits. */
export function newOperationId(): string {
  return `r${randomBytes(6).toString('hex')}`;
}

/**
 * Every problem with the devices' params, before anything is touched: each
 * device's params against the subkinds of its kind in `ops` (a param no
 * subkind of the kind declares, when all of them declare theirs, naming the
 * closest known one; each subkind's own {@link SubkindOps.checkParams}).
 * With `kinds: true`, a device whose kind no subkind handles is a problem too
 * (naming the closest kind). Returns the problems (empty: all good); throws
 * only for a malformed ops list or devices array.
 */
export function checkDevices(ops: OpsList, devices: readonly DeviceSpec[], options: { readonly kinds?: boolean } = {}): RemusError[] {
  validateOpsList(ops);
  validateDevices(devices);
  const problems: RemusError[] = [];
  const kinds = new Set(ops.map((o) => o.kind));
  for (const device of devices) {
    const candidates = ops.filter((o) => o.kind === device.kind);
    if (candidates.length === 0) {
      if (options.kinds) {
        problems.push(
          new RemusError(
            'DEVICE_NOT_SUPPORTED',
            `device ${device.id}: no subkind handles kind ${JSON.stringify(device.kind)}${suggest(device.kind, kinds)}; known kinds: ${[...kinds].join(', ') || '(none)'}`,
            { device: device.id, details: { kind: device.kind } },
          ),
        );
      }
      continue;
    }
    if (candidates.every((o) => o.params !== undefined)) {
      const known = new Set(candidates.flatMap((o) => o.params ?? []));
      for (const key of Object.keys(device.params ?? {})) {
        if (known.has(key)) continue;
        problems.push(
          new RemusError(
            'INVALID_ARGUMENT',
            `device ${device.id}: param ${JSON.stringify(key)} is not known to ${candidates.map((o) => o.name).join(' or ')}${suggest(key, known)}; known params: ${[...known].join(', ') || '(none)'}`,
            { device: device.id, details: { param: key } },
          ),
        );
      }
    }
    for (const o of candidates) {
      if (!o.checkParams) continue;
      try {
        o.checkParams(device);
      } catch (e) {
        const message = (e as Error)?.message ?? String(e);
        problems.push(
          new RemusError('INVALID_ARGUMENT', message.includes(device.id) ? message : `device ${device.id}: ${message}`, {
            device: device.id,
            subkind: o.name,
            op: 'checkParams',
            cause: e,
          }),
        );
      }
    }
  }
  return problems;
}

/**
 * Checks a subkind factory's options object against the option names it
 * knows: a misspelt option is an error naming the closest known one, never
 * silently ignored. Throws INVALID_ARGUMENT (`what`: e.g. `nic-netbuf`) listing
 * every unknown name; a non-object is refused too.
 */
export function checkOptionNames(options: unknown, known: readonly string[], what: string): void {
  if (options === undefined) return;
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new RemusError('INVALID_ARGUMENT', `${what} options must be an object`);
  }
  const unknown = Object.keys(options).filter((k) => !known.includes(k));
  if (unknown.length === 0) return;
  throw new RemusError(
    'INVALID_ARGUMENT',
    `${what}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `${JSON.stringify(k)}${suggest(k, known)}`).join(', ')}; known options: ${known.join(', ')}`,
    { details: { unknown, known } },
  );
}
