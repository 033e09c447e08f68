/**
 * The buffer: one NETLINK_NETFILTER socket that binds queues and holds their
 * packets until it is told to release them. It answers the requests of
 * `buffer-protocol.ts` (bind, mark, release, unbind, stats), one at a time.
 *
 * Two hosts run it, with the same code: the buffer process
 * (`buffer-process.ts`, for a namespace other than the caller's: a netlink
 * socket lives in the namespace of the process that opened it and Node
 * cannot `setns`), and the caller's own process (`InProcessBuffer` in
 * `buffer-client.ts`, for devices in the caller's namespace: no pipe, no
 * second process to wake).
 *
 * Fail closed: when the socket closes (on `close`, or with its process) the
 * kernel unbinds its queues, drops what they held, and drops every new packet
 * the rules queue (the rules never use `--queue-bypass`). It never accepts a
 * packet except by a batch verdict up to a recorded epoch boundary.
 */
import { appendFileSync, readdirSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import {
  configCommand,
  configParams,
  frame,
  idAfter,
  NETLINK_NETFILTER,
  NF_ACCEPT,
  NF_DROP,
  NFQNL_CFG_CMD_BIND,
  NFQNL_CFG_CMD_UNBIND,
  NFQNL_MSG_CONFIG,
  NFQNL_MSG_VERDICT,
  NFQNL_MSG_VERDICT_BATCH,
  NLM_F_ACK,
  NLM_F_REQUEST,
  parseMessages,
  verdict,
} from './nfqueue-wire.js';
import type { QueueStats, Reply, Request } from './buffer-protocol.js';

interface RawSocket {
  on(event: 'message' | 'truncatedMessage', listener: (msg: Buffer) => void): void;
  on(event: 'error', listener: (err: { code?: string; message: string }) => void): void;
  send(msg: Buffer | Buffer[], options?: { port?: number }, callback?: (err?: Error) => void): void;
  setRecvBufferSize(size: number): unknown;
  address(): { port: number };
  close(): void;
}

const require = createRequire(import.meta.url);

/** How long the kernel may take to ACK a config or verdict message. */
const ACK_TIMEOUT_MS = 2000;
/** Socket receive buffer asked for (the kernel caps it at net.core.rmem_max). */
const RCVBUF = 8 << 20;
/** How often a buffer's host reports changed figures ({@link NfqueueBuffer.takeReport}). */
export const REPORT_INTERVAL_MS = 250;
/**
 * The `netlink` package's receive buffer, allocated per datagram it reads (a longer one is
 * reported as truncated, not parsed): queues copy 1 byte of each packet (`copyRange`), so a
 * packet message is a few hundred bytes, and an error ACK quotes a verdict of a few dozen.
 */
const MAX_DATAGRAM = 4096;
/** The buffer of the inline reads (`#drainNow`), allocated once: read() would cut a longer datagram silently. */
const INLINE_BUFFER = 65536;
/** Datagrams read in one synchronous drain at most (see `#drainNow`); the rest are read by the event loop. */
const MAX_DRAIN = 256;
/** Packets released by the first of a commit's two batch verdicts (see `release`). */
const FIRST_BATCH = Number(process.env.REMUS_NFQ_FIRST_BATCH ?? 4);

/**
 * One bound queue.
 * Invariant: `ids`/`lens` from `head` on are the packets the kernel holds for
 * this queue that this buffer has seen, in id order (the kernel's order),
 * minus the ones dropped one by one at the byte cap.
 */
interface Queue {
  readonly num: number;
  readonly tag: string;
  readonly maxBytes: number;
  ids: number[];
  lens: number[];
  head: number;
  heldBytes: number;
  /** Last packet id seen, or -1 before the first packet. */
  lastSeen: number;
  /**
   * Epoch boundaries recorded by `mark` and not yet released, oldest first
   * (`upTo` -1: no packet seen yet). `release` for checkpoint N takes the
   * oldest boundary of N and forgets the ones before it (checkpoints that
   * failed): commit N releases up to boundary N, even if boundary N+1 was
   * already recorded, and never up to a boundary it does not know.
   */
  marks: { checkpoint: number; upTo: number }[];
  released: number;
  releasedBytes: number;
  capDropped: number;
  flushDropped: number;
  epochs: number;
}

type Counters = Map<number, { queueDropped: number; userDropped: number }>;

const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 16: 'EBUSY', 19: 'ENODEV', 22: 'EINVAL', 105: 'ENOBUFS' };
function errnoName(e: number): string {
  if (e === -1) return 'ETIMEDOUT';
  return ERRNO_NAMES[e] ?? `errno ${e}`;
}

/** What a buffer reports besides replies. */
export interface BufferEvents {
  /** A socket error other than an overrun (for the log). */
  readonly onError?: (message: string) => void;
}

/** One netlink socket and the queues it binds (see the module comment). */
export class NfqueueBuffer {
  readonly #sock: RawSocket;
  readonly #queues = new Map<number, Queue>();
  /** ACKs awaited, by sequence number; `timer` is armed only for one not read inside its `sendmsg` (see `#sendAcked`). */
  readonly #pendingAcks = new Map<number, { resolve: (errno: number) => void; timer: NodeJS.Timeout | undefined }>();
  #seq = Math.floor(Math.random() * 0x7fffffff);
  #overruns = 0;
  /** Set when figures changed since the last report. */
  #dirty = false;
  /** The kernel's drop counters as read last (see {@link #kernelCounters}). */
  #lastCounters: Counters = new Map();
  #closed = false;
  /**
   * The socket's file descriptor in this process (found once, see {@link netlinkFd}), for
   * reading what the kernel queued inside a `sendmsg` without waiting for an event-loop turn;
   * undefined when it could not be found (then the event loop reads everything).
   */
  readonly #fd: number | undefined;
  readonly #readBuf = Buffer.allocUnsafe(INLINE_BUFFER);
  /**
   * Profiling aid (REMUS_NFQ_TRACE, which the benchmark sets): the file
   * {@link traceRelease} appends to, and the points of the release being
   * handled (CLOCK_MONOTONIC ns): handled, verdict sent, `sendmsg` returned, ACK.
   */
  readonly #traceFile = process.env.REMUS_NFQ_TRACE;
  readonly #traced: bigint[] = [];

  /** Opens the socket in this process's network namespace. Throws if netlink is unavailable. */
  constructor(events: BufferEvents = {}) {
    const { RawNetlinkSocket } = require('netlink') as { RawNetlinkSocket: new (protocol: number, options?: object) => RawSocket };
    // No peeking: one recvmsg per datagram into a buffer of MAX_DATAGRAM (a longer one is reported, not parsed).
    this.#sock = new RawNetlinkSocket(NETLINK_NETFILTER, { messagePeeking: false, msgBufferSize: MAX_DATAGRAM });
    try {
      this.#sock.setRecvBufferSize(RCVBUF);
    } catch {
      // Kept at the default size: the kernel counts what overflows (user_dropped).
    }
    this.#sock.on('message', (buf: Buffer) => this.#onDatagram(buf));
    this.#sock.on('truncatedMessage', () => events.onError?.(`netlink: a message longer than ${MAX_DATAGRAM} bytes was cut short and ignored`));
    let fd: number | undefined;
    try {
      fd = netlinkFd(NETLINK_NETFILTER, this.#sock.address().port);
    } catch {
      fd = undefined;
    }
    this.#fd = fd;
    this.#sock.on('error', (err) => {
      // ENOBUFS: the kernel could not deliver a packet message; it dropped that
      // packet and counted it as user_dropped. Nothing is held that we do not know.
      if (err.code === 'ENOBUFS') this.#overruns++;
      else events.onError?.(`netlink error: ${err.message}`);
    });
  }

  /** True when releases are traced (REMUS_NFQ_TRACE names a file): the host then takes the times {@link traceRelease} needs. */
  get tracing(): boolean {
    return this.#traceFile !== undefined;
  }

  /**
   * After a release was handled and answered: appends its line to the trace file,
   * `release <request written> <request read> <handled> <verdict sent> <sendmsg returned> <ACK> <reply written>`
   * (CLOCK_MONOTONIC ns; in-process, written = read). Nothing when not tracing or when the
   * release sent no verdict.
   */
  traceRelease(written: bigint, read: bigint): void {
    if (this.#traceFile === undefined || this.#traced.length !== 4) return;
    appendFileSync(this.#traceFile, `release ${written} ${read} ${this.#traced.join(' ')} ${process.hrtime.bigint()}\n`);
  }

  /** True when ACKs are read right after the `sendmsg` that asked for them (the socket's descriptor was found), false when the event loop reads them. */
  get inlineAcks(): boolean {
    return this.#fd !== undefined;
  }

  /** ACKs sent for and not yet read (a release reads its own inside the call that sends its verdicts, see `#sendAcked`). */
  get awaitingAcks(): number {
    return this.#pendingAcks.size;
  }

  /** False once {@link close} ran. */
  get open(): boolean {
    return !this.#closed;
  }

  /**
   * Closes the socket: the kernel unbinds every queue and drops what they
   * held. Pending ACK waits resolve as timed out. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const [s, p] of this.#pendingAcks) {
      this.#pendingAcks.delete(s);
      clearTimeout(p.timer);
      p.resolve(-1);
    }
    this.#sock.close();
  }

  /** Handles one request. The caller runs them one at a time, in order: a mark never overtakes a release. */
  async handle(req: Request): Promise<Reply> {
    if (this.#traceFile) this.#traced.length = 0;
    if (this.#closed) return { id: req.id, ok: false, error: 'the buffer is closed', errno: 'EBADF' };
    switch (req.op) {
      case 'bind':
        return this.#bind(req);
      case 'mark':
        // Let the netlink messages already readable be handled first, so the
        // boundary is as late as the kernel allows (an unread packet would only
        // be released one epoch late, never early). One event-loop turn: reading
        // them here instead ends in an EAGAIN exception, which costs more (90
        // against 37 µs after 50 ms idle, measured 4 Dec 2026).
        await new Promise((r) => setImmediate(r));
        return this.#mark(req);
      case 'release':
        if (this.#traceFile) this.#traced.push(process.hrtime.bigint());
        return this.#release(req);
      case 'unbind':
        return this.#unbind(req);
      case 'stats': {
        const counters = this.#kernelCounters();
        return { id: req.id, ok: true, all: [...this.#queues.values()].map((q) => this.#statsOf(q, counters)), overruns: this.#overruns };
      }
      default:
        return { id: (req as { id: number }).id, ok: false, error: `unknown op ${(req as { op: string }).op}`, errno: 'EINVAL' };
    }
  }

  /** Figures of every queue if any changed since the last report (reads the kernel's counters), else undefined. */
  takeReport(): QueueStats[] | undefined {
    if (!this.#dirty || this.#queues.size === 0) return undefined;
    this.#dirty = false;
    const counters = this.#kernelCounters();
    return [...this.#queues.values()].map((q) => this.#statsOf(q, counters));
  }

  /** One datagram from the kernel: ACKs settle their waits, packets are recorded (in the kernel's order). */
  #onDatagram(buf: Buffer): void {
    for (const m of parseMessages(buf)) {
      if (m.kind === 'ack') {
        const p = this.#pendingAcks.get(m.seq);
        if (p) {
          this.#pendingAcks.delete(m.seq);
          clearTimeout(p.timer);
          p.resolve(m.errno);
        }
      } else if (m.kind === 'packet') {
        this.#onPacket(m.queue, m.id, m.length);
      }
    }
  }

  /**
   * Reads, now, what the kernel has queued on the socket, in order, as the event loop would
   * (packets recorded, ACKs settled), until no ACK is awaited, at most MAX_DRAIN datagrams.
   * nfnetlink handles a message inside the `sendmsg` that carries it and queues its ACK there,
   * so after a verdict its ACK is already here (like libnl's `nl_wait_for_ack` right after
   * `nl_send`), behind any packet queued before it. The socket is non-blocking (libuv made it
   * so): an empty queue ends the drain (EAGAIN) and the event loop reads whatever comes later.
   * Without the descriptor, or on any other error, it does nothing and the event loop reads
   * everything.
   */
  #drainNow(): void {
    const fd = this.#fd;
    if (fd === undefined || this.#closed) return;
    for (let i = 0; i < MAX_DRAIN && this.#pendingAcks.size > 0; i++) {
      let n: number;
      try {
        n = readSync(fd, this.#readBuf, 0, INLINE_BUFFER, null);
      } catch {
        return; // EAGAIN: drained. ENOBUFS (the kernel dropped a message) is counted by the event loop's read.
      }
      if (n <= 0) return;
      this.#onDatagram(this.#readBuf.subarray(0, n));
    }
  }

  #onPacket(num: number, id: number, length: number): void {
    const q = this.#queues.get(num);
    this.#dirty = true;
    if (!q) {
      // A packet for a queue we are unbinding: leave it to the kernel's flush.
      return;
    }
    q.lastSeen = id;
    if (q.heldBytes + length > q.maxBytes) {
      this.#sock.send(frame(NFQNL_MSG_VERDICT, NLM_F_REQUEST, this.#nextSeq(), verdict(num, NF_DROP, id)), { port: 0 }, () => undefined);
      q.capDropped++;
      return;
    }
    q.ids.push(id);
    q.lens.push(length);
    q.heldBytes += length;
  }

  #nextSeq(): number {
    this.#seq = (this.#seq + 1) >>> 0;
    if (this.#seq === 0) this.#seq = 1;
    return this.#seq;
  }

  /** Sends a message with ACK requested; resolves with the errno (0 = ok). */
  async #sendAck(type: number, payload: Buffer): Promise<number> {
    return (await this.#sendAcked(type, [payload]))[0]!;
  }

  /**
   * Sends messages of one type in one datagram, each with ACK requested, and resolves with
   * their errnos in order (0 = ok; -1 = no ACK within ACK_TIMEOUT_MS). The kernel handles a
   * datagram's messages one after the other inside the one `sendmsg`, so a commit's verdicts
   * cost one system call, and none waits for an event-loop turn behind the other. Their ACKs
   * are queued inside that `sendmsg` too: they are read right after it (`#drainNow`), and
   * only an ACK not found there arms a timer and is left to the event loop.
   */
  #sendAcked(type: number, payloads: readonly Buffer[]): Promise<number[]> {
    const seqs = payloads.map(() => this.#nextSeq());
    const replies = seqs.map((s) => new Promise<number>((resolve) => this.#pendingAcks.set(s, { resolve, timer: undefined })));
    const frames = payloads.map((p, i) => frame(type, NLM_F_REQUEST | NLM_F_ACK, seqs[i]!, p));
    this.#sock.send(frames, { port: 0 }, (err) => {
      if (!err) return;
      const errno = (err as { errno?: number }).errno ?? 5;
      for (const s of seqs) {
        const p = this.#pendingAcks.get(s);
        if (!p) continue;
        this.#pendingAcks.delete(s);
        clearTimeout(p.timer);
        p.resolve(errno);
      }
    });
    if (this.#traceFile && type === NFQNL_MSG_VERDICT_BATCH) this.#traced.push(process.hrtime.bigint());
    this.#drainNow();
    for (const s of seqs) {
      const p = this.#pendingAcks.get(s);
      if (p === undefined) continue;
      p.timer = setTimeout(() => {
        this.#pendingAcks.delete(s);
        p.resolve(-1);
      }, ACK_TIMEOUT_MS);
    }
    return Promise.all(replies);
  }

  /** queue_dropped and user_dropped of each bound queue, from /proc (this namespace's view). */
  #kernelCounters(): Counters {
    const out: Counters = new Map();
    this.#lastCounters = out;
    try {
      for (const line of readFileSync('/proc/net/netfilter/nfnetlink_queue', 'utf8').split('\n')) {
        const f = line.trim().split(/\s+/).map(Number);
        if (f.length >= 7 && Number.isFinite(f[0])) out.set(f[0]!, { queueDropped: f[5]!, userDropped: f[6]! });
      }
    } catch {
      // No counters: report what this buffer counted.
    }
    return out;
  }

  #statsOf(q: Queue, counters: Counters): QueueStats {
    const k = counters.get(q.num) ?? { queueDropped: 0, userDropped: 0 };
    const held = q.ids.length - q.head;
    return {
      queue: q.num,
      held,
      heldBytes: q.heldBytes,
      released: q.released,
      releasedBytes: q.releasedBytes,
      capDropped: q.capDropped,
      queueFullDropped: k.queueDropped,
      socketDropped: k.userDropped,
      flushDropped: q.flushDropped,
      dropped: q.capDropped + k.queueDropped + k.userDropped + q.flushDropped,
      epochs: q.epochs,
    };
  }

  async #bind(req: Extract<Request, { op: 'bind' }>): Promise<Reply> {
    const exclude = new Set(req.exclude);
    for (let num = req.first; num <= req.last; num++) {
      if (exclude.has(num) || this.#queues.has(num)) continue;
      const e = await this.#sendAck(NFQNL_MSG_CONFIG, configCommand(num, NFQNL_CFG_CMD_BIND));
      if (e === 16 || e === 1) continue; // EBUSY / EPERM: another socket owns it
      if (e !== 0) return { id: req.id, ok: false, error: `binding queue ${num} failed: ${errnoName(e)}`, errno: errnoName(e) };
      const p = await this.#sendAck(NFQNL_MSG_CONFIG, configParams(num, req.copyRange, req.maxPackets));
      if (p !== 0) {
        await this.#sendAck(NFQNL_MSG_CONFIG, configCommand(num, NFQNL_CFG_CMD_UNBIND));
        return { id: req.id, ok: false, error: `configuring queue ${num} failed: ${errnoName(p)}`, errno: errnoName(p) };
      }
      const q: Queue = {
        num,
        tag: req.tag,
        maxBytes: req.maxBytes,
        ids: [],
        lens: [],
        head: 0,
        heldBytes: 0,
        lastSeen: -1,
        marks: [],
        released: 0,
        releasedBytes: 0,
        capDropped: 0,
        flushDropped: 0,
        epochs: 0,
      };
      this.#queues.set(num, q);
      return { id: req.id, ok: true, queue: num, stats: this.#statsOf(q, this.#kernelCounters()) };
    }
    return { id: req.id, ok: false, error: `no free queue number in ${req.first}-${req.last}`, errno: 'EBUSY' };
  }

  #mark(req: Extract<Request, { op: 'mark' }>): Reply {
    const q = this.#queues.get(req.queue);
    if (!q) return { id: req.id, ok: false, error: `queue ${req.queue} is not bound`, errno: 'ENOENT' };
    // Nothing held: the epoch just closed holds no packet this buffer has seen, so its release
    // has nothing to do; no mark is kept (marks of empty epochs would pile up) and the caller may
    // skip the release request (`empty`). Packets still in the kernel's queue are read later and
    // belong to the next boundary: released one epoch late, never early, as always.
    const empty = q.head >= q.ids.length;
    if (!empty) q.marks.push({ checkpoint: req.checkpoint, upTo: q.lastSeen });
    // No /proc read here: this runs inside the guest's pause.
    return { id: req.id, ok: true, queue: q.num, stats: this.#statsOf(q, this.#lastCounters), empty };
  }

  async #release(req: Extract<Request, { op: 'release' }>): Promise<Reply> {
    const q = this.#queues.get(req.queue);
    if (!q) return { id: req.id, ok: false, error: `queue ${req.queue} is not bound`, errno: 'ENOENT' };
    const at = q.marks.findIndex((m) => m.checkpoint === req.checkpoint);
    const upTo = at < 0 ? -1 : q.marks[at]!.upTo;
    if (at >= 0) q.marks.splice(0, at + 1);
    this.#dirty = true;
    q.epochs++;
    // The kernel's drop counters as last read (every report while figures change): no /proc
    // read on the way to the reply, which the commit waits for.
    // Nothing seen held up to the boundary: no verdict (the kernel would say ENOENT).
    if (upTo < 0 || q.head >= q.ids.length || idAfter(q.ids[q.head]!, upTo)) {
      return { id: req.id, ok: true, queue: q.num, stats: this.#statsOf(q, this.#lastCounters) };
    }
    if (this.#traceFile) this.#traced.push(process.hrtime.bigint());
    // The kernel reinjects a batch's packets inside the sendmsg that carries the verdict and
    // hands them on only as it goes; a small first batch puts the epoch's first packets on
    // the wire without waiting for the kernel to walk the whole epoch (measured: bench/).
    const first = q.ids[Math.min(q.head + FIRST_BATCH - 1, q.ids.length - 1)]!;
    const verdicts = idAfter(upTo, first) ? [verdict(q.num, NF_ACCEPT, first), verdict(q.num, NF_ACCEPT, upTo)] : [verdict(q.num, NF_ACCEPT, upTo)];
    // The kernel has reinjected the released packets when `sendmsg` returns (synchronously here),
    // and queued the ACKs, which #sendAcked reads right away (the trace's 'sendmsg returned').
    const acked = this.#sendAcked(NFQNL_MSG_VERDICT_BATCH, verdicts);
    const errnos = await acked;
    if (this.#traceFile) this.#traced.push(process.hrtime.bigint());
    // ENOENT: the kernel held none of them any more (all dropped one by one).
    const e = errnos.find((x) => x !== 0 && x !== 2);
    if (e !== undefined) {
      return { id: req.id, ok: false, error: `batch verdict on queue ${q.num} failed: ${errnoName(e)}`, errno: errnoName(e) };
    }
    while (q.head < q.ids.length && !idAfter(q.ids[q.head]!, upTo)) {
      q.released++;
      q.releasedBytes += q.lens[q.head]!;
      q.heldBytes -= q.lens[q.head]!;
      q.head++;
    }
    if (q.head > 4096 && q.head * 2 > q.ids.length) {
      q.ids = q.ids.slice(q.head);
      q.lens = q.lens.slice(q.head);
      q.head = 0;
    }
    return { id: req.id, ok: true, queue: q.num, stats: this.#statsOf(q, this.#lastCounters) };
  }

  async #unbind(req: Extract<Request, { op: 'unbind' }>): Promise<Reply> {
    const mine = [...this.#queues.values()].filter((q) => q.tag === req.tag);
    if (mine.length === 0) return { id: req.id, ok: true };
    const counters = this.#kernelCounters();
    let last: QueueStats | undefined;
    for (const q of mine) {
      this.#queues.delete(q.num);
      // Unbinding makes the kernel drop every packet the queue still holds.
      const e = await this.#sendAck(NFQNL_MSG_CONFIG, configCommand(q.num, NFQNL_CFG_CMD_UNBIND));
      q.flushDropped += q.ids.length - q.head;
      q.ids = [];
      q.lens = [];
      q.head = 0;
      q.heldBytes = 0;
      if (e !== 0 && e !== 2 && e !== 1) {
        return { id: req.id, ok: false, error: `unbinding queue ${q.num} failed: ${errnoName(e)}`, errno: errnoName(e) };
      }
      last = this.#statsOf(q, counters);
    }
    return last ? { id: req.id, ok: true, queue: last.queue, stats: last } : { id: req.id, ok: true };
  }
}

/**
 * The file descriptor, in this process, of the netlink socket of `protocol` bound to `port`:
 * its inode from `/proc/self/net/netlink` (this network namespace's sockets), then the
 * descriptor that links to `socket:[inode]`. Undefined when either is not found. Reads /proc
 * once, when a buffer opens.
 */
export function netlinkFd(protocol: number, port: number): number | undefined {
  const want = port >>> 0;
  let inode: string | undefined;
  for (const line of readFileSync('/proc/self/net/netlink', 'utf8').split('\n').slice(1)) {
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    const f = line.trim().split(/\s+/);
    if (f.length >= 10 && Number(f[1]) === protocol && Number(f[2]) === want) {
      inode = f[9];
      break;
    }
  }
  if (inode === undefined || !/^\d+$/.test(inode)) return undefined;
  const target = `socket:[${inode}]`;
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`) === target) return Number(name);
    } catch {
      // Closed meanwhile (readdir's own descriptor, say).
    }
  }
  return undefined;
}
