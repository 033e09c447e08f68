/**
 * The backup end of a process domain and the link to it: the primary sends
 * each checkpoint's saved state over a stream socket (TCP or a Unix socket);
 * the backup keeps the latest complete state and acknowledges the checkpoint
 * only after it received all of it. The checkpoint loop commits (releases the
 * epoch's output) only after that acknowledgement.
 *
 * Frame: u32 type, u32 checkpoint, u32 payload length (big endian), payload.
 * Type 1 = state (primary to backup), type 2 = ack (backup to primary).
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { RemusError } from '@remus/core';

const STATE = 1;
const ACK = 2;
const HEADER = 12;
/** Largest state one checkpoint may carry (bytes). */
const MAX_STATE = 256 * 1024 * 1024;

/** Where a backup listens: a TCP host and port, or a Unix socket path. */
export type BackupAddress = { readonly host: string; readonly port: number } | { readonly path: string };

/** What a backup has received so far. */
export interface BackupStats {
  /** Checkpoints received in full and acknowledged. */
  readonly acked: number;
  /** Number of the last acknowledged checkpoint (0: none). */
  readonly lastCheckpoint: number;
  /** Bytes of state received in total. */
  readonly bytes: number;
}

/**
 * A backup endpoint: receives checkpoint state and acknowledges it. Run it
 * on the backup host (`remus backup --listen`) or in-process for a local,
 * single-host setup (which protects against nothing but shows the protocol).
 */
export class BackupServer {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #acked = 0;
  #last = 0;
  #bytes = 0;
  /** The state of the last acknowledged checkpoint. */
  latest: Buffer = Buffer.alloc(0);

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Starts listening. Port 0 picks a free port; see {@link address}. */
  static async listen(address: BackupAddress): Promise<BackupServer> {
    const server = createServer();
    const backup = new BackupServer(server);
    server.on('connection', (s) => backup.#serve(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if ('path' in address) server.listen(address.path, done);
      else server.listen(address.port, address.host, done);
    });
    return backup;
  }

  /** The address it listens on (with the real port when 0 was asked). */
  get address(): BackupAddress {
    const a = this.#server.address();
    if (typeof a === 'string') return { path: a };
    if (a === null) throw new RemusError('STATE', 'the backup server is closed');
    return { host: a.address, port: a.port };
  }

  get stats(): BackupStats {
    return { acked: this.#acked, lastCheckpoint: this.#last, bytes: this.#bytes };
  }

  /** Stops listening and drops every connection. */
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #serve(socket: Socket): void {
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    readFrames(socket, (type, checkpoint, payload) => {
      if (type !== STATE) {
        socket.destroy();
        return;
      }
      this.latest = Buffer.from(payload);
      this.#bytes += payload.length;
      this.#acked++;
      this.#last = checkpoint;
      socket.write(frame(ACK, checkpoint, Buffer.alloc(0)));
    });
  }
}

/** The primary's connection to a backup: send a checkpoint's state, wait for its ack. */
export class BackupLink {
  readonly #socket: Socket;
  /** Highest checkpoint acknowledged so far. */
  #acked = 0;
  #error: Error | undefined;
  readonly #waiters = new Set<() => void>();

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    readFrames(socket, (type, checkpoint) => {
      if (type === ACK && checkpoint > this.#acked) this.#acked = checkpoint;
      this.#wake();
    });
    socket.on('error', (e) => {
      this.#error = e;
      this.#wake();
    });
    socket.on('close', () => {
      this.#error ??= new Error('the backup closed the connection');
      this.#wake();
    });
  }

  /** Connects, bounded by `signal`. Throws OP_FAILED if the backup cannot be reached. */
  static async connect(address: BackupAddress, signal: AbortSignal): Promise<BackupLink> {
    const socket = 'path' in address ? createConnection(address.path) : createConnection(address.port, address.host);
    try {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        socket.once('connect', () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        });
        socket.once('error', (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        });
      });
    } catch (e) {
      socket.destroy();
      throw new RemusError('OP_FAILED', `cannot reach the backup at ${describeAddress(address)}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    return new BackupLink(socket);
  }

  /** Queues checkpoint `checkpoint`'s state for sending. Throws if the link is broken. */
  send(checkpoint: number, state: Buffer): void {
    if (this.#error) throw new RemusError('OP_FAILED', `backup link broken: ${this.#error.message}`, { cause: this.#error });
    this.#socket.write(frame(STATE, checkpoint, state));
  }

  /** Resolves when checkpoint `checkpoint` (or a later one) was acknowledged; rejects if the link breaks or `signal` fires. */
  async waitAck(checkpoint: number, signal: AbortSignal): Promise<void> {
    while (this.#acked < checkpoint) {
      if (this.#error) throw new RemusError('OP_FAILED', `backup link broken: ${this.#error.message}`, { cause: this.#error });
      if (signal.aborted) throw signal.reason;
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          this.#waiters.delete(wake);
          signal.removeEventListener('abort', wake);
          resolve();
        };
        this.#waiters.add(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /** Closes the connection. Idempotent. */
  close(): void {
    this.#error ??= new Error('closed');
    this.#socket.destroy();
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }
}

/** `host:port` or the socket path. */
export function describeAddress(a: BackupAddress): string {
  return 'path' in a ? a.path : `${a.host}:${a.port}`;
}

function frame(type: number, checkpoint: number, payload: Buffer): Buffer {
  const h = Buffer.allocUnsafe(HEADER);
  h.writeUInt32BE(type, 0);
  h.writeUInt32BE(checkpoint, 4);
  h.writeUInt32BE(payload.length, 8);
  return payload.length === 0 ? h : Buffer.concat([h, payload]);
}

/** Calls `onFrame` for every complete frame on `socket`; destroys it on a malformed one. */
function readFrames(socket: Socket, onFrame: (type: number, checkpoint: number, payload: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= HEADER) {
      const length = buf.readUInt32BE(8);
      if (length > MAX_STATE) {
        socket.destroy(new Error(`frame of ${length} bytes exceeds the ${MAX_STATE} byte limit`));
        return;
      }
      if (buf.length < HEADER + length) break;
      onFrame(buf.readUInt32BE(0), buf.readUInt32BE(4), buf.subarray(HEADER, HEADER + length));
      buf = buf.subarray(HEADER + length);
    }
  });
}
