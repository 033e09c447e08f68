/**
 * The CRIU domain: a Linux process tree in its own freezer cgroup whose
 * memory, files and TCP connections are checkpointed with CRIU and sent to a
 * backup ({@link createCriuBackup}), driven by core's checkpoint loop as a
 * {@link DomainAdapter}.
 *
 * Per checkpoint N:
 * - suspend: freeze the cgroup (domain-process's freezer code).
 * - save: `criu dump` of the frozen tree into `<workDir>/<N>` with
 *   `--leave-running` (the tree lives on; `resume` thaws it), `--track-mem`
 *   and, when N-1 was acknowledged and nothing failed since,
 *   `--prev-images-dir ../<N-1>` (only pages dirtied in the epoch are
 *   written; the first checkpoint, and the first after any failure, is
 *   full), `--tcp-established`, `--freeze-cgroup` (CRIU sees the tree
 *   frozen and leaves it frozen). Then the transfer to the backup starts.
 * - resume: thaw.
 * - waitAck: resolves when the backup reports N complete (all images, sha256
 *   matched, atomically its restore point).
 * A broken link is re-established at the next save (that checkpoint is full).
 * A failed dump fails the checkpoint (core's loop resumes the tree on the
 * primary and never releases the epoch's output); the backup keeps N-1.
 *
 * Guarantees: the backup's restore point only moves to a complete, verified
 * checkpoint. Not guaranteed: a tree CRIU cannot dump (e.g. io_uring, some
 * devices) fails every checkpoint; PIDs are restored as they were, so the
 * backup must have them free (a pid namespace per service avoids clashes).
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import {
  RemusError,
  abortError,
  newOperationId,
  parseSocketAddress,
  validateOperationId,
  withDeadline,
  type DomainAdapter,
  type DomainStepContext,
  type SocketAddress,
} from '@remus/core';
import { addToCgroup, cgroupPids, createCgroup, detectFreezer, reapCgroup, setFrozen, type CgroupChoice } from '@remus/domain-process';
import { assertCriuReady, type CriuReady } from './doctor.js';
import { CriuErrors } from './errors.js';
import { lastLines, runProgram } from './run.js';
import { DEFAULT_MAX_FRAME_BYTES, Frame, FrameReader, encodeFrame, filePayload } from './wire.js';

export interface CriuDomainOptions {
  /** Root pid of the tree to protect (it and its descendants move into the domain's cgroup). */
  readonly pid: number;
  /** Local directory for this side's images (one subdirectory per checkpoint). */
  readonly workDir: string;
  /** The backup receiver ({@link createCriuBackup}): "host:port", {host, port} or {path}. Exactly one of `backup` and `transport`. */
  readonly backup?: string | SocketAddress;
  /**
   * A channel of the caller's that carries each checkpoint as one record to a
   * {@link createCheckpointReceiver} (e.g. `remus agent`'s authenticated peer
   * session). Exactly one of `backup` and `transport`; replace it with
   * {@link CriuDomain.useTransport} (the next dump is then full).
   */
  readonly transport?: CheckpointTransport;
  /** criu program. Default: `criu` on PATH, /usr/sbin, /sbin. */
  readonly criuPath?: string;
  /** The tree's network namespace (`/run/netns/NAME`): criu runs in it so its sockets are local to criu. */
  readonly netns?: string;
  /** Freezer. Default `auto` (see domain-process). */
  readonly cgroup?: CgroupChoice;
  /** Operation id: names the cgroup `remus-<operation>`. Default: fresh. */
  readonly operation?: string;
  /** A full dump every this many checkpoints (bounds the image chain). Default 50. */
  readonly fullEvery?: number;
  /** Extra criu dump arguments (e.g. `--ext-unix-sk`, `--file-locks`), argument vector. */
  readonly dumpArgs?: readonly string[];
  /** Called once with a warning (soft-dirty missing: full dumps). */
  readonly onWarning?: (message: string) => void;
  /** Called after each dump with its figures. Must not throw. */
  readonly onDump?: (figures: DumpFigures) => void;
  /** Bound on connecting to the backup, ms. Default 10 000. */
  readonly connectTimeoutMs?: number;
  /** A PING to the backup this often, ms, so it can tell this primary is alive (its silence bound). Default 1000. */
  readonly keepaliveMs?: number;
  /**
   * The result of {@link assertCriuReady} run earlier on this host (with the
   * same criu and netns): start() then skips the checks (three criu runs,
   * seconds on a slow CPU: on a failover's critical path).
   */
  readonly ready?: CriuReady;
  /** Called when start() created the domain's cgroup, before any process moves into it (a journal records it for crash cleanup). */
  readonly onResource?: (r: { readonly type: 'cgroup'; readonly path: string }) => void;
}

/**
 * Carries checkpoint records (see {@link CriuDomainOptions.transport}). `send`
 * is called once per save, in checkpoint order, with the record (frames
 * BEGIN, FILE..., END of {@link encodeFrame}); `waitAck` resolves when the
 * receiver stored that checkpoint and rejects when it refused it or the
 * channel broke (the next dump is then full).
 */
export interface CheckpointTransport {
  send(ctx: DomainStepContext, record: Buffer): void;
  waitAck(ctx: DomainStepContext): Promise<void>;
}

/** Figures of one dump. */
export interface DumpFigures {
  readonly checkpoint: number;
  /** The checkpoint it is incremental over, or null for a full dump. */
  readonly parent: number | null;
  /** Wall time of `criu dump`, ms. */
  readonly dumpMs: number;
  /** Bytes of images sent for this checkpoint. */
  readonly bytes: number;
  /** Bytes of page images (pages-*.img) among them. */
  readonly pageBytes: number;
}

/** One checkpoint's transfer: resolves on ACK, rejects on NACK or a broken link. */
interface Pending {
  readonly checkpoint: number;
  readonly done: Promise<void>;
  settle(error?: RemusError): void;
}

export class CriuDomain implements DomainAdapter {
  readonly name: string;
  readonly operation: string;
  readonly #o: CriuDomainOptions;
  readonly #backup: SocketAddress | undefined;
  #transport: CheckpointTransport | undefined;
  #criu = '';
  #softDirty = true;
  #cgroup: string | undefined;
  #cgroupVersion: 1 | 2 | undefined;
  #socket: Socket | undefined;
  #pending: Pending | undefined;
  /** The last checkpoint the backup acknowledged, and whether the chain to it is intact (no failure since). */
  #acked: number | undefined;
  #chainIntact = false;
  #lastFull = 0;
  #stopped = false;

  constructor(o: CriuDomainOptions) {
    if (!(Number.isInteger(o.pid) && o.pid > 1)) throw new RemusError('INVALID_ARGUMENT', `criu domain: pid ${String(o.pid)} must be an integer > 1`);
    if (typeof o.workDir !== 'string' || o.workDir === '') throw new RemusError('INVALID_ARGUMENT', 'criu domain: workDir must be a directory path');
    if (o.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(o.netns)) throw new RemusError('INVALID_ARGUMENT', `criu domain: netns ${JSON.stringify(o.netns)} is not a plain name`);
    if ((o.backup === undefined) === (o.transport === undefined)) throw new RemusError('INVALID_ARGUMENT', 'criu domain: give exactly one of backup (an address) and transport');
    this.#backup = o.backup === undefined ? undefined : parseSocketAddress(o.backup, 'criu domain backup address', { allowPath: true });
    this.#transport = o.transport;
    this.#o = { ...o, workDir: resolve(o.workDir) };
    this.operation = o.operation === undefined ? newOperationId() : validateOperationId(o.operation);
    this.name = `criu ${o.pid}`;
  }

  /** The domain's cgroup (after start). */
  get cgroupPath(): string | undefined {
    return this.#cgroup;
  }

  /** The freezer's cgroup version (after start). */
  get cgroupVersion(): 1 | 2 | undefined {
    return this.#cgroupVersion;
  }

  /** Root pid of the protected tree. */
  get pid(): number {
    return this.#o.pid;
  }

  /**
   * Checks criu unless `ready` says it was (doctor checks: missing, too old for the kernel, not root;
   * soft-dirty missing is a warning said once), then moves the tree into a
   * new freezer cgroup and connects to the backup. Nothing is touched when a
   * check fails. On a later failure it undoes what it did and rejects.
   */
  async start(signal: AbortSignal = AbortSignal.timeout(60_000)): Promise<void> {
    const ready = this.#o.ready ?? (await assertCriuReady({ criuPath: this.#o.criuPath, netns: this.#o.netns, signal }));
    this.#criu = ready.criu;
    this.#softDirty = ready.softDirty;
    if (!ready.softDirty) this.#o.onWarning?.(`${this.name}: no soft-dirty memory tracking on this kernel: every checkpoint is a full dump`);
    try {
      mkdirSync(this.#o.workDir, { recursive: true });
      const h = detectFreezer(this.#o.cgroup ?? 'auto');
      this.#cgroup = createCgroup(h, `remus-${this.operation}`);
      this.#cgroupVersion = h.version;
      this.#o.onResource?.({ type: 'cgroup', path: this.#cgroup });
      for (let pass = 0; pass < 2; pass++) for (const p of processTree(this.#o.pid)) addToCgroup(this.#cgroup, p);
      if (!cgroupPids(this.#cgroup).includes(this.#o.pid)) throw new RemusError('INVALID_ARGUMENT', `criu domain: process ${this.#o.pid} does not exist`);
      if (!this.#transport) await this.#connect(signal);
    } catch (e) {
      await this.stop().catch(() => undefined);
      throw e;
    }
  }

  /** Freezes the tree. */
  async suspend(ctx: DomainStepContext): Promise<void> {
    await setFrozen(this.#need(), true, ctx.signal);
  }

  /** Dumps the frozen tree with criu and starts sending the images. A failed dump fails the checkpoint. */
  async save(ctx: DomainStepContext): Promise<void> {
    const cgroup = this.#need();
    const n = ctx.checkpoint;
    // The link broke (backup restarted, network blip): reconnect before dumping; failing that, the checkpoint fails.
    if (!this.#transport && (!this.#socket || this.#socket.destroyed)) {
      this.#chainIntact = false;
      await this.#connect(ctx.signal);
    }
    const incremental =
      this.#softDirty && this.#chainIntact && this.#acked === n - 1 && n - this.#lastFull < (this.#o.fullEvery ?? 50);
    const parent = incremental ? n - 1 : null;
    const dir = join(this.#o.workDir, String(n));
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    this.#chainIntact = false;
    const argv = [
      this.#criu, 'dump', '-t', String(this.#o.pid), '-D', dir, '-o', join(this.#o.workDir, `dump-${n}.log`), '-v2',
      '--leave-running', '--tcp-established', '--freeze-cgroup', cgroup, '--manage-cgroups=ignore',
      ...(this.#softDirty ? ['--track-mem'] : []),
      ...(parent !== null ? ['--prev-images-dir', `../${parent}`] : []),
      ...(this.#o.dumpArgs ?? []),
    ];
    const started = performance.now();
    const r = await runProgram(argv, { timeoutMs: 600_000, signal: ctx.signal, netns: this.#o.netns, what: `criu dump of checkpoint ${n}` }).catch((e: unknown) => {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    });
    const dumpMs = performance.now() - started;
    if (r.code !== 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new RemusError(CriuErrors.DUMP_FAILED, `criu dump of checkpoint ${n} failed (${r.signal ?? `exit ${r.code}`}): ${lastLines(readLog(this.#o.workDir, n) || r.output)}`, {
        details: { checkpoint: n },
      });
    }
    if (parent === null) this.#lastFull = n;
    const files = readdirSync(dir).filter((f) => f !== 'parent').sort();
    let bytes = 0;
    let pageBytes = 0;
    for (const f of files) {
      const size = statSync(join(dir, f)).size;
      bytes += size;
      if (f.startsWith('pages-')) pageBytes += size;
    }
    this.#o.onDump?.({ checkpoint: n, parent, dumpMs, bytes, pageBytes });
    if (this.#transport) {
      this.#transport.send(ctx, Buffer.concat(checkpointFrames(n, parent, ctx.epoch, dir, files)));
      this.#pending = { checkpoint: n, done: Promise.resolve(), settle: () => undefined };
    } else this.#pending = this.#send(n, parent, ctx.epoch, dir, files);
  }

  /** Carries the following checkpoints over `t` (a new session of the caller's channel): the next dump is full. */
  useTransport(t: CheckpointTransport): void {
    if (!this.#transport) throw new RemusError('STATE', `${this.name} sends to a backup address, not over a transport`);
    this.#transport = t;
    this.#chainIntact = false;
  }

  /** Thaws the tree. Harmless when it runs. */
  async resume(ctx: DomainStepContext): Promise<void> {
    await setFrozen(this.#need(), false, ctx.signal);
  }

  /** Resolves when the backup holds checkpoint N complete; rejects with its refusal or a broken link. */
  async waitAck(ctx: DomainStepContext): Promise<void> {
    const p = this.#pending;
    if (!p || p.checkpoint !== ctx.checkpoint) throw new RemusError('STATE', `${this.name}: checkpoint ${ctx.checkpoint} was not saved`);
    const aborted = new Promise<never>((_, reject) => {
      if (ctx.signal.aborted) reject(abortError(ctx.signal, `ack of checkpoint ${ctx.checkpoint}`));
      ctx.signal.addEventListener('abort', () => reject(abortError(ctx.signal, `ack of checkpoint ${ctx.checkpoint}`)), { once: true });
    });
    aborted.catch(() => undefined);
    await Promise.race([this.#transport ? this.#transport.waitAck(ctx) : p.done, aborted]);
    this.#acked = ctx.checkpoint;
    this.#chainIntact = true;
    this.#prune(ctx.checkpoint);
  }

  /**
   * Thaws the tree and leaves it running, moves it out of the domain's
   * cgroup (back to the freezer root) and removes the cgroup; closes the
   * link. The tree is not killed (it is the user's service). Idempotent.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#socket?.destroy();
    this.#pending?.settle(new RemusError(CriuErrors.LINK_BROKEN, `${this.name} stopped`));
    const cgroup = this.#cgroup;
    if (!cgroup) return;
    await setFrozen(cgroup, false, AbortSignal.timeout(5000)).catch(() => undefined);
    const root = detectFreezer(this.#o.cgroup ?? 'auto').root;
    for (const p of cgroupPids(cgroup)) {
      try {
        addToCgroup(root, p);
      } catch {
        // Exited.
      }
    }
    await reapCgroup(cgroup);
    this.#cgroup = undefined;
  }

  async #connect(signal: AbortSignal): Promise<void> {
    const a = this.#backup as SocketAddress;
    const socket = await withDeadline(
      (s) =>
        new Promise<Socket>((resolveSocket, reject) => {
          const sock = 'path' in a ? connect(a.path) : connect(a.port, a.host);
          const fail = (e: Error): void => {
            sock.destroy();
            reject(new RemusError(CriuErrors.LINK_BROKEN, `${this.name}: cannot connect to the backup: ${e.message}`, { cause: e }));
          };
          sock.once('error', fail);
          s.addEventListener('abort', () => fail(new Error('aborted')), { once: true });
          sock.once('connect', () => {
            sock.off('error', fail);
            resolveSocket(sock);
          });
        }),
      { what: `${this.name}: connect to the backup`, timeoutMs: this.#o.connectTimeoutMs ?? 10_000, signal },
    );
    const reader = new FrameReader(DEFAULT_MAX_FRAME_BYTES);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      let frames;
      try {
        frames = reader.push(chunk);
      } catch (e) {
        this.#pending?.settle(e as RemusError);
        socket.destroy();
        return;
      }
      for (const f of frames) {
        const p = this.#pending;
        if (f.type === Frame.ACK && p && f.checkpoint === p.checkpoint) p.settle();
        else if (f.type === Frame.NACK && p && (f.checkpoint === p.checkpoint || f.checkpoint === 0)) {
          p.settle(new RemusError(CriuErrors.TRANSFER_REFUSED, `backup refused checkpoint ${p.checkpoint}: ${f.payload.toString('utf8')}`));
        }
      }
    });
    socket.on('error', () => undefined);
    const keepalive = setInterval(() => {
      if (!socket.destroyed && socket.writableLength < DEFAULT_MAX_FRAME_BYTES) socket.write(encodeFrame(Frame.PING, 0));
    }, this.#o.keepaliveMs ?? 1000);
    keepalive.unref();
    socket.on('close', () => {
      clearInterval(keepalive);
      if (this.#socket === socket) this.#socket = undefined;
      this.#pending?.settle(new RemusError(CriuErrors.LINK_BROKEN, `${this.name}: the connection to the backup closed`));
    });
    this.#socket = socket;
  }

  /** Streams `files` of `dir` as checkpoint n; the returned transfer settles on the backup's answer. */
  #send(n: number, parent: number | null, epoch: number, dir: string, files: readonly string[]): Pending {
    let settle!: (e?: RemusError) => void;
    let settled = false;
    const done = new Promise<void>((res, rej) => {
      settle = (e) => {
        if (settled) return;
        settled = true;
        if (e) rej(e);
        else res();
      };
    });
    done.catch(() => undefined);
    const pending: Pending = { checkpoint: n, done, settle: (e) => settle(e) };
    const socket = this.#socket;
    if (!socket || socket.destroyed) {
      settle(new RemusError(CriuErrors.LINK_BROKEN, `${this.name}: no connection to the backup`));
      return pending;
    }
    for (const frame of checkpointFrames(n, parent, epoch, dir, files)) socket.write(frame);
    return pending;
  }

  /** Removes local checkpoint dirs older than the chain the next dump may need. */
  #prune(acked: number): void {
    for (const e of readdirSync(this.#o.workDir)) {
      const m = /^(?:dump-)?([0-9]+)(?:\.log)?$/.exec(e);
      if (m && Number(m[1]) < this.#lastFull && Number(m[1]) !== acked) rmSync(join(this.#o.workDir, e), { recursive: true, force: true });
    }
  }

  #need(): string {
    if (!this.#cgroup) throw new RemusError('STATE', `${this.name} is not started`);
    return this.#cgroup;
  }
}

/** Checkpoint n's frames: BEGIN `{parent, epoch}`, each file in chunks below the frame cap, END with the sha256 of the FILE payloads. */
function checkpointFrames(n: number, parent: number | null, epoch: number, dir: string, files: readonly string[]): Buffer[] {
  const out = [encodeFrame(Frame.BEGIN, n, Buffer.from(JSON.stringify({ parent, epoch })))];
  const hash = createHash('sha256');
  const chunk = DEFAULT_MAX_FRAME_BYTES - 256;
  for (const f of files) {
    const data = readFileSync(join(dir, f));
    for (let off = 0; off === 0 || off < data.length; off += chunk) {
      const payload = filePayload(f, data.subarray(off, off + chunk));
      hash.update(payload);
      out.push(encodeFrame(Frame.FILE, n, payload));
      if (data.length === 0) break;
    }
  }
  out.push(encodeFrame(Frame.END, n, hash.digest()));
  return out;
}

/** Makes a CRIU domain (see {@link CriuDomainOptions}); call `start()` before the loop. */
export function criuDomain(options: CriuDomainOptions): CriuDomain {
  return new CriuDomain(options);
}

function readLog(workDir: string, n: number): string {
  try {
    return readFileSync(join(workDir, `dump-${n}.log`), 'utf8')
      .split('\n')
      .filter((l) => /Error|error/.test(l))
      .slice(-6)
      .join('\n');
  } catch {
    return '';
  }
}

/** `pid` and its descendants, from /proc/PID/task/TID/children. */
function processTree(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0 && out.length < 100_000) {
    const p = todo.pop() as number;
    out.push(p);
    let tasks: string[] = [];
    try {
      for (const t of readdirSync(`/proc/${p}/task`)) tasks.push(...readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(' ').filter(Boolean));
    } catch {
      tasks = [];
    }
    todo.push(...tasks.map(Number));
  }
  return out;
}
