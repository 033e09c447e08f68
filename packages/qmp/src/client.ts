/**
 * A QMP client: one socket to one QEMU monitor, commands matched to answers
 * by id, events as a stream. It never reconnects: once the connection is
 * gone, every pending and later command fails with QMP_FAILED, and the event
 * streams end. Create it with {@link connectQmp}.
 */
import * as net from 'node:net';
import { RemusError } from '@remus/core';
import { QmpError } from './errors.js';
import type { QmpEvent, QmpEventListener } from './events.js';

/** Where a QMP monitor listens: a unix socket path, or a TCP host and port. */
export type QmpAddress = { readonly path: string } | { readonly host: string; readonly port: number };

/** What QEMU says when a client connects (`{"QMP": {...}}`). */
export interface QmpGreeting {
  readonly version: { readonly qemu: { readonly major: number; readonly minor: number; readonly micro: number }; readonly package: string };
  /** Capabilities QEMU offers (e.g. `oob`). */
  readonly capabilities: readonly string[];
}

export interface QmpConnectOptions {
  /** Time for connecting, the greeting and capability negotiation together, ms. Default 5000. */
  readonly timeoutMs?: number;
  /** Aborts the connection attempt. */
  readonly signal?: AbortSignal;
  /** Default time limit of each command, ms. Default 10 000. */
  readonly commandTimeoutMs?: number;
}

export interface QmpCommandOptions {
  /** Time limit of this command, ms (default: the client's `commandTimeoutMs`). */
  readonly timeoutMs?: number;
  /** Aborts waiting for the answer. QEMU may still run the command: QMP has no cancel. */
  readonly signal?: AbortSignal;
}

export interface QmpEventStreamOptions {
  /** Only these event names (default: all). */
  readonly names?: readonly string[];
  /** Ends the stream. */
  readonly signal?: AbortSignal;
  /** Events kept for a slow reader before the oldest are dropped (counted in `dropped`). Default 1024. */
  readonly buffer?: number;
}

/** An async stream of events; `return()` (or `break` in `for await`) unsubscribes. */
export interface QmpEventStream<N extends string = string> extends AsyncIterableIterator<QmpEvent<N>> {
  /** Events dropped because the reader fell more than `buffer` events behind. */
  readonly dropped: number;
}

/** Parses `unix:/path`, `/path`, `tcp:host:port` or `host:port` (also returns an address object unchanged). Throws INVALID_ARGUMENT. */
export function parseQmpAddress(address: string | QmpAddress): QmpAddress {
  if (typeof address === 'object' && address !== null) {
    if ('path' in address && typeof address.path === 'string' && address.path !== '') return { path: address.path };
    if ('port' in address && typeof address.host === 'string' && Number.isInteger(address.port) && address.port > 0 && address.port < 65536) {
      return { host: address.host, port: address.port };
    }
  }
  if (typeof address === 'string') {
    if (address.startsWith('unix:') && address.length > 5) return { path: address.slice(5) };
    if (address.startsWith('/') || address.startsWith('.')) return { path: address };
    const m = /^(?:tcp:)?(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(address);
    if (m) {
      const port = Number(m[2]);
      if (port > 0 && port < 65536) return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
    }
  }
  throw new RemusError(
    'INVALID_ARGUMENT',
    `QMP address ${JSON.stringify(address)} is not valid: use a unix socket path ("/run/qemu/qmp.sock", "unix:/path") or "host:port" ("tcp:127.0.0.1:4444"), or { path } / { host, port }`,
  );
}

/** A short text for an address, for messages and pool keys. */
export function formatQmpAddress(address: QmpAddress): string {
  return 'path' in address ? `unix:${address.path}` : `tcp:${address.host}:${address.port}`;
}

/**
 * Connects to a QMP monitor, reads the greeting and negotiates capabilities
 * (`qmp_capabilities`). Resolves with a ready client; rejects with
 * QMP_FAILED (connection refused, not a QMP monitor, closed early), TIMEOUT
 * or ABORTED, leaving no socket behind.
 */
export function connectQmp(address: string | QmpAddress, options: QmpConnectOptions = {}): Promise<QmpClient> {
  return QmpClient.connect(address, options);
}

/**
 * Opens the socket. A unix monitor whose listen backlog is full (QEMU is
 * still busy with a previous client's goodbye) refuses with EAGAIN at once:
 * that is retried every 20 ms until `gaveUp()`; other errors fail at once
 * with QMP_FAILED.
 */
async function openSocket(addr: QmpAddress, gaveUp: () => boolean): Promise<net.Socket> {
  const where = formatQmpAddress(addr);
  for (;;) {
    const socket = 'path' in addr ? net.connect({ path: addr.path }) : net.connect({ host: addr.host, port: addr.port });
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      socket.once('connect', () => resolve(undefined));
      socket.once('error', resolve);
    });
    if (!error) {
      socket.removeAllListeners('error');
      if (gaveUp()) {
        socket.destroy();
        throw new QmpError(`QMP ${where}: connection attempt abandoned`, { desc: 'abandoned' });
      }
      socket.setNoDelay?.(true);
      return socket;
    }
    socket.destroy();
    if (error.code !== 'EAGAIN' || gaveUp()) {
      throw new QmpError(`QMP ${where}: ${error.message}`, { desc: error.message, cause: error });
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: RemusError) => void;
  readonly timer: NodeJS.Timeout | undefined;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: (() => void) | undefined;
}

/**
 * One QMP connection. Commands may be issued concurrently; QEMU runs them
 * one at a time in the order sent and answers each with its id.
 *
 * Invariants: every command settles exactly once (answer, QEMU error,
 * timeout, abort or connection loss); after close every pending command has
 * been rejected, every timer cleared, every event stream ended and the
 * socket destroyed; nothing reconnects.
 */
export class QmpClient {
  /** Where this client is connected. */
  readonly address: QmpAddress;
  readonly #socket: net.Socket;
  readonly #defaultTimeoutMs: number;
  /** Answers awaited, by id. */
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<QmpEventListener>();
  /** Called once when the connection goes; each waiter removes its own hook when it settles (no leak on long-lived clients). */
  readonly #closeHooks = new Set<(reason: RemusError) => void>();
  #nextId = 1;
  #buffer = '';
  #greeting: QmpGreeting | undefined;
  #onGreeting: ((g: QmpGreeting) => void) | undefined;
  /** Set once the connection is gone: why. */
  #closedBy: RemusError | undefined;
  readonly #closed: Promise<RemusError>;
  #resolveClosed!: (e: RemusError) => void;

  private constructor(socket: net.Socket, address: QmpAddress, defaultTimeoutMs: number) {
    this.#socket = socket;
    this.address = address;
    this.#defaultTimeoutMs = defaultTimeoutMs;
    this.#closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.#destroy(new QmpError(`QMP ${formatQmpAddress(address)}: ${e.message}`, { desc: e.message, cause: e }));
    });
    socket.on('close', () => {
      this.#destroy(new QmpError(`QMP ${formatQmpAddress(address)}: connection closed by QEMU`, { desc: 'connection closed' }));
    });
  }

  /** See {@link connectQmp}. */
  static async connect(address: string | QmpAddress, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const addr = parseQmpAddress(address);
    const timeoutMs = options.timeoutMs ?? 5000;
    const where = formatQmpAddress(addr);
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    let gaveUp = false;
    const bounded = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        gaveUp = true;
        reject(new RemusError('TIMEOUT', `QMP ${where}: no greeting and negotiation within ${timeoutMs} ms`, { details: { address: where } }));
      }, timeoutMs);
      onAbort = () => {
        gaveUp = true;
        reject(new RemusError('ABORTED', `QMP ${where}: connection aborted`, { cause: options.signal?.reason }));
      };
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
    });
    bounded.catch(() => undefined);
    let client: QmpClient | undefined;
    try {
      const socket = await Promise.race([openSocket(addr, () => gaveUp), bounded]);
      client = new QmpClient(socket, addr, options.commandTimeoutMs ?? 10_000);
      await Promise.race([client.#ready(), bounded]);
      await Promise.race([client.execute('qmp_capabilities', undefined, { timeoutMs }), bounded]);
    } catch (e) {
      const error = e instanceof RemusError ? e : new QmpError(`QMP ${where}: ${String(e)}`, { desc: String(e), cause: e });
      if (client) client.#destroy(error);
      throw error;
    } finally {
      clearTimeout(timer);
      if (onAbort) options.signal?.removeEventListener('abort', onAbort);
    }
    return client;
  }

  /** QEMU's greeting (version, offered capabilities). */
  get greeting(): QmpGreeting {
    if (!this.#greeting) throw new RemusError('STATE', 'QMP greeting not received yet');
    return this.#greeting;
  }

  /** True once the connection is gone (closed by us or by QEMU). */
  get closed(): boolean {
    return this.#closedBy !== undefined;
  }

  /** Resolves, with the reason, when the connection is gone. Never rejects. */
  whenClosed(): Promise<RemusError> {
    return this.#closed;
  }

  /** Number of commands awaiting an answer. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Resolves on the greeting; rejects if the connection goes first. */
  #ready(): Promise<QmpGreeting> {
    if (this.#greeting) return Promise.resolve(this.#greeting);
    return new Promise((resolve, reject) => {
      const hook = (why: RemusError): void => reject(why);
      this.#closeHooks.add(hook);
      this.#onGreeting = (g) => {
        this.#closeHooks.delete(hook);
        resolve(g);
      };
    });
  }

  /**
   * Runs a QMP command and resolves with its `return` value. Rejects with a
   * {@link QmpError} carrying QEMU's class and description, TIMEOUT after
   * the time limit (a late answer is discarded), ABORTED, or QMP_FAILED
   * when the connection is gone.
   */
  execute<R = unknown>(command: string, args?: Record<string, unknown>, options: QmpCommandOptions = {}): Promise<R> {
    if (this.#closedBy) {
      return Promise.reject(
        new QmpError(`QMP ${command}: connection is closed (${this.#closedBy.message})`, { desc: 'connection closed', command, cause: this.#closedBy }),
      );
    }
    const { signal } = options;
    if (signal?.aborted) {
      return Promise.reject(new RemusError('ABORTED', `QMP ${command}: aborted before it was sent`, { cause: signal.reason }));
    }
    const id = this.#nextId++;
    const line = JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id }) + '\n';
    return new Promise<R>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.#defaultTimeoutMs;
      const timer =
        timeoutMs > 0 && Number.isFinite(timeoutMs)
          ? setTimeout(() => {
              this.#settle(id)?.reject(
                new RemusError('TIMEOUT', `QMP ${command}: no answer within ${timeoutMs} ms`, { details: { command, timeoutMs } }),
              );
            }, timeoutMs)
          : undefined;
      const onAbort = signal
        ? () => this.#settle(id)?.reject(new RemusError('ABORTED', `QMP ${command}: aborted while waiting for the answer`, { cause: signal.reason }))
        : undefined;
      if (onAbort) signal!.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer, signal, onAbort });
      this.#socket.write(line);
    });
  }

  /**
   * Runs an HMP command through `human-monitor-command` (for steps QMP
   * lacks, like `drive_add`) and resolves with its text output. HMP reports
   * its errors as text, not as QMP errors: the caller judges the output.
   */
  hmp(commandLine: string, options?: QmpCommandOptions): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine }, options);
  }

  /** Calls `listener` for every event until the returned function is called or the connection closes. */
  onEvent(listener: QmpEventListener): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /**
   * Events as an async stream, from now on. Ends when the connection
   * closes, the signal fires or the reader calls `return()`.
   */
  events<N extends string = string>(options: QmpEventStreamOptions = {}): QmpEventStream<N> {
    const names = options.names ? new Set(options.names) : undefined;
    const limit = options.buffer ?? 1024;
    const queue: QmpEvent[] = [];
    let waiter: ((r: IteratorResult<QmpEvent<N>>) => void) | undefined;
    let done = false;
    let dropped = 0;
    const finish = (): void => {
      if (done) return;
      done = true;
      unsubscribe();
      this.#closeHooks.delete(finish);
      options.signal?.removeEventListener('abort', finish);
      queue.length = 0;
      waiter?.({ value: undefined, done: true });
      waiter = undefined;
    };
    const unsubscribe = this.onEvent((e) => {
      if (names && !names.has(e.event)) return;
      if (waiter) {
        const w = waiter;
        waiter = undefined;
        w({ value: e as QmpEvent<N>, done: false });
        return;
      }
      queue.push(e);
      if (queue.length > limit) {
        queue.shift();
        dropped++;
      }
    });
    if (options.signal?.aborted) finish();
    else options.signal?.addEventListener('abort', finish, { once: true });
    if (this.#closedBy) finish();
    else this.#closeHooks.add(finish);
    const stream: QmpEventStream<N> = {
      get dropped() {
        return dropped;
      },
      next: () => {
        if (queue.length > 0) return Promise.resolve({ value: queue.shift() as QmpEvent<N>, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          waiter = resolve;
        });
      },
      return: () => {
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return stream;
      },
    };
    return stream;
  }

  /**
   * Resolves with the next event named `name` (that `predicate` accepts).
   * Rejects with TIMEOUT after `timeoutMs` (required: every wait is
   * bounded), ABORTED, or QMP_FAILED if the connection closes first.
   */
  waitForEvent<N extends string>(
    name: N,
    options: { readonly timeoutMs: number; readonly signal?: AbortSignal; readonly predicate?: (e: QmpEvent<N>) => boolean },
  ): Promise<QmpEvent<N>> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const done = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        unsubscribe();
        this.#closeHooks.delete(onClose);
        options.signal?.removeEventListener('abort', onAbort);
        return true;
      };
      const unsubscribe = this.onEvent((e) => {
        if (e.event !== name || (options.predicate && !options.predicate(e as QmpEvent<N>))) return;
        if (done()) resolve(e as QmpEvent<N>);
      });
      const timer = setTimeout(() => {
        if (done()) reject(new RemusError('TIMEOUT', `QMP: no ${name} event within ${options.timeoutMs} ms`, { details: { event: name } }));
      }, options.timeoutMs);
      const onAbort = (): void => {
        if (done()) reject(new RemusError('ABORTED', `QMP: wait for ${name} aborted`, { cause: options.signal?.reason }));
      };
      const onClose = (why: RemusError): void => {
        if (done()) reject(new QmpError(`QMP: connection closed while waiting for ${name}`, { desc: 'connection closed', cause: why }));
      };
      if (options.signal?.aborted) return onAbort();
      if (this.#closedBy) return onClose(this.#closedBy);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#closeHooks.add(onClose);
    });
  }

  /**
   * Closes the connection: rejects every pending command with QMP_FAILED,
   * ends every event stream, clears every timer and destroys the socket.
   * Idempotent; resolves once the socket is closed (bounded: it is
   * destroyed, not drained).
   */
  async close(): Promise<void> {
    this.#destroy(new QmpError(`QMP ${formatQmpAddress(this.address)}: connection closed by the client`, { desc: 'closed by the client' }));
    if (!this.#socket.closed) await new Promise<void>((resolve) => this.#socket.once('close', () => resolve()));
  }

  /** Tears the connection down with `reason` (idempotent). */
  #destroy(reason: RemusError): void {
    if (this.#closedBy) return;
    this.#closedBy = reason;
    this.#socket.destroy();
    for (const id of [...this.#pending.keys()]) {
      const p = this.#settle(id)!;
      p.reject(new QmpError(`QMP ${p.command}: ${reason.message}`, { desc: reason instanceof QmpError ? reason.desc : reason.message, command: p.command, cause: reason }));
    }
    this.#listeners.clear();
    const hooks = [...this.#closeHooks];
    this.#closeHooks.clear();
    for (const h of hooks) h(reason);
    this.#resolveClosed(reason);
  }

  /** Removes a pending command and its timer/abort hook; undefined if it already settled. */
  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    this.#pending.delete(id);
    if (p.timer) clearTimeout(p.timer);
    if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort);
    return p;
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    let nl: number;
    // QEMU ends every message with "\r\n"; newlines inside strings are escaped.
    while ((nl = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, nl).trim();
      this.#buffer = this.#buffer.slice(nl + 1);
      if (line !== '') this.#onMessage(line);
      if (this.#closedBy) return;
    }
  }

  #onMessage(line: string): void {
    let msg: Record<string, any>;
    try {
      msg = JSON.parse(line) as Record<string, any>;
    } catch (e) {
      this.#destroy(new QmpError(`QMP ${formatQmpAddress(this.address)}: not JSON from QEMU: ${line.slice(0, 80)}`, { desc: 'protocol error', cause: e }));
      return;
    }
    if ('QMP' in msg) {
      this.#greeting = msg['QMP'] as QmpGreeting;
      this.#onGreeting?.(this.#greeting);
      this.#onGreeting = undefined;
      return;
    }
    if (typeof msg['event'] === 'string') {
      const event = { event: msg['event'], data: msg['data'] ?? {}, timestamp: msg['timestamp'] } as QmpEvent;
      for (const l of [...this.#listeners]) {
        try {
          l(event);
        } catch {
          // a listener's fault must not stop the others or the stream
        }
      }
      return;
    }
    // An answer without our id (QEMU could not parse a request) belongs to the oldest pending command: QMP answers in order.
    const id = typeof msg['id'] === 'number' ? msg['id'] : this.#pending.keys().next().value;
    if (id === undefined) return;
    const p = this.#settle(id);
    if (!p) return; // timed out or aborted earlier: the late answer is discarded
    if ('error' in msg) {
      const err = msg['error'] as { class?: string; desc?: string };
      const desc = String(err.desc ?? 'unknown error');
      p.reject(new QmpError(`QMP ${p.command}: ${err.class ?? 'Error'}: ${desc}`, { errorClass: String(err.class ?? 'GenericError'), desc, command: p.command }));
      return;
    }
    p.resolve(msg['return']);
  }
}
