/**
 * A QMP client: one socket to one QEMU monitor, commands matched to answers
 * by id, events as a stream. It never reconnects: once the connection is
 * gone, every pending and later command fails with QMP_FAILED, and the event
 * streams end. Create it with {@link connectQmp}.
 */
import * as net from 'node:net';
import { RemusError, abortError, parseSocketAddress, pollUntil, raceSignal, withDeadline, type SocketAddress } from '@remus/core';
import { QmpError } from './errors.js';
import type { QmpEvent, QmpEventListener } from './events.js';
import { QmpLineReader, parseQmpMessage, type QmpGreeting } from './wire.js';

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

/**
 * Reads a QMP monitor's address as core's {@link SocketAddress}: what
 * `parseSocketAddress` takes (`unix:/path`, `/path`, `tcp:host:port`,
 * `host:port`, `{ path }`, `{ host, port }`), plus a relative socket path
 * (`./qmp.sock`). Throws INVALID_ARGUMENT.
 */
export function parseQmpAddress(address: unknown): SocketAddress {
  if (typeof address === 'string' && address.startsWith('.')) return parseSocketAddress({ path: address }, 'QMP address');
  return parseSocketAddress(address, 'QMP address');
}

/** QEMU's `-qmp` form of an address (`unix:/path`, `tcp:host:port`), for messages and pool keys. */
export function formatQmpAddress(address: SocketAddress): string {
  return 'path' in address ? `unix:${address.path}` : `tcp:${address.host}:${address.port}`;
}

/**
 * Connects to a QMP monitor, reads the greeting and negotiates capabilities
 * (`qmp_capabilities`). Resolves with a ready client; rejects with
 * QMP_FAILED (connection refused, not a QMP monitor, closed early), TIMEOUT
 * or ABORTED, leaving no socket behind.
 */
export function connectQmp(address: string | SocketAddress, options: QmpConnectOptions = {}): Promise<QmpClient> {
  return QmpClient.connect(address, options);
}

/**
 * Opens the socket. A unix monitor whose listen backlog is full (QEMU is
 * still busy with a previous client's goodbye) refuses with EAGAIN at once:
 * that is retried every 20 ms until the time limit or `signal`; other
 * errors fail at once with QMP_FAILED. No socket is left behind on failure.
 */
function openSocket(addr: SocketAddress, timeoutMs: number, signal: AbortSignal): Promise<net.Socket> {
  const where = formatQmpAddress(addr);
  return pollUntil(
    async (attempt) => {
      const socket = 'path' in addr ? net.connect({ path: addr.path }) : net.connect({ host: addr.host, port: addr.port });
      let error: NodeJS.ErrnoException | undefined;
      try {
        error = await raceSignal(
          new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
            socket.once('connect', () => resolve(undefined));
            socket.once('error', resolve);
          }),
          attempt,
          () => abortError(attempt, `QMP ${where}: connect`),
        );
      } catch (e) {
        socket.destroy();
        throw e;
      }
      if (!error) {
        socket.removeAllListeners('error');
        socket.setNoDelay?.(true);
        return socket;
      }
      socket.destroy();
      if (error.code === 'EAGAIN') return undefined;
      throw new QmpError(`QMP ${where}: ${error.message}`, { desc: error.message, cause: error });
    },
    { what: `QMP ${where}: connect`, timeoutMs, intervalMs: 20, signal },
  );
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
  readonly address: SocketAddress;
  readonly #socket: net.Socket;
  readonly #defaultTimeoutMs: number;
  /** Answers awaited, by id. */
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<QmpEventListener>();
  /** Called once when the connection goes; each waiter removes its own hook when it settles (no leak on long-lived clients). */
  readonly #closeHooks = new Set<(reason: RemusError) => void>();
  #nextId = 1;
  readonly #lines = new QmpLineReader();
  #greeting: QmpGreeting | undefined;
  #onGreeting: ((g: QmpGreeting) => void) | undefined;
  /** Set once the connection is gone: why. */
  #closedBy: RemusError | undefined;
  readonly #closed: Promise<RemusError>;
  #resolveClosed!: (e: RemusError) => void;

  private constructor(socket: net.Socket, address: SocketAddress, defaultTimeoutMs: number) {
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
  static async connect(address: string | SocketAddress, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const addr = parseQmpAddress(address);
    const timeoutMs = options.timeoutMs ?? 5000;
    const where = formatQmpAddress(addr);
    let client: QmpClient | undefined;
    try {
      return await withDeadline(
        async (signal) => {
          const socket = await openSocket(addr, timeoutMs, signal);
          // Made here, so that a deadline passing meanwhile still finds and destroys it below.
          client = new QmpClient(socket, addr, options.commandTimeoutMs ?? 10_000);
          await raceSignal(client.#ready(), signal);
          await client.execute('qmp_capabilities', undefined, { timeoutMs, signal });
          return client;
        },
        { what: `QMP ${where}: connect, greeting and negotiation`, timeoutMs, ...(options.signal ? { signal: options.signal } : {}) },
      );
    } catch (e) {
      const error = e instanceof RemusError ? e : new QmpError(`QMP ${where}: ${String(e)}`, { desc: String(e), cause: e });
      if (client) client.#destroy(error);
      throw error;
    }
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
    return withDeadline(
      (signal) =>
        new Promise<QmpEvent<N>>((resolve, reject) => {
          const done = (): void => {
            unsubscribe();
            this.#closeHooks.delete(onClose);
            signal.removeEventListener('abort', done);
          };
          const unsubscribe = this.onEvent((e) => {
            if (e.event !== name || (options.predicate && !options.predicate(e as QmpEvent<N>))) return;
            done();
            resolve(e as QmpEvent<N>);
          });
          const onClose = (why: RemusError): void => {
            done();
            reject(new QmpError(`QMP: connection closed while waiting for ${name}`, { desc: 'connection closed', cause: why }));
          };
          signal.addEventListener('abort', done, { once: true });
          if (this.#closedBy) onClose(this.#closedBy);
          else this.#closeHooks.add(onClose);
        }),
      { what: `QMP: wait for the ${name} event`, timeoutMs: options.timeoutMs, ...(options.signal ? { signal: options.signal } : {}) },
    );
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
    if (this.#closedBy) return;
    try {
      for (const line of this.#lines.push(chunk)) {
        this.#onMessage(line);
        if (this.#closedBy) return;
      }
    } catch (e) {
      // A protocol error (over-long line, not QMP): the connection cannot be trusted any more.
      const why = e instanceof QmpError ? e.message : String(e);
      this.#destroy(new QmpError(`QMP ${formatQmpAddress(this.address)}: ${why}`, { desc: 'protocol error', cause: e }));
    }
  }

  /** One line from QEMU; throws a protocol error (see {@link parseQmpMessage}). */
  #onMessage(line: string): void {
    const msg = parseQmpMessage(line);
    switch (msg.kind) {
      case 'greeting':
        this.#greeting = msg.greeting;
        this.#onGreeting?.(msg.greeting);
        this.#onGreeting = undefined;
        return;
      case 'event':
        for (const l of [...this.#listeners]) {
          try {
            l(msg.event);
          } catch {
            // a listener's fault must not stop the others or the stream
          }
        }
        return;
      case 'return':
      case 'error': {
        // An answer without our id (QEMU could not parse a request) belongs to the oldest pending command: QMP answers in order.
        const id = msg.id ?? this.#pending.keys().next().value;
        if (id === undefined) return;
        const p = this.#settle(id);
        if (!p) return; // timed out or aborted earlier: the late answer is discarded
        if (msg.kind === 'return') p.resolve(msg.value);
        else p.reject(new QmpError(`QMP ${p.command}: ${msg.errorClass}: ${msg.desc}`, { errorClass: msg.errorClass, desc: msg.desc, command: p.command }));
        return;
      }
    }
  }
}
