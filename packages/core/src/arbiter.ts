/**
 * Arbitration: which host may act as primary, under which fencing epoch, and
 * until when.
 *
 * Across hosts nobody can SIGKILL the other side, and the two sides cannot
 * tell a dead peer from a cut cable. So a third party (an {@link Arbiter}:
 * etcd in `@remus/arbiter-etcd`, the single-host {@link localArbiter} here)
 * grants the primary role, and the primary fences itself:
 *
 * - Every role comes with an **epoch**, a cluster-wide strictly increasing
 *   number (etcd: the leader key's create_revision). Checkpoints,
 *   acknowledgements and output releases carry it (`DomainStepContext.epoch`,
 *   `OpContext.epoch`); a backup refuses state from a lower epoch.
 * - Every role comes with a **deadline** on the monotonic clock
 *   (`performance.now()`), until which the role is *certainly* held: for a
 *   lease, the send time of the last keepalive the server answered + TTL −
 *   a margin. The checkpoint loop releases an epoch's output only while
 *   `role()` says held, with the run's epoch, before the deadline
 *   ({@link roleLapse}); otherwise the output stays held and the loop fails
 *   with `ROLE_LOST`. The check is {@link Arbiter.role}: memory only, no
 *   round trip per checkpoint.
 * - Each host persists the highest epoch it has seen ({@link EpochStore}) and
 *   never acts as primary, nor accepts state, below it: an arbiter whose data
 *   was lost or restored from an old backup (revisions start again) cannot
 *   make a host go back in time.
 *
 * Third parties write arbiters the way they write subkinds: a plain object
 * that implements {@link Arbiter}, made by a factory, in its own package
 * with `@remus/core` as a peer dependency.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { RemusError, describeCause } from './errors.js';

/** What an arbiter knows right now about this host's primary role. */
export interface RoleState {
  /** True while this host holds the role as far as the arbiter knows (it may still be past its deadline). */
  readonly held: boolean;
  /** Fencing epoch of the role held or last held; 0 when never held. Strictly increasing across the cluster. */
  readonly epoch: number;
  /**
   * `performance.now()` time (ms, this process's monotonic clock) until
   * which the role is certainly held. `-Infinity` when not held; `Infinity`
   * for an arbiter that cannot lose the role (single host).
   */
  readonly deadline: number;
}

/** The role as {@link Arbiter.acquire} grants it. */
export interface Role {
  /** See {@link RoleState.epoch}; > 0. */
  readonly epoch: number;
  /** See {@link RoleState.deadline}. */
  readonly deadline: number;
}

/**
 * Grants and takes away the primary role. Provided by an arbiter package,
 * called by the host's agent and, through {@link role}, by the checkpoint
 * loop. Lifecycle: `acquire` -> (role held; `role()` polled) -> `resign` or
 * the role is lost -> `acquire` again or `close`. One arbiter object serves
 * one host and one role (one election).
 */
export interface Arbiter {
  /** Name for messages and events, e.g. `etcd 10.0.0.1:2379,... /remus/cluster1`. */
  readonly name: string;

  /**
   * Campaigns until this host holds the role, and resolves with it. Async;
   * waits as long as another host holds the role, so bound it with `signal`
   * (an abort rejects with ABORTED and withdraws the campaign: nothing of it
   * is left with the arbiter service). Rejects with `ARBITER_FAILED` when the
   * service cannot be reached or answers wrong, naming it and the fix. An
   * implementation promotes only after the previous holder's role is
   * certainly over (for leases: expired on the server, plus a margin for
   * clock-rate drift) and states that margin. Called again after a resign or
   * a loss, it campaigns anew and the new role has a higher epoch.
   */
  acquire(signal: AbortSignal): Promise<Role>;

  /**
   * The role as known now. Synchronous, no I/O, cheap: the checkpoint loop
   * calls it right before every commit. Never throws. `held` turns false
   * (and `deadline` to `-Infinity`) when the arbiter learns the role is
   * gone; it may learn late, which is why the caller also compares
   * `deadline` with `performance.now()` ({@link roleLapse}).
   */
  role(): RoleState;

  /**
   * Gives the role up, so another host can take it sooner (etcd: revokes the
   * lease, which deletes the leader key). Async; idempotent; after it
   * resolves `role().held` is false. Best effort on the service side: when it
   * cannot be reached the role simply expires. Never throws for that.
   */
  resign(): Promise<void>;

  /**
   * Optional: a fenced write. Stores `value` under `name` (a short
   * `[a-z0-9-]` name) with the arbiter service only while this host holds the
   * role under its current epoch, atomically with that check (etcd: a
   * transaction guarded by the leader key's create_revision). Rejects with
   * ROLE_LOST when the role is gone (nothing written), ARBITER_FAILED when
   * the service cannot be reached. The agent uses it to mark the backup
   * outdated before it releases output the backup has not acknowledged
   * (DRBD's outdate-peer), so an outdated backup never promotes.
   */
  publish?(name: string, value: string, signal: AbortSignal): Promise<void>;

  /**
   * Optional: reads what {@link publish} stored under `name` (by any host),
   * linearizably; undefined when nothing was. ARBITER_FAILED when the
   * service cannot be reached.
   */
  read?(name: string, signal: AbortSignal): Promise<string | undefined>;

  /**
   * Ends the arbiter: stops keepalives and campaigns, resigns a held role,
   * closes connections. Async; idempotent; never throws. Nothing may be
   * called after it, except `role()` (not held) and `close()`.
   */
  close(): Promise<void>;
}

/**
 * Why output of `epoch` may not be released now, or undefined when it may:
 * the role must be held, under the same epoch, before its deadline.
 * Synchronous and cheap; `now` defaults to `performance.now()`.
 */
export function roleLapse(state: RoleState, epoch: number, now: number = performance.now()): string | undefined {
  if (!state.held) return `the primary role is not held (epoch ${state.epoch})`;
  if (state.epoch !== epoch) return `the role is held under epoch ${state.epoch}, not the run's epoch ${epoch}`;
  if (!(now < state.deadline)) return `the role's deadline passed ${(now - state.deadline).toFixed(1)} ms ago (epoch ${epoch})`;
  return undefined;
}

/** Throws INVALID_ARGUMENT unless `epoch` is a whole number >= 0 that a JS number holds exactly. */
export function validateEpoch(epoch: unknown, what = 'epoch'): number {
  if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) {
    throw new RemusError('INVALID_ARGUMENT', `${what} ${String(epoch)} is not a whole number from 0 to ${Number.MAX_SAFE_INTEGER}`);
  }
  return epoch;
}

/** Throws INVALID_ARGUMENT unless `name` is a record name for {@link Arbiter.publish}: 1-64 of `[a-z0-9-]`. */
export function validateRecordName(name: unknown): string {
  if (typeof name !== 'string' || !/^[a-z0-9][a-z0-9-]{0,63}$/.test(name)) {
    throw new RemusError('INVALID_ARGUMENT', `record name ${JSON.stringify(name)} must be 1-64 characters of a-z, 0-9 and "-"`);
  }
  return name;
}

/** Checks the members of a third-party arbiter object. Throws INVALID_ARGUMENT naming the member at fault. */
export function validateArbiter(a: unknown): Arbiter {
  const o = a as Record<string, unknown> | null;
  const label = typeof o?.name === 'string' && o.name !== '' ? `arbiter ${o.name}` : 'arbiter';
  if (o === null || typeof o !== 'object') throw new RemusError('INVALID_ARGUMENT', 'arbiter must be an object implementing Arbiter (name, acquire, role, resign, close)');
  if (typeof o.name !== 'string' || o.name === '') throw new RemusError('INVALID_ARGUMENT', `${label} has no name; give it a string \`name\``);
  for (const m of ['acquire', 'role', 'resign', 'close']) {
    if (typeof o[m] !== 'function') throw new RemusError('INVALID_ARGUMENT', `${label} must implement ${m}()`);
  }
  for (const m of ['publish', 'read']) {
    if (o[m] !== undefined && typeof o[m] !== 'function') throw new RemusError('INVALID_ARGUMENT', `${label}: ${m} must be a function or absent`);
  }
  return a as Arbiter;
}

/** Options of {@link localArbiter}. */
export interface LocalArbiterOptions {
  /** Name for messages. Default `local`. */
  readonly name?: string;
  /** Epoch of the first role. Default 1; each later acquire adds 1. */
  readonly firstEpoch?: number;
}

/**
 * A single-host arbiter: the role is granted at once and never expires
 * (deadline `Infinity`) until `resign` or `close`. For tests, the demo and a
 * single-host setup, where there is nobody to be primary against: it
 * arbitrates nothing between hosts.
 */
export function localArbiter(options: LocalArbiterOptions = {}): Arbiter {
  const name = options.name ?? 'local';
  let next = validateEpoch(options.firstEpoch ?? 1, 'firstEpoch');
  if (next < 1) throw new RemusError('INVALID_ARGUMENT', 'firstEpoch must be >= 1 (0 means "never held")');
  let state: RoleState = { held: false, epoch: 0, deadline: -Infinity };
  let closed = false;
  const records = new Map<string, string>();
  return {
    name,
    acquire(signal) {
      if (closed) return Promise.reject(new RemusError('STATE', `arbiter ${name} is closed`));
      if (signal.aborted) return Promise.reject(new RemusError('ABORTED', `acquiring the role of ${name}: aborted`, { cause: signal.reason }));
      if (!state.held) state = { held: true, epoch: next++, deadline: Infinity };
      return Promise.resolve({ epoch: state.epoch, deadline: state.deadline });
    },
    role: () => state,
    publish(record, value) {
      validateRecordName(record);
      if (!state.held) return Promise.reject(new RemusError('ROLE_LOST', `arbiter ${name}: cannot publish ${record}: the role is not held`));
      records.set(record, value);
      return Promise.resolve();
    },
    read(record) {
      validateRecordName(record);
      return Promise.resolve(records.get(record));
    },
    resign() {
      state = { held: false, epoch: state.epoch, deadline: -Infinity };
      return Promise.resolve();
    },
    close() {
      closed = true;
      state = { held: false, epoch: state.epoch, deadline: -Infinity };
      return Promise.resolve();
    },
  };
}

/**
 * The highest epoch this host has seen, persisted. A host never acts as
 * primary, and a backup never accepts state, below it ({@link admit}).
 * Reads are memory; a higher epoch is written to disk (temporary file,
 * fsync, rename, fsync of the directory) before `admit` returns, so it
 * survives a crash or power loss. The stored value never goes down.
 * One store per host (not per run); one process writes it at a time.
 */
export interface EpochStore {
  /** The file. */
  readonly path: string;
  /** The highest epoch recorded (0 for a new store). Memory only. */
  highest(): number;
  /**
   * Accepts `epoch` for acting on it (running as primary, taking a
   * primary's state): throws `EPOCH_STALE` when it is below {@link highest}
   * (nothing changes), records it durably when above (synchronous file
   * write and fsync: this happens once per new epoch, never per checkpoint
   * with an unchanged epoch), and returns it. Throws `OP_FAILED` when the
   * write fails (the epoch is then not accepted).
   */
  admit(epoch: number, who?: string): number;
}

/**
 * Opens (or creates) the epoch store at `path` (a JSON file, e.g.
 * `/var/lib/remus/epoch.json`; its directory is created). Synchronous.
 * A file that exists but cannot be read or parsed throws `INVALID_ARGUMENT`
 * rather than starting again at 0, which would let the host act below an
 * epoch it has seen.
 */
export function openEpochStore(path: string): EpochStore {
  if (typeof path !== 'string' || path === '') throw new RemusError('INVALID_ARGUMENT', 'epoch store path must be a non-empty file path');
  let highest = readStore(path);
  return {
    path,
    highest: () => highest,
    admit(epoch, who = 'epoch') {
      validateEpoch(epoch, who);
      if (epoch < highest) {
        throw new RemusError('EPOCH_STALE', `${who} ${epoch} is below the highest epoch this host has seen (${highest}, in ${path}): refused`, {
          details: { epoch, highest, store: path },
        });
      }
      if (epoch === highest) return epoch;
      try {
        writeStore(path, epoch);
      } catch (e) {
        throw new RemusError('OP_FAILED', `cannot record epoch ${epoch} in ${path}: ${describeCause(e)}; fix the directory's permissions or free space`, { cause: e });
      }
      highest = epoch;
      return epoch;
    },
  };
}

function readStore(path: string): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw new RemusError('INVALID_ARGUMENT', `cannot read the epoch store ${path}: ${describeCause(e)}`, { cause: e });
  }
  let epoch: unknown;
  try {
    epoch = (JSON.parse(text) as { epoch?: unknown }).epoch;
  } catch {
    epoch = undefined;
  }
  if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) {
    throw new RemusError('INVALID_ARGUMENT', `the epoch store ${path} is corrupt (${JSON.stringify(text.slice(0, 80))}); fix: restore it, or write {"epoch": N} with N at least the highest epoch this host ever saw (the arbiter's current one is safe only if its data was never lost)`, {
      details: { store: path },
    });
  }
  return epoch;
}

function writeStore(path: string, epoch: number): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${JSON.stringify({ epoch })}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}
