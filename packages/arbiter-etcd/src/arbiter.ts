/**
 * The primary role as an etcd election, per `ha.md`:
 *
 * - **Campaign**: grant a lease (TTL), create `<prefix>/<leaseID hex>` bound
 *   to it only if it does not exist (`CreateRevision == 0`), then wait until
 *   every key of the prefix with a lower create_revision is gone. The own
 *   key's create_revision is the **epoch**: cluster-wide and strictly
 *   increasing from one holder to the next.
 * - **Promotion** waits, after the lower keys are gone, until each of their
 *   leases is gone on the server too (a key deleted by hand leaves its
 *   holder's lease alive: then we wait), plus `promotionMarginMs` for
 *   clock-rate drift and a commit already under way on the old primary.
 * - **Deadline**: keepalives go one per stream, so each answer belongs to
 *   one send time; the deadline is the send time (`performance.now()`) of
 *   the last answered keepalive + the TTL the server granted − `marginMs`.
 *   No client-library "lost" event is involved, and no wall clock. Once the
 *   deadline passes the role is over for good (held turns false, the lease
 *   is revoked best effort); the next acquire is a new campaign with a
 *   higher epoch.
 * - While holding the role, every keepalive round also checks that the
 *   leader key still exists; if someone deleted it, the role ends at once.
 * - `publish` is a transaction guarded by the leader key's create_revision:
 *   it writes only while this host holds the role under its epoch.
 *
 * Waiting is by polling (`pollIntervalMs`), not by watch: a watch stream on
 * a partitioned member can stay open and silent, a poll has a time limit.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { RemusError, describeCause, validateEpoch, validateRecordName, type Arbiter, type Role, type RoleState } from '@remus/core';
import { EtcdClient, type KeyValue } from './client.js';

/** What the arbiter reports (for logs, `--json` events and figures). */
export type EtcdArbiterEvent =
  | { readonly type: 'lease-granted'; readonly lease: string; readonly ttlSeconds: number }
  | { readonly type: 'campaigning'; readonly key: string; readonly createRevision: number }
  | { readonly type: 'waiting'; readonly behind: readonly { readonly key: string; readonly host: string; readonly createRevision: number }[] }
  | { readonly type: 'old-lease-gone'; readonly lease: string }
  | { readonly type: 'elected'; readonly epoch: number; readonly deadlineInMs: number }
  | { readonly type: 'keepalive-failed'; readonly error: string; readonly deadlineInMs: number }
  | { readonly type: 'etcd-error'; readonly error: string }
  | { readonly type: 'role-lost'; readonly epoch: number; readonly reason: string }
  | { readonly type: 'resigned'; readonly epoch: number };

export interface EtcdArbiterOptions {
  /** `host:port` of each etcd member (at least three members, one off the protected pair). */
  readonly endpoints: readonly string[];
  /** Election prefix, e.g. `/remus/cluster1/primary` (no trailing slash). */
  readonly prefix: string;
  /** This host's name, stored in its key (who is primary, for `remus status`). */
  readonly host: string;
  /** Lease TTL in seconds, whole, >= 2 (etcd's minimum with default settings). Default 5. */
  readonly ttlSeconds?: number;
  /**
   * Subtracted from every deadline, ms: covers the commit that starts just
   * before the deadline and clock-rate drift between this host and the
   * etcd leader. Default max(250, 10% of the TTL). Must be < TTL/2.
   */
  readonly marginMs?: number;
  /**
   * Waited after the previous holder's key and lease are gone, before this
   * host takes the role, ms. Default: `marginMs`.
   */
  readonly promotionMarginMs?: number;
  /** Between keepalives, ms. Default TTL/3. */
  readonly keepAliveIntervalMs?: number;
  /** Between two reads of the election while waiting, ms. Default 200. */
  readonly pollIntervalMs?: number;
  /** Time limit of one RPC on one member, ms. Default min(1000, TTL/4). */
  readonly callTimeoutMs?: number;
  /** Receives every event. Must not throw (a throw is ignored). */
  readonly onEvent?: (event: EtcdArbiterEvent) => void;
}

/** Who holds the role, as etcd says now. */
export interface Leader {
  readonly host: string;
  readonly epoch: number;
  readonly key: string;
}

/** An {@link Arbiter} on etcd, with {@link EtcdArbiter.leader} and figures on top. */
export interface EtcdArbiter extends Arbiter {
  /** The current holder (lowest create_revision under the prefix), or undefined. One Range. */
  leader(signal: AbortSignal): Promise<Leader | undefined>;
  /** The resolved settings. */
  readonly settings: Readonly<Required<Omit<EtcdArbiterOptions, 'onEvent'>>>;
  /** RPCs made so far (they follow keepalives and campaigns, never checkpoints). */
  readonly rpcCount: number;
}

const NOT_HELD: RoleState = Object.freeze({ held: false, epoch: 0, deadline: -Infinity });

/** Makes an etcd arbiter; nothing is contacted before {@link Arbiter.acquire} or `leader`. Throws INVALID_ARGUMENT for bad options. */
export function etcdArbiter(options: EtcdArbiterOptions): EtcdArbiter {
  return new EtcdElection(options);
}

class EtcdElection implements EtcdArbiter {
  readonly name: string;
  readonly settings: Readonly<Required<Omit<EtcdArbiterOptions, 'onEvent'>>>;
  readonly #client: EtcdClient;
  readonly #onEvent: ((e: EtcdArbiterEvent) => void) | undefined;
  /** The role as `role()` reports it. Replaced, never mutated. */
  #state: RoleState = NOT_HELD;
  /** Lease of the current campaign or role; undefined when none. */
  #lease: string | undefined;
  /** Our key (under the prefix) while a campaign or role exists. */
  #key: Buffer | undefined;
  /** Send time + granted TTL − margin of the last answered keepalive of `#lease`. */
  #leaseDeadline = -Infinity;
  /** True once the server said the lease is gone (TTL <= 0). */
  #leaseGone = false;
  /** Stops the keepalive loop of the current lease. */
  #keepalive: AbortController | undefined;
  #campaigning = false;
  #closed = false;

  constructor(o: EtcdArbiterOptions) {
    const ttl = o.ttlSeconds ?? 5;
    if (!Number.isInteger(ttl) || ttl < 2 || ttl > 3600) throw new RemusError('INVALID_ARGUMENT', `ttlSeconds ${String(ttl)} must be a whole number of seconds from 2 (etcd's minimum) to 3600`);
    const ttlMs = ttl * 1000;
    const margin = o.marginMs ?? Math.max(250, ttlMs / 10);
    if (!(margin >= 0 && margin < ttlMs / 2)) throw new RemusError('INVALID_ARGUMENT', `marginMs ${String(margin)} must be >= 0 and below half the TTL (${ttlMs / 2} ms)`);
    const interval = o.keepAliveIntervalMs ?? Math.round(ttlMs / 3);
    if (!(interval >= 10 && interval <= ttlMs / 2)) throw new RemusError('INVALID_ARGUMENT', `keepAliveIntervalMs ${String(interval)} must be from 10 to half the TTL (${ttlMs / 2} ms)`);
    const poll = o.pollIntervalMs ?? 200;
    if (!(poll >= 10 && poll <= 60_000)) throw new RemusError('INVALID_ARGUMENT', `pollIntervalMs ${String(poll)} must be from 10 to 60000`);
    const call = o.callTimeoutMs ?? Math.min(1000, ttlMs / 4);
    if (!(call >= 10 && call <= 60_000)) throw new RemusError('INVALID_ARGUMENT', `callTimeoutMs ${String(call)} must be from 10 to 60000`);
    const promotion = o.promotionMarginMs ?? margin;
    if (!(promotion >= 0 && promotion <= 60_000)) throw new RemusError('INVALID_ARGUMENT', `promotionMarginMs ${String(promotion)} must be from 0 to 60000`);
    if (typeof o.prefix !== 'string' || !/^\/[\x21-\x7e]*[^/]$/.test(o.prefix)) {
      throw new RemusError('INVALID_ARGUMENT', `prefix ${JSON.stringify(o.prefix)} must start with "/", not end with "/", and hold printable ASCII only, e.g. "/remus/cluster1/primary"`);
    }
    if (typeof o.host !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(o.host)) {
      throw new RemusError('INVALID_ARGUMENT', `host ${JSON.stringify(o.host)} must be a host name (letters, digits, "_", ".", "-", at most 63)`);
    }
    this.#client = new EtcdClient({ endpoints: o.endpoints, callTimeoutMs: call });
    this.settings = {
      endpoints: this.#client.endpoints,
      prefix: o.prefix,
      host: o.host,
      ttlSeconds: ttl,
      marginMs: margin,
      promotionMarginMs: promotion,
      keepAliveIntervalMs: interval,
      pollIntervalMs: poll,
      callTimeoutMs: call,
    };
    this.name = `etcd ${this.#client.endpoints.join(',')} ${o.prefix}`;
    this.#onEvent = o.onEvent;
  }

  get rpcCount(): number {
    return this.#client.calls;
  }

  role(): RoleState {
    return this.#state;
  }

  async acquire(signal: AbortSignal): Promise<Role> {
    if (this.#closed) throw new RemusError('STATE', `arbiter ${this.name} is closed`);
    if (this.#state.held) return { epoch: this.#state.epoch, deadline: this.#state.deadline };
    if (this.#campaigning) throw new RemusError('STATE', `arbiter ${this.name}: a campaign is already running; wait for it or abort it`);
    this.#campaigning = true;
    try {
      for (;;) {
        const role = await this.#campaign(signal);
        if (role) return role;
        // The lease expired while we waited (we were cut off): campaign again with a new one.
      }
    } catch (e) {
      await this.#withdraw();
      if (signal.aborted) throw new RemusError('ABORTED', `campaign for the primary role (${this.name}): aborted`, { cause: signal.reason });
      throw e;
    } finally {
      this.#campaigning = false;
    }
  }

  async resign(): Promise<void> {
    const epoch = this.#state.epoch;
    const wasHeld = this.#state.held;
    // Fence first, synchronously: from here on role() says not held.
    this.#state = { held: false, epoch, deadline: -Infinity };
    await this.#withdraw();
    if (wasHeld) this.#emit({ type: 'resigned', epoch });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.resign();
    this.#closed = true;
    this.#client.close();
  }

  async publish(name: string, value: string, signal: AbortSignal): Promise<void> {
    validateRecordName(name);
    const { held, epoch } = this.#state;
    const key = this.#key;
    if (!held || !key) throw new RemusError('ROLE_LOST', `arbiter ${this.name}: cannot publish ${name}: the role is not held`);
    const r = await this.#client.txn(
      {
        compare: [{ result: 0, target: 1, key, create_revision: String(epoch) }],
        success: [{ request_put: { key: this.#recordKey(name), value: Buffer.from(value) } }],
        failure: [],
      },
      signal,
    );
    if (!r.succeeded) {
      this.#lose('the leader key is gone (found while publishing)');
      throw new RemusError('ROLE_LOST', `arbiter ${this.name}: cannot publish ${name}: the leader key of epoch ${epoch} is gone`);
    }
  }

  async read(name: string, signal: AbortSignal): Promise<string | undefined> {
    validateRecordName(name);
    const r = await this.#client.range({ key: this.#recordKey(name) }, signal);
    return r.kvs[0]?.value.toString();
  }

  async leader(signal: AbortSignal): Promise<Leader | undefined> {
    const r = await this.#client.range({ ...this.#prefixRange(), sort_order: 1, sort_target: 2, limit: '1' }, signal);
    const kv = r.kvs[0];
    return kv ? { host: hostOf(kv), epoch: Number(kv.create_revision), key: kv.key.toString() } : undefined;
  }

  /** One campaign with one lease. Resolves with the role, or undefined when the lease was lost meanwhile (start again). */
  async #campaign(signal: AbortSignal): Promise<Role | undefined> {
    const { ttlSeconds, pollIntervalMs, promotionMarginMs } = this.settings;
    // 1. A lease, kept alive from now on. Unreachable etcd fails here: ARBITER_FAILED, nothing held.
    const grant = await this.#client.leaseGrant(ttlSeconds, signal);
    if (grant.error) throw new RemusError('ARBITER_FAILED', `etcd refused a lease of ${ttlSeconds} s: ${grant.error}`);
    this.#lease = grant.ID;
    this.#leaseGone = false;
    this.#leaseDeadline = -Infinity;
    this.#emit({ type: 'lease-granted', lease: grant.ID, ttlSeconds: Number(grant.TTL) });
    this.#startKeepalive(grant.ID);
    // 2. Our key, created only if absent.
    const key = Buffer.from(`${this.settings.prefix}/${BigInt(grant.ID).toString(16)}`);
    this.#key = key;
    const value = Buffer.from(JSON.stringify({ host: this.settings.host, pid: process.pid }));
    const txn = await this.#retrying(signal, () =>
      this.#client.txn(
        {
          compare: [{ result: 0, target: 1, key, create_revision: '0' }],
          success: [{ request_put: { key, value, lease: grant.ID } }],
          failure: [{ request_range: { key } }],
        },
        signal,
      ),
    );
    if (txn === undefined) return undefined;
    const createRevision = txn.succeeded ? Number(txn.header.revision) : Number(txn.responses[0]?.response_range?.kvs[0]?.create_revision);
    validateEpoch(createRevision, 'create_revision of the leader key');
    this.#emit({ type: 'campaigning', key: key.toString(), createRevision });
    // 3. Wait until every lower key is gone; remember their leases.
    const oldLeases = new Set<string>();
    for (;;) {
      const lower = await this.#retrying(signal, () =>
        this.#client.range({ ...this.#prefixRange(), sort_order: 1, sort_target: 2, max_create_revision: String(createRevision - 1) }, signal),
      );
      if (lower === undefined) return undefined;
      for (const kv of lower.kvs) if (kv.lease !== '0') oldLeases.add(kv.lease);
      if (lower.kvs.length === 0) break;
      this.#emit({ type: 'waiting', behind: lower.kvs.map((kv) => ({ key: kv.key.toString(), host: hostOf(kv), createRevision: Number(kv.create_revision) })) });
      await sleep(pollIntervalMs, undefined, { signal });
    }
    // 4. Their leases must be gone on the server too, not only their keys.
    for (const lease of oldLeases) {
      for (;;) {
        const ttl = await this.#retrying(signal, () => this.#client.leaseTimeToLive(lease, signal));
        if (ttl === undefined) return undefined;
        if (Number(ttl.TTL) < 0) break;
        await sleep(pollIntervalMs, undefined, { signal });
      }
      this.#emit({ type: 'old-lease-gone', lease });
    }
    // 5. The stated margin, then a fresh keepalive so the role starts with a fresh deadline.
    await sleep(promotionMarginMs, undefined, { signal });
    const fresh = await this.#retrying(signal, async () => {
      await this.#keepaliveRound(grant.ID, signal);
      return this.#client.range({ key, count_only: true }, signal);
    });
    if (fresh === undefined || Number(fresh.count) !== 1) return undefined;
    const deadline = this.#leaseDeadline;
    if (!(performance.now() < deadline)) return undefined;
    this.#state = { held: true, epoch: createRevision, deadline };
    this.#emit({ type: 'elected', epoch: createRevision, deadlineInMs: deadline - performance.now() });
    return { epoch: createRevision, deadline };
  }

  /**
   * Runs `f` until it succeeds. Transport failures (ARBITER_FAILED: no
   * member answered) are reported and retried after the poll interval; an
   * abort rejects. Resolves undefined when the campaign's lease is gone.
   */
  async #retrying<T>(signal: AbortSignal, f: () => Promise<T>): Promise<T | undefined> {
    for (;;) {
      if (this.#leaseGone) return undefined;
      try {
        return await f();
      } catch (e) {
        if (signal.aborted) throw e;
        if (!(e instanceof RemusError && e.code === 'ARBITER_FAILED')) throw e;
        this.#emit({ type: 'etcd-error', error: e.message });
        if (this.#leaseGone) return undefined;
        await sleep(this.settings.pollIntervalMs, undefined, { signal });
      }
    }
  }

  /** Keeps lease `id` alive until the controller stops it or the lease is gone. */
  #startKeepalive(id: string): void {
    this.#keepalive?.abort();
    const ac = new AbortController();
    this.#keepalive = ac;
    const { keepAliveIntervalMs } = this.settings;
    void (async () => {
      while (!ac.signal.aborted && this.#lease === id) {
        const started = performance.now();
        try {
          await this.#keepaliveRound(id, ac.signal);
          if (this.#state.held) await this.#checkOwnKey(ac.signal);
        } catch (e) {
          if (ac.signal.aborted) return;
          this.#emit({ type: 'keepalive-failed', error: describeCause(e) ?? 'failed', deadlineInMs: this.#leaseDeadline - performance.now() });
        }
        if (this.#leaseGone) {
          this.#lose('the lease expired on the server');
          return;
        }
        if (this.#state.held && !(performance.now() < this.#state.deadline)) {
          this.#lose('no keepalive was answered in time: the deadline passed');
          return;
        }
        const wait = Math.max(0, keepAliveIntervalMs - (performance.now() - started));
        try {
          await sleep(wait, undefined, { signal: ac.signal });
        } catch {
          return;
        }
      }
    })();
  }

  /** One keepalive; moves the deadline forward, or marks the lease gone. */
  async #keepaliveRound(id: string, signal: AbortSignal): Promise<void> {
    const { sentAt, ttl } = await this.#client.keepAlive(id, signal);
    if (this.#lease !== id) return;
    if (ttl <= 0) {
      this.#leaseGone = true;
      return;
    }
    // A held role whose deadline passed is lost for good, even if this (late) answer would extend it:
    // the host has already been told the role lapsed (role() is polled) and may have acted on it.
    if (this.#state.held && !(performance.now() < this.#state.deadline)) {
      this.#lose('no keepalive was answered in time: the deadline passed (a late answer does not revive the role)');
      return;
    }
    const d = sentAt + Math.min(ttl, this.settings.ttlSeconds) * 1000 - this.settings.marginMs;
    if (d > this.#leaseDeadline) this.#leaseDeadline = d;
    if (this.#state.held && d > this.#state.deadline) this.#state = { held: true, epoch: this.#state.epoch, deadline: d };
  }

  async #checkOwnKey(signal: AbortSignal): Promise<void> {
    const key = this.#key;
    if (!key) return;
    const r = await this.#client.range({ key, count_only: true }, signal);
    if (Number(r.count) === 0 && this.#state.held) this.#lose('the leader key was deleted');
  }

  /** The role ended: fence (synchronously), then give the lease back so the next holder need not wait for it. */
  #lose(reason: string): void {
    const epoch = this.#state.epoch;
    const wasHeld = this.#state.held;
    this.#state = { held: false, epoch, deadline: -Infinity };
    if (wasHeld) this.#emit({ type: 'role-lost', epoch, reason });
    void this.#withdraw();
  }

  /** Stops the keepalives and revokes the lease (bounded, best effort). Idempotent. */
  async #withdraw(): Promise<void> {
    this.#keepalive?.abort();
    this.#keepalive = undefined;
    const lease = this.#lease;
    this.#lease = undefined;
    this.#key = undefined;
    this.#leaseDeadline = -Infinity;
    if (lease === undefined || this.#leaseGone) return;
    try {
      await this.#client.leaseRevoke(lease, AbortSignal.timeout(this.settings.callTimeoutMs * this.settings.endpoints.length));
    } catch {
      // Unreachable: the lease expires by itself within the TTL.
    }
  }

  /** Records live beside the election's range: `<prefix>.records/<name>` ('.' sorts before '/'). */
  #recordKey(name: string): Buffer {
    return Buffer.from(`${this.settings.prefix}.records/${name}`);
  }

  #prefixRange(): { key: Buffer; range_end: Buffer } {
    return { key: Buffer.from(`${this.settings.prefix}/`), range_end: Buffer.from(`${this.settings.prefix}0`) };
  }

  #emit(e: EtcdArbiterEvent): void {
    try {
      this.#onEvent?.(e);
    } catch {
      // A listener's fault changes nothing.
    }
  }
}

function hostOf(kv: KeyValue): string {
  try {
    const v = JSON.parse(kv.value.toString()) as { host?: unknown };
    return typeof v.host === 'string' ? v.host : '?';
  } catch {
    return '?';
  }
}
