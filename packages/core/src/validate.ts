/**
 * Input checks made before anything is touched: ops lists, device specs and
 * the names that reach external commands.
 */
import { randomBytes } from 'node:crypto';
import { RemusError } from './errors.js';
import type { DeviceSpec, OpsList } from './ops.js';

const REQUIRED_OPS = ['setup', 'teardown'] as const;
const OPTIONAL_OPS = ['init', 'cleanup', 'match', 'postsuspend', 'preresume', 'commit', 'stats', 'reap'] as const;

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
