/**
 * The few etcd v3 RPCs the arbiter needs, over @grpc/grpc-js, with one
 * channel per endpoint. Every call has a time limit and an abort signal; a
 * call that fails for transport reasons (unreachable, timed out, no leader)
 * moves on to the next endpoint, and the failed endpoint's channel is closed
 * and made anew on its next use (a silently cut connection would otherwise
 * keep eating calls until TCP gives up, minutes later). Answers are answers:
 * an error etcd itself returns (lease not found) is not retried elsewhere.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { RemusError, describeCause, withDeadline } from '@remus/core';

const PROTO = fileURLToPath(new URL('../proto/etcd.proto', import.meta.url));

/** int64 fields arrive as decimal strings (proto-loader `longs: String`). */
type Int64 = string;

export interface KeyValue {
  readonly key: Buffer;
  readonly create_revision: Int64;
  readonly mod_revision: Int64;
  readonly value: Buffer;
  readonly lease: Int64;
}

export interface ResponseHeader {
  readonly cluster_id: Int64;
  readonly member_id: Int64;
  readonly revision: Int64;
}

export interface RangeResponse {
  readonly header: ResponseHeader;
  readonly kvs: readonly KeyValue[];
  readonly count: Int64;
}

export interface TxnResponse {
  readonly header: ResponseHeader;
  readonly succeeded: boolean;
  readonly responses: readonly { readonly response_range?: RangeResponse }[];
}

export interface LeaseGrantResponse {
  readonly header: ResponseHeader;
  readonly ID: Int64;
  readonly TTL: Int64;
  readonly error: string;
}

export interface LeaseTimeToLiveResponse {
  readonly header: ResponseHeader;
  readonly ID: Int64;
  /** Remaining seconds; -1 when the lease does not exist (expired or revoked). */
  readonly TTL: Int64;
}

type Service = 'KV' | 'Lease';

interface Definitions {
  readonly KV: grpc.ServiceClientConstructor;
  readonly Lease: grpc.ServiceClientConstructor;
}

let definitions: Definitions | undefined;

function loadDefinitions(): Definitions {
  if (definitions) return definitions;
  const pkg = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: Number, defaults: true, oneofs: true });
  const root = grpc.loadPackageDefinition(pkg) as unknown as { etcdserverpb: Definitions };
  definitions = root.etcdserverpb;
  return definitions;
}

/** gRPC codes that say "this endpoint could not answer now": try the next one. */
const TRANSPORT = new Set<number>([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.UNKNOWN,
  grpc.status.INTERNAL,
  grpc.status.CANCELLED,
  grpc.status.RESOURCE_EXHAUSTED,
]);

export interface EtcdClientOptions {
  /** `host:port` of each member (an `http://` prefix is accepted). */
  readonly endpoints: readonly string[];
  /** Time limit of one attempt on one endpoint, ms. */
  readonly callTimeoutMs: number;
}

interface Endpoint {
  readonly address: string;
  clients: Partial<Record<Service, grpc.Client>>;
}

/** Strips `http://`; checks `host:port`. Throws INVALID_ARGUMENT naming the endpoint and the fix. */
export function parseEndpoint(e: unknown): string {
  if (typeof e !== 'string') throw new RemusError('INVALID_ARGUMENT', `etcd endpoint ${String(e)} must be a string "host:port"`);
  if (/^https:\/\//.test(e)) throw new RemusError('INVALID_ARGUMENT', `etcd endpoint ${e}: TLS to etcd is not supported yet; use http:// on a trusted network or a local proxy`);
  const a = e.replace(/^http:\/\//, '').replace(/\/$/, '');
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(a);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new RemusError('INVALID_ARGUMENT', `etcd endpoint ${JSON.stringify(e)} is not host:port; write e.g. "10.0.0.1:2379"`);
  }
  return a;
}

/** Talks to one etcd cluster through any of its members. */
export class EtcdClient {
  readonly endpoints: readonly string[];
  readonly #timeoutMs: number;
  readonly #eps: Endpoint[];
  /** Index of the endpoint tried first (the last one that answered). */
  #current = 0;
  #closed = false;
  /** Calls that failed for transport reasons and moved on (for figures). */
  failovers = 0;
  /** RPCs started (for figures: the arbiter's cost does not grow with checkpoints). */
  calls = 0;

  constructor(options: EtcdClientOptions) {
    if (!Array.isArray(options.endpoints) || options.endpoints.length === 0) {
      throw new RemusError('INVALID_ARGUMENT', 'etcd endpoints: give at least one "host:port" (three members, one off the protected pair)');
    }
    this.endpoints = options.endpoints.map(parseEndpoint);
    this.#timeoutMs = options.callTimeoutMs;
    this.#eps = this.endpoints.map((address) => ({ address, clients: {} }));
    loadDefinitions();
  }

  /** Range over [key, rangeEnd) (one key when rangeEnd is absent). */
  range(request: Record<string, unknown>, signal: AbortSignal): Promise<RangeResponse> {
    return this.#unary('KV', 'Range', request, signal);
  }

  txn(request: Record<string, unknown>, signal: AbortSignal): Promise<TxnResponse> {
    return this.#unary('KV', 'Txn', request, signal);
  }

  leaseGrant(ttlSeconds: number, signal: AbortSignal): Promise<LeaseGrantResponse> {
    return this.#unary('Lease', 'LeaseGrant', { TTL: String(ttlSeconds), ID: '0' }, signal);
  }

  leaseRevoke(id: Int64, signal: AbortSignal): Promise<unknown> {
    return this.#unary('Lease', 'LeaseRevoke', { ID: id }, signal);
  }

  leaseTimeToLive(id: Int64, signal: AbortSignal): Promise<LeaseTimeToLiveResponse> {
    return this.#unary('Lease', 'LeaseTimeToLive', { ID: id, keys: false }, signal);
  }

  /**
   * Sends one keepalive for lease `id` on a fresh stream and waits for its
   * answer. Resolves with the monotonic send time (`performance.now()`) and
   * the TTL the server granted (<= 0: the lease is gone). One request per
   * stream, so the answer belongs to exactly this send time.
   */
  async keepAlive(id: Int64, signal: AbortSignal): Promise<{ sentAt: number; ttl: number }> {
    return this.#attempt(signal, 'LeaseKeepAlive', (client, deadline, bound) => {
      return new Promise((resolve, reject) => {
        const stream = (client as unknown as { LeaseKeepAlive(o: grpc.CallOptions): grpc.ClientDuplexStream<unknown, { TTL: Int64 }> }).LeaseKeepAlive({ deadline });
        let settled = false;
        const finish = (f: () => void): void => {
          if (settled) return;
          settled = true;
          bound.removeEventListener('abort', onAbort);
          stream.cancel();
          f();
        };
        const onAbort = (): void => finish(() => reject(bound.reason));
        bound.addEventListener('abort', onAbort, { once: true });
        stream.on('data', (r: { TTL: Int64 }) => finish(() => resolve({ sentAt, ttl: Number(r.TTL) })));
        stream.on('error', (e: Error) => finish(() => reject(e)));
        stream.on('end', () => finish(() => reject(Object.assign(new Error('keepalive stream ended without an answer'), { code: grpc.status.UNAVAILABLE }))));
        const sentAt = performance.now();
        stream.write({ ID: id });
      });
    });
  }

  /** Closes every channel. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const ep of this.#eps) this.#drop(ep);
  }

  #unary<T>(service: Service, method: string, request: Record<string, unknown>, signal: AbortSignal): Promise<T> {
    return this.#attempt(signal, `${service}.${method}`, (client, deadline, bound) => {
      return new Promise<T>((resolve, reject) => {
        const call = (client as unknown as Record<string, (r: unknown, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: T) => void) => grpc.ClientUnaryCall>)[method]!.call(
          client,
          request,
          { deadline },
          (e, r) => {
            bound.removeEventListener('abort', onAbort);
            if (e) reject(e);
            else resolve(r);
          },
        );
        const onAbort = (): void => call.cancel();
        bound.addEventListener('abort', onAbort, { once: true });
      });
    });
  }

  /**
   * Runs `one` on each endpoint in turn, from the last good one, until one
   * answers; each attempt bounded by the call time limit and `signal`.
   * Rejects with ARBITER_FAILED naming every endpoint and its error when none
   * answers, with the error itself when etcd answered with one, or with the
   * signal's reason.
   */
  async #attempt<T>(signal: AbortSignal, what: string, one: (client: grpc.Client, deadline: number, bound: AbortSignal) => Promise<T>): Promise<T> {
    if (this.#closed) throw new RemusError('STATE', 'the etcd client is closed');
    const errors: string[] = [];
    for (let i = 0; i < this.#eps.length; i++) {
      if (signal.aborted) throw signal.reason;
      const index = (this.#current + i) % this.#eps.length;
      const ep = this.#eps[index] as Endpoint;
      const service: Service = what.startsWith('KV') ? 'KV' : 'Lease';
      // Core's withDeadline: the caller's signal or the time limit, with nothing left on the
      // caller's signal afterwards (not AbortSignal.any, whose composite Node 20 keeps in it for
      // as long as it lives: keepalives and campaign polls run for days on one signal).
      let bound: AbortSignal | undefined;
      this.calls++;
      try {
        const r = await withDeadline(
          (b) => {
            bound = b;
            return one(this.#client(ep, service), Date.now() + this.#timeoutMs, b);
          },
          { what: `etcd ${what} on ${ep.address}`, timeoutMs: this.#timeoutMs, signal },
        );
        this.#current = index;
        return r;
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        const timedOut = bound?.aborted === true;
        const code = (e as { code?: unknown }).code;
        const transport = timedOut || typeof code !== 'number' || TRANSPORT.has(code);
        if (!transport) throw e;
        errors.push(`${ep.address}: ${timedOut ? `no answer within ${this.#timeoutMs} ms` : describeCause(e)}`);
        this.#drop(ep);
        this.failovers++;
      }
    }
    throw new RemusError('ARBITER_FAILED', `etcd ${what}: no member answered (${errors.join('; ')}); fix: check the endpoints and that a majority of the etcd members run (etcdctl --endpoints ${this.endpoints.join(',')} endpoint health)`, {
      details: { endpoints: this.endpoints, errors },
    });
  }

  #client(ep: Endpoint, service: Service): grpc.Client {
    const existing = ep.clients[service];
    if (existing) return existing;
    const Ctor = loadDefinitions()[service];
    const c = new Ctor(ep.address, grpc.credentials.createInsecure(), {
      // Reconnect fast after a partition heals; never wait for a dead channel.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    });
    ep.clients[service] = c;
    return c;
  }

  #drop(ep: Endpoint): void {
    for (const c of Object.values(ep.clients)) c?.close();
    ep.clients = {};
  }
}
