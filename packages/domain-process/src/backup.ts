/**
 * The backup end of a process domain and the link to it: the primary sends
 * each checkpoint's saved state over a stream (TCP, a Unix socket, or any
 * already-connected Duplex such as a TLS socket); the backup keeps the latest
 * complete state and acknowledges the checkpoint only after it received all
 * of it. The checkpoint loop commits (releases the epoch's output) only after
 * that acknowledgement.
 *
 * Both ends are strict (issue 14): the backup is bound to one primary at a
 * time and takes only checkpoint N+1 of that connection, under an epoch not
 * below the highest it has seen; the primary takes only the ack of the
 * checkpoint it sent last, under its epoch. Anything else is refused with a
 * stable code and the connection is closed. The backup's memory, connections
 * and time are bounded; see {@link BackupServerOptions}. Frames: ./frame.ts.
 */
import { EventEmitter } from 'node:events';
import { createConnection, createServer, type Server } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  RemusError,
  abortError,
  describeCause,
  isPluginErrorCode,
  isLocalAddress,
  isRemusError,
  nextEvent,
  raceSignal,
  validateCount,
  validateDuration,
  ErrorCodes,
  MAX_TIMER_MS,
  type ErrorCode,
} from '@remus/core';
import { BackupErrors } from './errors.js';
import { FrameDecoder, FrameType, MAX_REFUSE_BYTES, encodeFrame, encodeHeader, type Frame, type FrameHeader } from './frame.js';

/** Where a backup listens: a TCP host and port, or a Unix socket path. */
export type BackupAddress = { readonly host: string; readonly port: number } | { readonly path: string };

/** What a backup has received so far. */
export interface BackupStats {
  /** Checkpoints received in full and acknowledged. */
  readonly acked: number;
  /** Number of the last acknowledged checkpoint (0: none). */
  readonly lastCheckpoint: number;
  /** Epoch of the last acknowledged checkpoint. */
  readonly lastEpoch: number;
  /** Bytes of state received in total. */
  readonly bytes: number;
  /** Connections and frames refused (each also emitted as `refused`). */
  readonly refused: number;
  /** Open connections. */
  readonly connections: number;
  /** Bytes held now: the stored state plus payload buffers of frames being received. */
  readonly memoryBytes: number;
  /** Ack bytes written but not yet taken by the peers (bounded by maxPendingAckBytes plus one ack per connection). */
  readonly pendingAckBytes: number;
}

/** The highest-epoch record a backup consults (core's `EpochStore` fits). */
export interface EpochGate {
  highest(): number;
  /** Accepts `epoch` (throws EPOCH_STALE below the highest), recording a higher one durably. */
  admit(epoch: number, who?: string): number;
}

/** Bounds of a backup server. Every value is validated; see the defaults. */
export interface BackupServerOptions {
  /** Largest state of one checkpoint, bytes. Default 256 MiB. */
  readonly maxFrameBytes?: number;
  /** Cap on the stored state plus the payload buffers of frames being received, over all connections. Default 2 x maxFrameBytes. */
  readonly maxMemoryBytes?: number;
  /** Open connections at most (the bound primary and pending ones); more are refused at once. Default 4. */
  readonly maxConnections?: number;
  /** A connection that sends nothing for this long is dropped, ms. Default 60000. */
  readonly idleTimeoutMs?: number;
  /** A frame must be complete this long after its first byte, ms. Default 30000. */
  readonly frameTimeoutMs?: number;
  /** Acks the peer has not read, bytes, beyond which the backup stops reading from it until it does. Default 64 KiB. */
  readonly maxPendingAckBytes?: number;
  /** The epoch record (core's `openEpochStore(path)`): lower epochs are refused across restarts. Default: in memory, from 0. */
  readonly epochs?: EpochGate;
  /**
   * {@link BackupServer.listen} only: allow a TCP address other machines can
   * reach. This channel has no authentication (whoever connects sends state
   * and is acknowledged), so by default `listen` takes only a Unix socket or
   * a loopback address (`127.0.0.0/8`, `::1`, `localhost`) and refuses any
   * other with INVALID_ARGUMENT. Across hosts use an authenticated channel
   * and {@link BackupServer.accept} (e.g. `@remus/agent`'s mutual TLS); set
   * this only behind a tunnel of your own that authenticates the peer.
   */
  readonly allowRemote?: boolean;
}

const MiB = 1024 * 1024;
const DEFAULTS = {
  maxFrameBytes: 256 * MiB,
  maxConnections: 4,
  idleTimeoutMs: 60_000,
  frameTimeoutMs: 30_000,
  maxPendingAckBytes: 64 * 1024,
};
/** How long a refused connection gets to take its REFUSE frame before it is destroyed. */
const REFUSE_LINGER_MS = 1000;

interface Conn {
  readonly stream: Duplex;
  readonly id: number;
  readonly decoder: FrameDecoder;
  /** Next checkpoint this connection may send. */
  expected: number;
  /** Epoch of its last accepted header. */
  epoch: number;
  /** Payload bytes reserved against the memory cap for its frame in progress. */
  reserved: number;
  lastData: number;
  /** performance.now() at the first byte of the frame in progress; undefined between frames. */
  frameStart: number | undefined;
  closed: boolean;
  /** Reading paused until the peer reads its acks. */
  held: boolean;
}

/**
 * A backup endpoint: receives checkpoint state and acknowledges it. Run it
 * on the backup host (`remus backup --listen`), feed it connected streams
 * ({@link accept}, e.g. an authenticated TLS socket of `@remus/agent`), or
 * in-process for a local, single-host setup (which protects against nothing
 * but shows the protocol).
 *
 * Events: `state` (checkpoint, epoch, bytes) after each acknowledged
 * checkpoint; `refused` (RemusError) for each refused connection or frame.
 */
export class BackupServer extends EventEmitter {
  readonly #o: Required<Omit<BackupServerOptions, 'epochs' | 'allowRemote'>>;
  readonly #epochs: EpochGate | undefined;
  #server: Server | undefined;
  readonly #conns = new Set<Conn>();
  #bound: Conn | undefined;
  #highest: number;
  #nextId = 1;
  #inFlight = 0;
  #acked = 0;
  #bytes = 0;
  #refused = 0;
  #sweep: NodeJS.Timeout | undefined;
  #closed = false;
  /** The state of the last acknowledged checkpoint. */
  latest: Buffer = Buffer.alloc(0);
  /** Checkpoint and epoch of {@link latest} (0: none yet). */
  latestCheckpoint = 0;
  latestEpoch = 0;

  private constructor(options: BackupServerOptions) {
    super();
    const maxFrameBytes = validateCount(options.maxFrameBytes ?? DEFAULTS.maxFrameBytes, 'backup maxFrameBytes', { min: 0, max: 2 ** 32 - 1 });
    this.#o = {
      maxFrameBytes,
      maxMemoryBytes: validateCount(options.maxMemoryBytes ?? 2 * maxFrameBytes, 'backup maxMemoryBytes', { min: maxFrameBytes }),
      maxConnections: validateCount(options.maxConnections ?? DEFAULTS.maxConnections, 'backup maxConnections', { min: 1, max: 65_536 }),
      idleTimeoutMs: validateDuration(options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs, 'backup idleTimeoutMs', { min: 1 }),
      frameTimeoutMs: validateDuration(options.frameTimeoutMs ?? DEFAULTS.frameTimeoutMs, 'backup frameTimeoutMs', { min: 1 }),
      maxPendingAckBytes: validateCount(options.maxPendingAckBytes ?? DEFAULTS.maxPendingAckBytes, 'backup maxPendingAckBytes', { min: 0 }),
    };
    this.#epochs = options.epochs;
    this.#highest = options.epochs?.highest() ?? 0;
  }

  /** A backup that listens nowhere: give it connected streams with {@link accept}. */
  static create(options: BackupServerOptions = {}): BackupServer {
    return new BackupServer(options);
  }

  /**
   * Starts listening. Port 0 picks a free port; see {@link address}. Only a
   * Unix socket or a loopback address unless `options.allowRemote` (see
   * there): INVALID_ARGUMENT otherwise, before anything is bound.
   */
  static async listen(address: BackupAddress, options: BackupServerOptions = {}): Promise<BackupServer> {
    if (!isLocalAddress(address) && options.allowRemote !== true) {
      throw new RemusError(
        'INVALID_ARGUMENT',
        `backup: listening on ${describeAddress(address)} would take state and acknowledgements from anyone who reaches it (this channel has no authentication): listen on a loopback address or a Unix socket, and carry the state between hosts over an authenticated channel (remus agent: TLS with mutual authentication)`,
      );
    }
    const backup = new BackupServer(options);
    const server = createServer({ noDelay: true });
    backup.#server = server;
    server.on('connection', (s) => backup.accept(s));
    const listening = nextEvent(server, 'listening', { what: `the backup to listen on ${describeAddress(address)}`, timeoutMs: 10_000, rejectOn: ['error'] });
    if ('path' in address) server.listen(address.path);
    else server.listen(address.port, address.host);
    try {
      await listening;
    } catch (e) {
      server.close();
      throw new RemusError('OP_FAILED', `the backup cannot listen on ${describeAddress(address)}: ${describeCause(e)}`, { cause: e });
    }
    return backup;
  }

  /** The address it listens on (with the real port when 0 was asked). */
  get address(): BackupAddress {
    const a = this.#server?.address();
    if (typeof a === 'string') return { path: a };
    if (a === null || a === undefined) throw new RemusError('STATE', 'the backup server is not listening');
    return { host: a.address, port: a.port };
  }

  get stats(): BackupStats {
    return {
      acked: this.#acked,
      lastCheckpoint: this.latestCheckpoint,
      lastEpoch: this.latestEpoch,
      bytes: this.#bytes,
      refused: this.#refused,
      connections: this.#conns.size,
      memoryBytes: this.latest.length + this.#inFlight,
      pendingAckBytes: [...this.#conns].reduce((n, c) => n + c.stream.writableLength, 0),
    };
  }

  /** The limits in force (defaults filled in). */
  get limits(): Readonly<Required<Omit<BackupServerOptions, 'epochs' | 'allowRemote'>>> {
    return this.#o;
  }

  /**
   * Serves one connected stream (a socket or any Duplex: TLS, a pipe). The
   * stream is the backup's from now on: it is destroyed on close, on any
   * refusal and at {@link close}.
   */
  accept(stream: Duplex): void {
    if (this.#closed) {
      stream.destroy();
      return;
    }
    stream.on('error', () => undefined);
    if (this.#conns.size >= this.#o.maxConnections) {
      this.#refuseStream(
        stream,
        new RemusError(BackupErrors.CONNECTION_LIMIT, `backup: connection refused, ${this.#conns.size} of ${this.#o.maxConnections} allowed are open (maxConnections)`, {
          details: { maxConnections: this.#o.maxConnections },
        }),
      );
      return;
    }
    const now = performance.now();
    const conn: Conn = {
      stream,
      id: this.#nextId++,
      decoder: undefined as unknown as FrameDecoder,
      expected: 1,
      epoch: 0,
      reserved: 0,
      lastData: now,
      frameStart: undefined,
      closed: false,
      held: false,
    };
    (conn as { decoder: FrameDecoder }).decoder = new FrameDecoder({ maxFrameBytes: this.#o.maxFrameBytes, onHeader: (h) => this.#admit(conn, h) });
    this.#conns.add(conn);
    this.#startSweep();
    stream.on('data', (chunk: Buffer) => this.#data(conn, chunk));
    stream.on('close', () => this.#drop(conn));
    stream.on('end', () => this.#drop(conn));
  }

  /** Stops listening and drops every connection. Keeps {@link latest}. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const c of [...this.#conns]) {
      c.stream.destroy();
      this.#drop(c);
    }
    const server = this.#server;
    this.#server = undefined;
    if (server?.listening) {
      const closed = nextEvent(server, 'close', { what: 'the backup server to close', timeoutMs: 10_000 });
      server.close();
      await closed;
    }
  }

  #data(conn: Conn, chunk: Buffer): void {
    if (conn.closed) return;
    const now = performance.now();
    conn.lastData = now;
    let completed = false;
    try {
      conn.decoder.push(chunk, (f) => {
        completed = true;
        this.#frame(conn, f);
      });
    } catch (e) {
      this.#refuse(conn, isRemusError(e) ? e : new RemusError(BackupErrors.FRAME_INVALID, `backup: ${describeCause(e)}`, { cause: e }));
      return;
    }
    // The frame timeout runs from the first byte of the frame in progress.
    conn.frameStart = !conn.decoder.inFrame ? undefined : completed ? now : (conn.frameStart ?? now);
  }

  /** Decides on a header before its payload is buffered: throws to refuse. */
  #admit(conn: Conn, h: FrameHeader): void {
    const at = { checkpoint: h.checkpoint, epoch: h.epoch, connection: conn.id };
    // A keepalive keeps the bound primary's connection from going idle between checkpoints; it binds nothing.
    if (h.type === FrameType.PING && conn === this.#bound) return;
    if (h.type === FrameType.PING) {
      throw new RemusError(BackupErrors.FRAME_INVALID, 'backup: a keepalive before any checkpoint (send checkpoint 1 first)', { details: at });
    }
    if (h.type !== FrameType.STATE) {
      throw new RemusError(BackupErrors.FRAME_INVALID, `backup: a ${h.type === FrameType.ACK ? 'ack' : 'refusal'} frame from the primary (the backup takes state frames only)`, { details: at });
    }
    if (h.epoch < this.#highest) {
      throw new RemusError('EPOCH_STALE', `backup: checkpoint ${h.checkpoint} of epoch ${h.epoch} refused, the backup has seen epoch ${this.#highest}`, {
        details: { ...at, highest: this.#highest },
      });
    }
    const bound = this.#bound;
    if (bound !== conn) {
      if (bound !== undefined && h.epoch <= bound.epoch) {
        throw new RemusError(BackupErrors.BUSY, `backup: bound to another primary (epoch ${bound.epoch}); a second connection needs a higher epoch to take over`, {
          details: { ...at, boundEpoch: bound.epoch },
        });
      }
    }
    if (h.checkpoint !== conn.expected) {
      throw new RemusError(BackupErrors.CHECKPOINT_OUT_OF_ORDER, `backup: checkpoint ${h.checkpoint} refused, this connection's next is ${conn.expected}`, {
        details: { ...at, expected: conn.expected },
      });
    }
    if (h.epoch < conn.epoch) {
      throw new RemusError('EPOCH_STALE', `backup: epoch went down on one connection (${conn.epoch} to ${h.epoch})`, { details: at });
    }
    const memory = this.latest.length + this.#inFlight;
    if (memory + h.length > this.#o.maxMemoryBytes) {
      throw new RemusError(BackupErrors.MEMORY_LIMIT, `backup: checkpoint ${h.checkpoint} of ${h.length} bytes refused, ${memory} bytes held and the cap is ${this.#o.maxMemoryBytes} (maxMemoryBytes)`, {
        details: { ...at, length: h.length, held: memory, maxMemoryBytes: this.#o.maxMemoryBytes },
      });
    }
    if (h.epoch > this.#highest) {
      // Durable before anything else acts on it: a restarted backup never goes below.
      if (this.#epochs) this.#epochs.admit(h.epoch, `backup: epoch of checkpoint ${h.checkpoint}`);
      this.#highest = h.epoch;
    }
    if (bound !== conn) {
      if (bound !== undefined) {
        this.#refuse(bound, new RemusError('EPOCH_STALE', `backup: a primary of epoch ${h.epoch} took over from epoch ${bound.epoch}`, { details: { epoch: h.epoch, boundEpoch: bound.epoch } }));
      }
      this.#bound = conn;
    }
    conn.epoch = h.epoch;
    conn.reserved = h.length;
    this.#inFlight += h.length;
  }

  #frame(conn: Conn, f: Frame): void {
    if (f.type === FrameType.PING) return;
    this.#inFlight -= conn.reserved;
    conn.reserved = 0;
    this.latest = f.payload;
    this.latestCheckpoint = f.checkpoint;
    this.latestEpoch = f.epoch;
    this.#bytes += f.length;
    this.#acked++;
    conn.expected = f.checkpoint + 1;
    const ok = conn.stream.write(encodeHeader(FrameType.ACK, f.epoch, f.checkpoint, 0));
    this.emit('state', { checkpoint: f.checkpoint, epoch: f.epoch, bytes: f.length });
    // Backpressure: a peer that does not read its acks gets no more reading from us.
    if (!ok && conn.stream.writableLength > this.#o.maxPendingAckBytes && !conn.held) {
      conn.held = true;
      conn.stream.pause();
      conn.stream.once('drain', () => {
        conn.held = false;
        conn.lastData = performance.now();
        if (!conn.closed) conn.stream.resume();
      });
    }
  }

  #refuse(conn: Conn, e: RemusError): void {
    if (conn.closed) return;
    this.#drop(conn, false);
    this.#refuseStream(conn.stream, e);
  }

  #refuseStream(stream: Duplex, e: RemusError): void {
    this.#refused++;
    this.emit('refused', e);
    stream.pause();
    stream.removeAllListeners('data');
    const body = Buffer.from(JSON.stringify({ code: e.code, message: e.message })).subarray(0, MAX_REFUSE_BYTES);
    const linger = setTimeout(() => stream.destroy(), REFUSE_LINGER_MS);
    linger.unref();
    stream.once('close', () => clearTimeout(linger));
    stream.end(encodeFrame(FrameType.REFUSE, 0, 0, safeJson(body)), () => stream.destroy());
  }

  #drop(conn: Conn, destroy = true): void {
    if (conn.closed) return;
    conn.closed = true;
    this.#inFlight -= conn.reserved;
    conn.reserved = 0;
    this.#conns.delete(conn);
    if (this.#bound === conn) this.#bound = undefined;
    if (this.#conns.size === 0 && this.#sweep) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
    if (destroy) conn.stream.destroy();
  }

  /** One watchdog per server (not per chunk): drops idle connections and overdue frames. */
  #startSweep(): void {
    if (this.#sweep) return;
    const every = Math.max(5, Math.min(1000, Math.floor(Math.min(this.#o.idleTimeoutMs, this.#o.frameTimeoutMs) / 4)));
    this.#sweep = setInterval(() => {
      const now = performance.now();
      for (const c of [...this.#conns]) {
        if (c.frameStart !== undefined && now - c.frameStart > this.#o.frameTimeoutMs) {
          this.#refuse(
            c,
            new RemusError(BackupErrors.FRAME_TIMEOUT, `backup: a frame begun ${Math.round(now - c.frameStart)} ms ago is not complete (frameTimeoutMs ${this.#o.frameTimeoutMs}); connection dropped`, {
              details: { connection: c.id, expected: c.expected, frameTimeoutMs: this.#o.frameTimeoutMs },
            }),
          );
        } else if (now - c.lastData > this.#o.idleTimeoutMs) {
          this.#refuse(
            c,
            new RemusError(BackupErrors.IDLE_TIMEOUT, `backup: nothing received for ${Math.round(now - c.lastData)} ms (idleTimeoutMs ${this.#o.idleTimeoutMs}); connection dropped`, {
              details: { connection: c.id, idleTimeoutMs: this.#o.idleTimeoutMs },
            }),
          );
        }
      }
    }, every);
    this.#sweep.unref();
  }
}

/** A cut refusal body must stay valid JSON: fall back to the code alone. */
function safeJson(body: Buffer): Buffer {
  try {
    JSON.parse(body.toString('utf8'));
    return body;
  } catch {
    return Buffer.from(JSON.stringify({ code: BackupErrors.REFUSED, message: 'refused (message too long)' }));
  }
}

/** Options of a {@link BackupLink}. */
export interface BackupLinkOptions {
  /** The primary's fencing epoch (the arbiter's role epoch; 0 without one). Default 0. */
  readonly epoch?: number;
  /**
   * After checkpoint 1, a keepalive frame goes out when nothing was sent for
   * this long, so that checkpoint intervals longer than the backup's
   * `idleTimeoutMs` do not drop the link. Default 10000 (below the backup's
   * default idle timeout of 60000); 0 turns it off.
   */
  readonly keepAliveMs?: number;
}

/**
 * The primary's connection to a backup: send a checkpoint's state, wait for
 * its ack. Strict: checkpoints go 1, 2, 3... with each acknowledged before
 * the next is sent, and only the ack of the checkpoint sent last, under the
 * same epoch, counts. Any other frame breaks the link for good (the checkpoint
 * fails, the output stays held): see {@link broken}.
 */
export class BackupLink {
  readonly #stream: Duplex;
  readonly #decoder: FrameDecoder;
  #epoch: number;
  #sentEpoch = 0;
  #lastSent = 0;
  #lastAcked = 0;
  #broken: RemusError | undefined;
  #ack: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | undefined;
  readonly #keepAliveMs: number;
  #keepAlive: NodeJS.Timeout | undefined;
  #lastWrite = 0;

  private constructor(stream: Duplex, options: BackupLinkOptions) {
    this.#stream = stream;
    this.#epoch = validateEpochOption(options.epoch ?? 0);
    this.#keepAliveMs = validateDuration(options.keepAliveMs ?? 10_000, 'backup link keepAliveMs', { min: 0 });
    this.#decoder = new FrameDecoder({ maxFrameBytes: 0 });
    stream.on('data', (chunk: Buffer) => {
      if (this.#broken) return;
      try {
        this.#decoder.push(chunk, (f) => this.#frame(f));
      } catch (e) {
        this.#break(isRemusError(e) ? e : new RemusError(BackupErrors.FRAME_INVALID, `backup link: ${describeCause(e)}`, { cause: e }));
      }
    });
    stream.on('error', (e) => this.#break(new RemusError(BackupErrors.LINK_BROKEN, `backup link broken: ${e.message}`, { cause: e })));
    stream.on('close', () => this.#break(new RemusError(BackupErrors.LINK_BROKEN, 'backup link broken: the backup closed the connection')));
    stream.on('end', () => this.#break(new RemusError(BackupErrors.LINK_BROKEN, 'backup link broken: the backup ended the connection')));
  }

  /** A link over an already-connected stream (a socket, a TLS socket, any Duplex). The link owns it from now on. */
  static over(stream: Duplex, options: BackupLinkOptions = {}): BackupLink {
    return new BackupLink(stream, options);
  }

  /** Connects over TCP or a Unix socket, bounded by `signal`. Throws OP_FAILED if the backup cannot be reached. */
  static async connect(address: BackupAddress, signal: AbortSignal, options: BackupLinkOptions = {}): Promise<BackupLink> {
    validateEpochOption(options.epoch ?? 0);
    validateDuration(options.keepAliveMs ?? 10_000, 'backup link keepAliveMs', { min: 0 });
    const socket = 'path' in address ? createConnection(address.path) : createConnection(address.port, address.host);
    socket.setNoDelay(true);
    try {
      await nextEvent(socket, 'connect', { what: `connecting to the backup at ${describeAddress(address)}`, timeoutMs: MAX_TIMER_MS, signal, rejectOn: ['error'] });
    } catch (e) {
      socket.destroy();
      throw new RemusError('OP_FAILED', `cannot reach the backup at ${describeAddress(address)}: ${describeCause(e)}`, { cause: e });
    }
    return new BackupLink(socket, options);
  }

  /** The error that broke the link, if it is broken. */
  get broken(): RemusError | undefined {
    return this.#broken;
  }

  /** Last checkpoint sent, last acknowledged (0: none). */
  get lastSent(): number {
    return this.#lastSent;
  }

  get lastAcked(): number {
    return this.#lastAcked;
  }

  /** The link's epoch (raised by a {@link send} with a higher one). */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Sends checkpoint `checkpoint`'s state (not copied: do not change it until
   * acked). It must be the next checkpoint (last sent + 1, the first is 1),
   * the previous one acknowledged, and `epoch` (default the link's) not below
   * the link's. Throws the link's error when it is broken.
   */
  send(checkpoint: number, state: Uint8Array, epoch: number = this.#epoch): void {
    if (this.#broken) throw this.#broken;
    if (checkpoint !== this.#lastSent + 1 || this.#lastAcked !== this.#lastSent) {
      const e = new RemusError(
        BackupErrors.CHECKPOINT_OUT_OF_ORDER,
        `backup link: checkpoint ${String(checkpoint)} cannot be sent: last sent ${this.#lastSent}, last acknowledged ${this.#lastAcked} (only the next one, after the previous ack)`,
        { details: { checkpoint, lastSent: this.#lastSent, lastAcked: this.#lastAcked } },
      );
      this.#break(e);
      throw e;
    }
    if (validateEpochOption(epoch) < this.#epoch) {
      const e = new RemusError('EPOCH_STALE', `backup link: checkpoint ${checkpoint} under epoch ${epoch}, below the link's ${this.#epoch}`, { details: { checkpoint, epoch } });
      this.#break(e);
      throw e;
    }
    const header = encodeHeader(FrameType.STATE, epoch, checkpoint, state.byteLength);
    this.#epoch = epoch;
    this.#sentEpoch = epoch;
    this.#lastSent = checkpoint;
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined);
    this.#ack = { promise, resolve, reject };
    const s = this.#stream;
    s.cork();
    s.write(header);
    if (state.byteLength > 0) s.write(state);
    s.uncork();
    this.#lastWrite = performance.now();
    if (this.#keepAlive === undefined && this.#keepAliveMs > 0) {
      // One timer per link (not per checkpoint): a keepalive after keepAliveMs without a write.
      this.#keepAlive = setInterval(() => {
        if (this.#broken || performance.now() - this.#lastWrite < this.#keepAliveMs) return;
        this.#lastWrite = performance.now();
        this.#stream.write(encodeHeader(FrameType.PING, this.#epoch, this.#lastSent, 0));
      }, Math.max(1, Math.floor(this.#keepAliveMs / 2)));
      this.#keepAlive.unref();
    }
  }

  /**
   * Resolves when the backup acknowledged `checkpoint`, which must be the one
   * sent last. Rejects with the link's error (ACK_UNEXPECTED, the backup's
   * REFUSE code, LINK_BROKEN...) or when `signal` fires (its reason, or
   * ABORTED).
   */
  async waitAck(checkpoint: number, signal: AbortSignal): Promise<void> {
    if (this.#broken) throw this.#broken;
    if (checkpoint !== this.#lastSent || checkpoint < 1) {
      throw new RemusError(BackupErrors.CHECKPOINT_OUT_OF_ORDER, `backup link: waiting for the ack of checkpoint ${String(checkpoint)}, but the one sent last is ${this.#lastSent}`, {
        details: { checkpoint, lastSent: this.#lastSent },
      });
    }
    if (this.#lastAcked === checkpoint) return;
    await raceSignal((this.#ack as { promise: Promise<void> }).promise, signal, () => abortError(signal, `the backup's ack of checkpoint ${checkpoint}`));
  }

  /** Closes the connection. Idempotent. */
  close(): void {
    this.#break(new RemusError(BackupErrors.LINK_BROKEN, 'backup link closed'));
  }

  #frame(f: Frame): void {
    if (f.type === FrameType.ACK) {
      const waiting = this.#lastAcked === this.#lastSent - 1;
      if (waiting && f.checkpoint === this.#lastSent && f.epoch === this.#sentEpoch) {
        this.#lastAcked = f.checkpoint;
        this.#ack?.resolve();
        return;
      }
      this.#break(
        new RemusError(
          BackupErrors.ACK_UNEXPECTED,
          `backup link: ack of checkpoint ${f.checkpoint} (epoch ${f.epoch}) refused: ${waiting ? `waiting for checkpoint ${this.#lastSent} (epoch ${this.#sentEpoch})` : `no checkpoint awaits an ack (last sent ${this.#lastSent})`}`,
          { details: { checkpoint: f.checkpoint, epoch: f.epoch, lastSent: this.#lastSent, lastAcked: this.#lastAcked, sentEpoch: this.#sentEpoch } },
        ),
      );
      return;
    }
    if (f.type === FrameType.REFUSE) {
      const { code, message } = parseRefusal(f.payload);
      this.#break(new RemusError(code, `the backup refused checkpoint ${this.#lastSent}: ${message}`, { details: { backupCode: code, lastSent: this.#lastSent } }));
      return;
    }
    this.#break(new RemusError(BackupErrors.FRAME_INVALID, 'backup link: a state frame from the backup (the primary takes acks only)'));
  }

  #break(e: RemusError): void {
    if (this.#broken) return;
    this.#broken = e;
    if (this.#keepAlive) clearInterval(this.#keepAlive);
    this.#ack?.reject(e);
    this.#stream.destroy();
  }
}

/** The code and message of a REFUSE payload; anything unparseable becomes `backup/REFUSED`. */
export function parseRefusal(payload: Buffer): { code: ErrorCode; message: string } {
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch {
    return { code: BackupErrors.REFUSED, message: 'unreadable refusal' };
  }
  const o = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  const raw = o.code;
  const code: ErrorCode = typeof raw === 'string' && (Object.hasOwn(ErrorCodes, raw) || isPluginErrorCode(raw)) ? (raw as ErrorCode) : BackupErrors.REFUSED;
  const message = typeof o.message === 'string' ? o.message.replace(/[^\x20-\x7e]/g, '?').slice(0, 500) : 'no reason given';
  return { code, message };
}

function validateEpochOption(epoch: unknown): number {
  if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) {
    throw new RemusError('INVALID_ARGUMENT', `backup link: epoch ${String(epoch)} is not a whole number from 0 to 2^53-1`);
  }
  return epoch;
}

/** `host:port` or the socket path. */
export function describeAddress(a: BackupAddress): string {
  return 'path' in a ? a.path.replace(/\0/g, '@') : `${a.host}:${a.port}`;
}
