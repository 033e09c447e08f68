/**
 * The backup side: receives each checkpoint's CRIU images and keeps the last
 * complete checkpoint as the restore point.
 *
 * Layout of `dir` (invariants):
 * - `<N>/`: a complete checkpoint: every file arrived, its sha256 matched the
 *   sender's, `.remus-manifest.json` lists each file's size and sha256, and
 *   `parent` links to `../<P>` when N is incremental over P (CRIU reads the
 *   pages it did not rewrite from there). Never written after its rename.
 * - `current` -> `<N>`: the restore point. Replaced (atomic rename of a new
 *   symlink) only after `<N>/` is complete and synced; a torn, refused or
 *   damaged transfer never touches it. Dirs outside current's parent chain
 *   are pruned after each switch.
 * - `.staging-<N>/`: a checkpoint in transfer; removed when the transfer
 *   fails, and at start (left by a crash).
 */
import { createHash, type Hash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { RemusError, formatSocketAddress, isLocalAddress, isRemusError, parseSocketAddress, type SocketAddress } from '@remus/core';
import { CriuErrors } from './errors.js';
import { DEFAULT_MAX_FRAME_BYTES, Frame, FrameReader, checkImageName, encodeFrame, parseFilePayload, type WireFrame } from './wire.js';

const MANIFEST = '.remus-manifest.json';

/** What `.remus-manifest.json` of a complete checkpoint holds. */
export interface CheckpointManifest {
  readonly checkpoint: number;
  readonly parent: number | null;
  readonly epoch: number;
  /** sha256 (hex) of the transfer, as the sender computed it. */
  readonly sha256: string;
  readonly files: Readonly<Record<string, { readonly size: number; readonly sha256: string }>>;
}

/** The restore point: the last complete checkpoint. */
export interface RestorePoint {
  readonly checkpoint: number;
  /** Absolute path of `<dir>/<N>`. */
  readonly path: string;
}

export interface CriuBackupOptions {
  /** Directory of the checkpoints (made if missing). One backup per directory. */
  readonly dir: string;
  /**
   * Where to listen: "host:port", {host, port} or {path} (Unix socket). Port 0 picks one.
   * Only a Unix socket or a loopback address (`127.0.0.0/8`, `::1`, `localhost`) unless
   * {@link allowRemote}: INVALID_ARGUMENT otherwise, before anything is made.
   */
  readonly listen: string | SocketAddress;
  /**
   * Allow a TCP address other machines can reach. This channel has no
   * authentication, and what it receives is process images that a failover
   * restores as root: set this only behind a tunnel of your own that
   * authenticates the primary.
   */
  readonly allowRemote?: boolean;
  /** Cap on one frame's payload, bytes. Default 1 MiB. */
  readonly maxFrameBytes?: number;
  /** Cap on one checkpoint's images, bytes. Default 4 GiB. */
  readonly maxCheckpointBytes?: number;
  /** Cap on one checkpoint's file count. Default 4096. */
  readonly maxFiles?: number;
  /**
   * A connection silent this long is closed (a transfer in it is torn) and,
   * if it was a primary, reported lost. A live primary sends a PING every
   * second (its `keepaliveMs`) even while a dump runs, so this is the
   * failover trigger's silence bound. Default 10 000 ms.
   */
  readonly idleTimeoutMs?: number;
  /**
   * The failover trigger: called once per primary connection (one that
   * delivered at least one complete checkpoint) when it closes or stays
   * silent past `idleTimeoutMs`. The caller decides (e.g. after the arbiter
   * grants the role) whether to call {@link failover}. Must not throw.
   */
  readonly onPrimaryLost?: (event: PrimaryLost) => void;
  /** Called after checkpoint N became the restore point. Must not throw. */
  readonly onCheckpoint?: (point: RestorePoint & { readonly bytes: number }) => void;
  /** Called when a checkpoint was refused or torn (the restore point is unchanged). Must not throw. */
  readonly onRefused?: (checkpoint: number, error: RemusError) => void;
}

/** Why the primary is considered lost. */
export interface PrimaryLost {
  /** `closed`: its connection ended; `silent`: nothing arrived for `silentMs`. */
  readonly kind: 'closed' | 'silent';
  /** The silence bound that applied, ms. */
  readonly silentMs: number;
  /** The restore point at that moment. */
  readonly restorePoint: RestorePoint | undefined;
}

/** A running backup receiver. */
export interface CriuBackup {
  /** The bound address (the actual port when 0 was asked). */
  readonly address: SocketAddress;
  /** The current restore point, or undefined. */
  restorePoint(): RestorePoint | undefined;
  /** Stops listening and closes connections (a transfer in flight is torn). Idempotent. */
  close(): Promise<void>;
}

/** Reads `<dir>/current`; undefined when there is no complete checkpoint. */
export function readRestorePoint(dir: string): RestorePoint | undefined {
  let target: string;
  try {
    target = readlinkSync(join(dir, 'current'));
  } catch {
    return undefined;
  }
  if (!/^[0-9]{1,10}$/.test(target)) return undefined;
  return { checkpoint: Number(target), path: join(dir, target) };
}

/**
 * Re-hashes every file of the restore point and of its parent chain against
 * their manifests. Throws CHECKSUM_MISMATCH naming the file, NO_RESTORE_POINT
 * when there is none. Returns the checkpoints of the chain, newest first.
 */
export function verifyRestorePoint(dir: string): number[] {
  const point = readRestorePoint(dir);
  if (!point) throw new RemusError(CriuErrors.NO_RESTORE_POINT, `backup directory ${dir} holds no complete checkpoint`);
  const chain: number[] = [];
  for (let n: number | null = point.checkpoint; n !== null; ) {
    if (chain.includes(n) || chain.length > 100_000) throw new RemusError(CriuErrors.CHECKSUM_MISMATCH, `checkpoint chain of ${dir} loops at ${n}`);
    chain.push(n);
    const cpDir = join(dir, String(n));
    let m: CheckpointManifest;
    try {
      m = JSON.parse(readFileSync(join(cpDir, MANIFEST), 'utf8')) as CheckpointManifest;
    } catch (e) {
      throw new RemusError(CriuErrors.CHECKSUM_MISMATCH, `checkpoint ${n} in ${dir} has no readable manifest`, { cause: e });
    }
    for (const [name, f] of Object.entries(m.files)) {
      checkImageName(name);
      let data: Buffer;
      try {
        data = readFileSync(join(cpDir, name));
      } catch (e) {
        throw new RemusError(CriuErrors.CHECKSUM_MISMATCH, `checkpoint ${n}: image ${name} is missing`, { cause: e });
      }
      if (data.length !== f.size || createHash('sha256').update(data).digest('hex') !== f.sha256) {
        throw new RemusError(CriuErrors.CHECKSUM_MISMATCH, `checkpoint ${n}: image ${name} does not match its checksum (damaged): never restored`, {
          details: { checkpoint: n, file: name },
        });
      }
    }
    n = m.parent;
  }
  return chain;
}

/** One checkpoint in transfer. */
interface Transfer {
  readonly checkpoint: number;
  readonly parent: number | null;
  readonly epoch: number;
  readonly staging: string;
  readonly hash: Hash;
  readonly files: Map<string, { size: number; hash: Hash }>;
  bytes: number;
  /** The file being written and its descriptor; undefined between files. */
  open: { name: string; fd: number } | undefined;
}

/** Limits of one checkpoint's images. */
interface TransferLimits {
  readonly maxBytes: number;
  readonly maxFiles: number;
}

/** Makes `dir` if missing and removes transfers a crash left in it; returns the limits of `o` with their defaults. */
function openCheckpointDir(dir: string, o: { readonly maxCheckpointBytes?: number; readonly maxFiles?: number }): TransferLimits {
  mkdirSync(dir, { recursive: true });
  for (const e of readdirSync(dir)) if (e.startsWith('.staging-')) rmSync(join(dir, e), { recursive: true, force: true });
  return { maxBytes: o.maxCheckpointBytes ?? 4 * 2 ** 30, maxFiles: o.maxFiles ?? 4096 };
}

/** Starts writing checkpoint `checkpoint` (incremental over `parent`) into `<dir>/.staging-<checkpoint>`. */
function beginTransfer(dir: string, checkpoint: number, parent: number | null, epoch: number): Transfer {
  const staging = join(dir, `.staging-${checkpoint}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging);
  return { checkpoint, parent, epoch, staging, hash: createHash('sha256'), files: new Map(), bytes: 0, open: undefined };
}

/** Appends one FILE frame's data (its payload is hashed as sent) to transfer `t`. */
function writeTransferFile(t: Transfer, payload: Buffer, limits: TransferLimits): void {
  const { name, data } = parseFilePayload(payload);
  checkImageName(name);
  if (t.open?.name !== name) {
    closeFile(t);
    if (t.files.has(name)) throw new RemusError(CriuErrors.FRAME_INVALID, `checkpoint ${t.checkpoint}: image ${name} sent twice`);
    if (t.files.size >= limits.maxFiles) throw new RemusError(CriuErrors.TRANSFER_REFUSED, `checkpoint ${t.checkpoint} has more than ${limits.maxFiles} files`);
    t.open = { name, fd: openSync(join(t.staging, name), 'wx') };
    t.files.set(name, { size: 0, hash: createHash('sha256') });
  }
  t.bytes += data.length;
  if (t.bytes > limits.maxBytes) throw new RemusError(CriuErrors.TRANSFER_REFUSED, `checkpoint ${t.checkpoint} exceeds ${limits.maxBytes} bytes`);
  t.hash.update(payload);
  const file = t.files.get(name) as { size: number; hash: Hash };
  file.size += data.length;
  file.hash.update(data);
  for (let off = 0; off < data.length; ) off += writeSync(t.open.fd, data, off);
}

function abortTransfer(t: Transfer): void {
  if (t.open) {
    try {
      closeSync(t.open.fd);
    } catch {
      // Already closed.
    }
    t.open = undefined;
  }
  rmSync(t.staging, { recursive: true, force: true });
}

function closeFile(t: Transfer): void {
  if (!t.open) return;
  fsyncSync(t.open.fd);
  closeSync(t.open.fd);
  t.open = undefined;
}

/** Completes transfer `t` (END's sha256 checked): `<dir>/<N>` is synced, then `current` moves to it; older chains are pruned. */
function commitTransfer(dir: string, t: Transfer, sha: Buffer): void {
  if (sha.length !== 32) throw new RemusError(CriuErrors.FRAME_INVALID, 'END payload is not a sha256');
  closeFile(t);
  const digest = t.hash.digest();
  if (!digest.equals(sha)) {
    throw new RemusError(CriuErrors.CHECKSUM_MISMATCH, `checkpoint ${t.checkpoint}: images do not match the sender's checksum (damaged in transit): refused`);
  }
  const manifest: CheckpointManifest = {
    checkpoint: t.checkpoint,
    parent: t.parent,
    epoch: t.epoch,
    sha256: digest.toString('hex'),
    files: Object.fromEntries([...t.files].map(([name, f]) => [name, { size: f.size, sha256: f.hash.digest('hex') }])),
  };
  // A failover ran or runs from this directory (its lock): the restore point must not move under it.
  if (existsSync(join(dir, '.failover'))) throw new RemusError('STATE', `checkpoint ${t.checkpoint}: a failover from ${dir} ran or is running: the restore point stays`);
  writeFileSync(join(t.staging, MANIFEST), JSON.stringify(manifest));
  if (t.parent !== null) symlinkSync(`../${t.parent}`, join(t.staging, 'parent'));
  syncDir(t.staging);
  const final = join(dir, String(t.checkpoint));
  rmSync(final, { recursive: true, force: true });
  renameSync(t.staging, final);
  const link = join(dir, `.current-${t.checkpoint}`);
  rmSync(link, { force: true });
  symlinkSync(String(t.checkpoint), link);
  renameSync(link, join(dir, 'current'));
  syncDir(dir);
  prune(dir);
}

/** Parses a BEGIN payload `{parent, epoch}`. */
function parseBegin(f: WireFrame): { parent: number | null; epoch: number } {
  let meta: { parent?: unknown; epoch?: unknown };
  try {
    meta = JSON.parse(f.payload.toString('utf8')) as typeof meta;
  } catch (e) {
    throw new RemusError(CriuErrors.FRAME_INVALID, 'BEGIN payload is not JSON', { cause: e });
  }
  const parent = meta.parent ?? null;
  const epoch = meta.epoch ?? 0;
  if ((parent !== null && !(Number.isInteger(parent) && (parent as number) > 0)) || !(Number.isInteger(epoch) && (epoch as number) >= 0)) {
    throw new RemusError(CriuErrors.FRAME_INVALID, 'BEGIN payload has a bad parent or epoch');
  }
  return { parent: parent as number | null, epoch: epoch as number };
}

/** Starts a backup receiver on `listen`, writing into `dir`. */
export async function createCriuBackup(o: CriuBackupOptions): Promise<CriuBackup> {
  const dir = o.dir;
  const address = parseSocketAddress(o.listen, 'criu backup listen address', { allowPath: true, allowPortZero: true });
  if (!isLocalAddress(address) && o.allowRemote !== true) {
    throw new RemusError(
      'INVALID_ARGUMENT',
      `criu backup: listening on ${formatSocketAddress(address)} would take checkpoint images (restored as root at failover) from anyone who reaches it (this channel has no authentication): listen on a loopback address or a Unix socket, and carry the images between hosts over an authenticated channel of your own`,
    );
  }
  const maxFrame = o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const limits = openCheckpointDir(dir, o);
  const sockets = new Set<Socket>();
  let active: Socket | undefined;
  let closingAll = false;
  const idleMs = o.idleTimeoutMs ?? 10_000;

  /**
   * Per connection: `offset` maps the sender's checkpoint numbers to this directory's (stored = sent + offset);
   * `stored` is set once the connection delivered a checkpoint.
   */
  const onFrame = (t: Transfer | undefined, f: WireFrame, session: { offset: number; stored: boolean }): Transfer | undefined => {
    if (f.type === Frame.BEGIN) {
      if (t) throw new RemusError(CriuErrors.FRAME_INVALID, `BEGIN of checkpoint ${f.checkpoint} while checkpoint ${t.checkpoint} is in transfer`);
      const { parent, epoch } = parseBegin(f);
      const point = readRestorePoint(dir);
      // A new primary run numbers its checkpoints from 1 again: the first full checkpoint of a connection that
      // stored nothing yet starts a new chain after the restore point (stored as restore point + its number).
      if (!session.stored && parent === null && point && f.checkpoint >= 1 && f.checkpoint <= point.checkpoint) session.offset = point.checkpoint;
      const n = f.checkpoint + session.offset;
      const p = parent === null ? null : parent + session.offset;
      if (f.checkpoint < 1 || (point && n <= point.checkpoint)) {
        throw new RemusError(CriuErrors.TRANSFER_REFUSED, `checkpoint ${n} is not after the restore point ${point?.checkpoint ?? 'none'}`);
      }
      if (p !== null && p !== point?.checkpoint) {
        throw new RemusError(CriuErrors.TRANSFER_REFUSED, `checkpoint ${n} is incremental over ${String(p)}, but the restore point is ${point?.checkpoint ?? 'none'}: send a full dump`);
      }
      return beginTransfer(dir, n, p, epoch);
    }
    if (!t || f.checkpoint + session.offset !== t.checkpoint) {
      throw new RemusError(CriuErrors.FRAME_INVALID, `frame of checkpoint ${f.checkpoint} outside its transfer (in transfer: ${t?.checkpoint ?? 'none'})`);
    }
    if (f.type === Frame.FILE) {
      writeTransferFile(t, f.payload, limits);
      return t;
    }
    if (f.type === Frame.END) {
      commitTransfer(dir, t, f.payload);
      o.onCheckpoint?.({ ...(readRestorePoint(dir) as RestorePoint), bytes: t.bytes });
      return undefined;
    }
    throw new RemusError(CriuErrors.FRAME_INVALID, `frame type ${f.type} is not sent to a backup`);
  };

  const serve = (socket: Socket): void => {
    sockets.add(socket);
    if (active) {
      socket.end(encodeFrame(Frame.NACK, 0, Buffer.from('busy: the backup already has a primary connected')));
      return;
    }
    active = socket;
    const reader = new FrameReader(maxFrame);
    let transfer: Transfer | undefined;
    const session = { offset: 0, stored: false };
    /** A refused checkpoint: its remaining frames are ignored until its END. */
    let skipping: number | undefined;
    const refuse = (checkpoint: number, e: RemusError): void => {
      if (transfer) abortTransfer(transfer);
      transfer = undefined;
      o.onRefused?.(checkpoint, e);
      socket.write(encodeFrame(Frame.NACK, checkpoint, Buffer.from(`${e.code}: ${e.message}`.slice(0, 4096))));
    };
    /** Set once this connection delivered a complete checkpoint: it is a primary whose loss is reported. */
    let primary = false;
    let lostReported = false;
    const lost = (kind: PrimaryLost['kind']): void => {
      if (!primary || lostReported || closingAll) return;
      lostReported = true;
      o.onPrimaryLost?.({ kind, silentMs: idleMs, restorePoint: readRestorePoint(dir) });
    };
    socket.setTimeout(idleMs, () => {
      lost('silent');
      socket.destroy();
    });
    socket.on('data', (chunk: Buffer) => {
      let frames: WireFrame[];
      try {
        frames = reader.push(chunk);
      } catch (e) {
        refuse(transfer ? transfer.checkpoint - session.offset : 0, e as RemusError);
        socket.destroy();
        return;
      }
      for (const f of frames) {
        if (f.type === Frame.PING) continue;
        if (skipping !== undefined && f.checkpoint === skipping) {
          if (f.type === Frame.END) skipping = undefined;
          continue;
        }
        skipping = undefined;
        try {
          transfer = onFrame(transfer, f, session);
          if (f.type === Frame.END) {
            primary = true;
            session.stored = true;
            socket.write(encodeFrame(Frame.ACK, f.checkpoint));
          }
        } catch (e) {
          const err = isRemusError(e) ? e : new RemusError(CriuErrors.TRANSFER_REFUSED, `checkpoint ${f.checkpoint} not stored: ${(e as Error).message}`, { cause: e });
          if (err.code === CriuErrors.FRAME_INVALID) {
            refuse(f.checkpoint, err);
            socket.destroy();
            return;
          }
          refuse(f.checkpoint, err);
          if (f.type !== Frame.END) skipping = f.checkpoint;
        }
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      sockets.delete(socket);
      if (active === socket) active = undefined;
      lost('closed');
      if (transfer) {
        o.onRefused?.(transfer.checkpoint, new RemusError(CriuErrors.LINK_BROKEN, `checkpoint ${transfer.checkpoint}: connection closed mid-transfer (torn): discarded`));
        abortTransfer(transfer);
        transfer = undefined;
      }
    });
  };

  const server: Server = createServer(serve);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new RemusError('OP_FAILED', `criu backup cannot listen on ${formatSocketAddress(address)}: ${e.message}`, { cause: e })));
    if ('path' in address) server.listen(address.path, resolve);
    else server.listen(address.port, address.host, resolve);
  });
  const bound = server.address();
  const actual: SocketAddress = typeof bound === 'object' && bound !== null && 'port' in address ? { host: address.host, port: bound.port } : address;
  let closing: Promise<void> | undefined;
  return {
    address: actual,
    restorePoint: () => readRestorePoint(dir),
    close() {
      closingAll = true;
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}

/** Options of {@link createCheckpointReceiver}. */
export interface CheckpointReceiverOptions {
  /** Directory of the checkpoints (made if missing; the layout of the file header). One receiver per directory. */
  readonly dir: string;
  /** Cap on one frame's payload, bytes. Default 1 MiB (the sender's chunking). */
  readonly maxFrameBytes?: number;
  /** Cap on one checkpoint's images, bytes. Default 4 GiB. */
  readonly maxCheckpointBytes?: number;
  /** Cap on one checkpoint's file count. Default 4096. */
  readonly maxFiles?: number;
}

/**
 * Stores checkpoints that arrive as whole records over a channel of the
 * caller's (e.g. `remus agent`'s authenticated peer session) instead of
 * {@link createCriuBackup}'s socket. A record is one checkpoint's frames
 * exactly as {@link CriuDomain} sends them with a `transport`: BEGIN, FILE...,
 * END (its sha256). Numbering: a full record starts a new chain after the
 * restore point (whatever number its sender gave it); an incremental record
 * must be over the record stored last (by its sender's number), which is the
 * restore point: anything else is refused (the sender then sends a full
 * dump). A refused or damaged record leaves the restore point as it was.
 */
export interface CheckpointReceiver {
  readonly dir: string;
  /** Stores one record and makes it the restore point; throws (a RemusError naming the cause) when refused. */
  store(record: Uint8Array): RestorePoint & { readonly bytes: number; readonly parent: number | null };
  /** The current restore point, or undefined. */
  restorePoint(): RestorePoint | undefined;
}

/** A receiver of whole checkpoint records into `o.dir` (see {@link CheckpointReceiver}). Removes transfers a crash left. */
export function createCheckpointReceiver(o: CheckpointReceiverOptions): CheckpointReceiver {
  const dir = o.dir;
  const maxFrame = o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const limits = openCheckpointDir(dir, o);
  /** The sender's number of the record stored last, and what it was stored as (the chain an increment may extend). */
  let last: { sent: number; stored: number } | undefined;
  return {
    dir,
    restorePoint: () => readRestorePoint(dir),
    store(record) {
      const reader = new FrameReader(maxFrame);
      const frames = reader.push(Buffer.from(record.buffer, record.byteOffset, record.byteLength));
      if (reader.pending !== 0) throw new RemusError(CriuErrors.FRAME_INVALID, `a checkpoint record ends inside a frame (${reader.pending} bytes left over): torn, refused`);
      const begin = frames[0];
      const end = frames[frames.length - 1];
      if (!begin || begin.type !== Frame.BEGIN || !end || end.type !== Frame.END || frames.length < 2) {
        throw new RemusError(CriuErrors.FRAME_INVALID, 'a checkpoint record must be one whole checkpoint: BEGIN, its files, END');
      }
      const sent = begin.checkpoint;
      const { parent, epoch } = parseBegin(begin);
      const point = readRestorePoint(dir);
      const n = (point?.checkpoint ?? 0) + 1;
      let p: number | null = null;
      if (parent !== null) {
        if (!point || !last || last.stored !== point.checkpoint || parent !== last.sent) {
          throw new RemusError(
            CriuErrors.TRANSFER_REFUSED,
            `checkpoint ${sent} is incremental over ${parent}, but the restore point is ${last && point && last.stored === point.checkpoint ? `the sender's ${last.sent}` : 'none this receiver stored'}: send a full dump`,
          );
        }
        p = point.checkpoint;
      }
      const t = beginTransfer(dir, n, p, epoch);
      try {
        for (const f of frames.slice(1, -1)) {
          if (f.checkpoint !== sent || f.type !== Frame.FILE) throw new RemusError(CriuErrors.FRAME_INVALID, `checkpoint ${sent}: frame of type ${f.type} for checkpoint ${f.checkpoint} inside its record`);
          writeTransferFile(t, f.payload, limits);
        }
        if (end.checkpoint !== sent) throw new RemusError(CriuErrors.FRAME_INVALID, `checkpoint ${sent}: its record ends with checkpoint ${end.checkpoint}'s END`);
        commitTransfer(dir, t, end.payload);
      } catch (e) {
        abortTransfer(t);
        throw e;
      }
      last = { sent, stored: n };
      return { checkpoint: n, path: join(dir, String(n)), bytes: t.bytes, parent: p };
    },
  };
}

function syncDir(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Removes checkpoint dirs that are not in the restore point's parent chain. */
function prune(dir: string): void {
  const keep = new Set<string>();
  const point = readRestorePoint(dir);
  for (let n: number | null = point?.checkpoint ?? null; n !== null && !keep.has(String(n)); ) {
    keep.add(String(n));
    try {
      n = (JSON.parse(readFileSync(join(dir, String(n), MANIFEST), 'utf8')) as CheckpointManifest).parent;
    } catch {
      n = null;
    }
  }
  for (const e of readdirSync(dir)) {
    if (/^[0-9]+$/.test(e) && !keep.has(e)) rmSync(join(dir, e), { recursive: true, force: true });
    if (e.startsWith('.current-')) rmSync(join(dir, e), { force: true });
  }
}
