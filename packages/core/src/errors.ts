/**
 * Every error code `@remus/core` and its plugins raise, in one table.
 *
 * Codes are stable: tools and operators match on `error.code`, never on the
 * message. A new code is a minor release; renaming or removing one is a major.
 */
export const ErrorCodes = {
  /** An op threw or rejected. `cause` holds what it threw. */
  OP_FAILED: 'the op threw or rejected',
  /** An op did not settle within its timeout. */
  TIMEOUT: 'the op did not settle within its timeout',
  /** The caller aborted the operation while the op was running. */
  ABORTED: 'the operation was aborted by the caller',
  /** No subkind of the device's kind in the ops list matched it. */
  DEVICE_NOT_SUPPORTED: 'no subkind in the ops list took the device',
  /** A phase failed on one or more devices; `failures` lists every one. */
  PHASE_FAILED: 'a phase failed on one or more devices',
  /** A phase was asked for in the wrong state (e.g. commit before setup). */
  STATE: 'the phase is not allowed in the current state',
  /** Bad input from the caller: options, device specs, names. */
  INVALID_ARGUMENT: 'an argument is invalid',
  /** A subkind's ops object breaks the interface (missing setup, bad kind...). */
  INVALID_SUBKIND: 'a subkind ops object is malformed',
  /** An external script exited non-zero or was killed. */
  SCRIPT_FAILED: 'an external script failed',
  /** An external script did not finish within its timeout. */
  SCRIPT_TIMEOUT: 'an external script timed out',
  /** A plugin package is not installed. */
  PLUGIN_NOT_FOUND: 'a plugin package is not installed',
  /** A plugin package does not export valid plugin metadata. */
  PLUGIN_INVALID: 'a plugin package does not export a valid plugin',
  /** A plugin was built for a core version range this core is not in. */
  PLUGIN_INCOMPATIBLE: 'a plugin requires another version of @remus/core',
  /** A plugin does not provide the subkind asked for. */
  SUBKIND_NOT_FOUND: 'a plugin does not provide the subkind asked for',
  /** A checkpoint of the loop failed; `details` name the checkpoint and step, `cause` the error. */
  CHECKPOINT_FAILED: 'a checkpoint failed',
  /** The domain adapter failed a step of a checkpoint. */
  DOMAIN_FAILED: 'the domain adapter failed a checkpoint step',
  /** A resource the host lacks (kernel feature, tool). */
  UNSUPPORTED_HOST: 'the host lacks something this needs',
  /** A device exists but is in a state the subkind cannot use (e.g. a DRBD disk not Connected); the message says how to fix it. */
  DEVICE_NOT_READY: 'a device is in a state the subkind cannot use',
  /** The primary role was not held, or held under another epoch, or past its deadline when output was to be released: the output stays held (details: epoch, role, now). */
  ROLE_LOST: 'the primary role was lost; the output was not released',
  /** An epoch below the highest this host has seen (its epoch store): refused. */
  EPOCH_STALE: 'an epoch below the highest this host has seen',
  /** The arbiter (e.g. etcd) could not be reached or answered wrong; the message names it and the fix. */
  ARBITER_FAILED: 'the arbiter could not be reached or answered wrong',
} as const;

/** A code of the core's own table; see {@link ErrorCodes}. */
export type CoreErrorCode = keyof typeof ErrorCodes;

/** A plugin's own code, namespaced by the plugin: `qmp/QMP_FAILED`, `acme-nic/LINK_DOWN` (see {@link defineErrorCodes}). */
export type PluginErrorCode = `${string}/${string}`;

/** A stable error code: one of the core's ({@link ErrorCodes}) or a plugin's namespaced one. */
export type ErrorCode = CoreErrorCode | PluginErrorCode;

const NAMESPACE = /^[a-z0-9][a-z0-9-]{0,63}$/;
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

/** The descriptions of a plugin's codes, keyed by full code; on the object {@link defineErrorCodes} returns. */
export const DESCRIPTIONS: unique symbol = Symbol.for('@remus/core.errorDescriptions');

/** What {@link defineErrorCodes} returns: `{ CODE: 'ns/CODE' }`, plus the descriptions under {@link DESCRIPTIONS}. */
export type ErrorCodeTable<N extends string, C extends string> = { readonly [K in C]: `${N}/${K}` } & {
  readonly [DESCRIPTIONS]: Readonly<Record<`${N}/${C}`, string>>;
};

/**
 * Declares a plugin's own error codes, namespaced so that a third party needs
 * no core release to add one: `defineErrorCodes('qmp', { QMP_FAILED: 'a QMP
 * command failed' })` returns `{ QMP_FAILED: 'qmp/QMP_FAILED' }`. The
 * namespace is the plugin's short name (lower case, digits, `-`), codes are
 * UPPER_SNAKE. Like the core's, a plugin's codes are stable: adding one is a
 * minor release, renaming or removing one a major.
 */
export function defineErrorCodes<N extends string, C extends string>(namespace: N, codes: Readonly<Record<C, string>>): ErrorCodeTable<N, C> {
  if (typeof namespace !== 'string' || !NAMESPACE.test(namespace) || namespace === 'core') {
    throw new RemusError('INVALID_ARGUMENT', `error code namespace ${JSON.stringify(namespace)} is not valid: use the plugin's short name, e.g. "qmp" (a-z 0-9 -)`);
  }
  const table: Record<string, string> = {};
  const descriptions: Record<string, string> = {};
  for (const [code, description] of Object.entries(codes)) {
    if (!CODE.test(code) || typeof description !== 'string' || description === '') {
      throw new RemusError('INVALID_ARGUMENT', `error code ${namespace}/${code}: use UPPER_SNAKE_CASE with a non-empty description`);
    }
    table[code] = `${namespace}/${code}`;
    descriptions[`${namespace}/${code}`] = description;
  }
  Object.defineProperty(table, DESCRIPTIONS, { value: Object.freeze(descriptions) });
  return Object.freeze(table) as ErrorCodeTable<N, C>;
}

/** True for a code of the form `namespace/CODE`. */
export function isPluginErrorCode(code: unknown): code is PluginErrorCode {
  if (typeof code !== 'string') return false;
  const i = code.indexOf('/');
  return i > 0 && NAMESPACE.test(code.slice(0, i)) && CODE.test(code.slice(i + 1));
}

function isErrorCode(code: unknown): code is ErrorCode {
  return (typeof code === 'string' && Object.hasOwn(ErrorCodes, code)) || isPluginErrorCode(code);
}

/**
 * The brand every RemusError carries, shared by every copy of @remus/core in
 * a process (a plugin that resolved its own core): errors are recognised by
 * it, never by which copy's class made them.
 */
const BRAND: unique symbol = Symbol.for('@remus/core.RemusError');

/** Where an error happened: which device, which subkind, which op. */
export interface ErrorOrigin {
  /** Device id as the caller gave it. */
  device?: string;
  /** Subkind name (e.g. `nic-netbuf`). */
  subkind?: string;
  /** Op name (e.g. `setup`, `commit`) or checkpoint step. */
  op?: string;
}

export interface RemusErrorOptions extends ErrorOrigin {
  cause?: unknown;
  /** For PHASE_FAILED: every failure of the phase, in device order. */
  failures?: readonly RemusError[];
  /** Free-form machine-readable details (exit code, stderr tail...). */
  details?: Record<string, unknown>;
}

/**
 * The one error class of Remus. `code` is stable; `device`, `subkind` and
 * `op` say where it happened; `cause` is the original error.
 */
export class RemusError extends Error {
  override readonly name = 'RemusError';
  readonly code: ErrorCode;
  readonly device: string | undefined;
  readonly subkind: string | undefined;
  readonly op: string | undefined;
  /** Every device failure of a PHASE_FAILED error, in device order; else empty. */
  readonly failures: readonly RemusError[];
  readonly details: Record<string, unknown>;

  /** Recognises RemusErrors of any copy of @remus/core (by brand); subclasses keep the usual check. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== RemusError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as { [BRAND]?: unknown })[BRAND] === true;
  }

  constructor(code: ErrorCode, message: string, options: RemusErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    if (!isErrorCode(code)) {
      throw new TypeError(`RemusError: ${JSON.stringify(code)} is not an error code: use one of ErrorCodes or a plugin's namespaced code from defineErrorCodes ("ns/CODE")`);
    }
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    this.device = options.device;
    this.subkind = options.subkind;
    this.op = options.op;
    this.failures = options.failures ?? [];
    this.details = options.details ?? {};
  }

  /** JSON form for event streams and logs (causes flattened to messages). */
  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      device: this.device,
      subkind: this.subkind,
      op: this.op,
      details: this.details,
      cause: describeCause(this.cause),
      failures: this.failures.map((f) => f.toJSON()),
    };
  }
}

/** True when `e` is a RemusError of any copy of @remus/core (by brand), optionally with the given code. */
export function isRemusError(e: unknown, code?: ErrorCode): e is RemusError {
  return e instanceof RemusError && (code === undefined || e.code === code);
}

/** A short text for any thrown value, for messages. */
export function describeCause(cause: unknown): string | undefined {
  if (cause === undefined) return undefined;
  if (cause instanceof Error) return cause.message;
  const message = (cause as { message?: unknown } | null)?.message;
  if (typeof message === 'string') return message; // an error-like object (e.g. one already serialised)
  try {
    return String(cause);
  } catch {
    return Object.prototype.toString.call(cause); // objects without a prototype cannot be converted
  }
}

/** `device=vif1.0 subkind=nic-netbuf op=setup` style prefix. */
export function formatOrigin(o: ErrorOrigin): string {
  const parts: string[] = [];
  if (o.device !== undefined) parts.push(`device ${o.device}`);
  if (o.subkind !== undefined) parts.push(`subkind ${o.subkind}`);
  if (o.op !== undefined) parts.push(`op ${o.op}`);
  return parts.join(', ');
}
