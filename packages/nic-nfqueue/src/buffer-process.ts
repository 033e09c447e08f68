/**
 * The buffer process: a small long-lived Node program that owns one
 * NETLINK_NETFILTER socket in one network namespace and holds the packets of
 * the queues it binds until it is told to release them.
 *
 * It is started once per network namespace per operation (with
 * `ip netns exec NS node buffer-process.js`, or plainly for the namespace the
 * caller runs in), because a netlink socket lives in the namespace of the
 * process that opened it and Node cannot `setns`. The parent talks to it
 * with one JSON object per line on stdin/stdout (see {@link Request}).
 *
 * Fail closed: when its stdin closes (the parent died) it exits; when it
 * exits, however, the kernel unbinds its queues, drops what they held, and
 * drops every new packet the rules queue (the rules never use
 * `--queue-bypass`). It never accepts a packet except by a batch verdict up
 * to a recorded epoch boundary.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setPriority } from 'node:os';
import { createInterface } from 'node:readline';
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
  on(event: 'message', listener: (msg: Buffer) => void): void;
  on(event: 'error', listener: (err: { code?: string; message: string }) => void): void;
  send(msg: Buffer, options?: { port?: number }, callback?: (err?: Error) => void): void;
  setRecvBufferSize(size: number): unknown;
  close(): void;
}

const require = createRequire(import.meta.url);
const { RawNetlinkSocket } = require('netlink') as { RawNetlinkSocket: new (protocol: number, options?: object) => RawSocket };

/** How long the kernel may take to ACK a config or verdict message. */
const ACK_TIMEOUT_MS = 2000;
/** Socket receive buffer asked for (the kernel caps it at net.core.rmem_max). */
const RCVBUF = 8 << 20;
/** Packets released by the first of a commit's two batch verdicts (see `release`). */
const FIRST_BATCH = Number(process.env.REMUS_NFQ_FIRST_BATCH ?? 4);
/** How often changed figures are reported to the parent. */
const STATS_INTERVAL_MS = 250;
/**
 * Profiling aid (the benchmark sets it): when REMUS_NFQ_TRACE names a file, each release
 * appends one line of CLOCK_MONOTONIC nanoseconds along its path, written after the reply:
 * `release <request written by the parent> <line read> <handled> <verdict sent> <ACK> <reply written>`.
 */
const TRACE = process.env.REMUS_NFQ_TRACE;
const now = (): bigint => process.hrtime.bigint();
/** Trace points of the release being handled (only with TRACE). */
const trace: bigint[] = [];

/**
 * One bound queue.
 * Invariant: `ids`/`lens` from `head` on are the packets the kernel holds for
 * this queue that this process has seen, in id order (the kernel's order),
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

const queues = new Map<number, Queue>();
const pendingAcks = new Map<number, { resolve: (errno: number) => void; timer: NodeJS.Timeout }>();
let seq = Math.floor(Math.random() * 0x7fffffff);
let overruns = 0;

/**
 * Nice value asked for: a commit's output waits for this process to wake up and send the
 * verdict, so under load (the guest's own bulk traffic keeps the CPUs busy) it should not
 * queue behind ordinary work. Unprivileged, the request fails and the default stays.
 */
const NICE = Number(process.env.REMUS_NFQ_NICE ?? -10);
try {
  setPriority(0, NICE);
} catch {
  // Not allowed: the default priority stays.
}

const sock = new RawNetlinkSocket(NETLINK_NETFILTER);
try {
  sock.setRecvBufferSize(RCVBUF);
} catch {
  // Kept at the default size: the kernel counts what overflows (user_dropped).
}

sock.on('message', (buf: Buffer) => {
  for (const m of parseMessages(buf)) {
    if (m.kind === 'ack') {
      const p = pendingAcks.get(m.seq);
      if (p) {
        pendingAcks.delete(m.seq);
        clearTimeout(p.timer);
        p.resolve(m.errno);
      }
    } else if (m.kind === 'packet') {
      onPacket(m.queue, m.id, m.length);
    }
  }
});
sock.on('error', (err) => {
  // ENOBUFS: the kernel could not deliver a packet message; it dropped that
  // packet and counted it as user_dropped. Nothing is held that we do not know.
  if (err.code === 'ENOBUFS') overruns++;
  else process.stderr.write(`buffer process: netlink error: ${err.message}\n`);
});

/** Set when figures changed since the last report. */
let dirty = false;

function onPacket(num: number, id: number, length: number): void {
  const q = queues.get(num);
  dirty = true;
  if (!q) {
    // A packet for a queue we are unbinding: leave it to the kernel's flush.
    return;
  }
  q.lastSeen = id;
  if (q.heldBytes + length > q.maxBytes) {
    sendNoAck(NFQNL_MSG_VERDICT, verdict(num, NF_DROP, id));
    q.capDropped++;
    return;
  }
  q.ids.push(id);
  q.lens.push(length);
  q.heldBytes += length;
}

function nextSeq(): number {
  seq = (seq + 1) >>> 0;
  if (seq === 0) seq = 1;
  return seq;
}

function sendNoAck(type: number, payload: Buffer): void {
  sock.send(frame(type, NLM_F_REQUEST, nextSeq(), payload), { port: 0 }, () => undefined);
}

/** Sends a message with ACK requested; resolves with the errno (0 = ok). */
function sendAck(type: number, payload: Buffer): Promise<number> {
  const s = nextSeq();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      pendingAcks.delete(s);
      resolve(-1);
    }, ACK_TIMEOUT_MS);
    pendingAcks.set(s, { resolve, timer });
    sock.send(frame(type, NLM_F_REQUEST | NLM_F_ACK, s, payload), { port: 0 }, (err) => {
      if (err) {
        pendingAcks.delete(s);
        clearTimeout(timer);
        resolve((err as { errno?: number }).errno ?? 5);
      }
    });
  });
}

const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 16: 'EBUSY', 19: 'ENODEV', 22: 'EINVAL', 105: 'ENOBUFS' };
function errnoName(e: number): string {
  if (e === -1) return 'ETIMEDOUT';
  return ERRNO_NAMES[e] ?? `errno ${e}`;
}

/** The counters read last (see {@link kernelCounters}). */
let lastCounters = new Map<number, { queueDropped: number; userDropped: number }>();

/** queue_dropped and user_dropped of each bound queue, from /proc (this namespace's view). */
function kernelCounters(): Map<number, { queueDropped: number; userDropped: number }> {
  const out = new Map<number, { queueDropped: number; userDropped: number }>();
  lastCounters = out;
  try {
    for (const line of readFileSync('/proc/net/netfilter/nfnetlink_queue', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/).map(Number);
      if (f.length >= 7 && Number.isFinite(f[0])) out.set(f[0]!, { queueDropped: f[5]!, userDropped: f[6]! });
    }
  } catch {
    // No counters: report what this process counted.
  }
  return out;
}

function statsOf(q: Queue, counters = kernelCounters()): QueueStats {
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

async function bind(req: Extract<Request, { op: 'bind' }>): Promise<Reply> {
  const exclude = new Set(req.exclude);
  for (let num = req.first; num <= req.last; num++) {
    if (exclude.has(num) || queues.has(num)) continue;
    const e = await sendAck(NFQNL_MSG_CONFIG, configCommand(num, NFQNL_CFG_CMD_BIND));
    if (e === 16 || e === 1) continue; // EBUSY / EPERM: another socket owns it
    if (e !== 0) return { id: req.id, ok: false, error: `binding queue ${num} failed: ${errnoName(e)}`, errno: errnoName(e) };
    const p = await sendAck(NFQNL_MSG_CONFIG, configParams(num, req.copyRange, req.maxPackets));
    if (p !== 0) {
      await sendAck(NFQNL_MSG_CONFIG, configCommand(num, NFQNL_CFG_CMD_UNBIND));
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
    queues.set(num, q);
    return { id: req.id, ok: true, queue: num, stats: statsOf(q) };
  }
  return { id: req.id, ok: false, error: `no free queue number in ${req.first}-${req.last}`, errno: 'EBUSY' };
}

function mark(req: Extract<Request, { op: 'mark' }>): Reply {
  const q = queues.get(req.queue);
  if (!q) return { id: req.id, ok: false, error: `queue ${req.queue} is not bound`, errno: 'ENOENT' };
  // Nothing held: the epoch just closed holds no packet this process has seen, so its release
  // has nothing to do; no mark is kept (marks of empty epochs would pile up) and the parent may
  // skip the release request (`empty`). Packets still in the kernel's queue are read later and
  // belong to the next boundary: released one epoch late, never early, as always.
  const empty = q.head >= q.ids.length;
  if (!empty) q.marks.push({ checkpoint: req.checkpoint, upTo: q.lastSeen });
  // No /proc read here: this runs inside the guest's pause.
  return { id: req.id, ok: true, queue: q.num, stats: statsOf(q, lastCounters), empty };
}

async function release(req: Extract<Request, { op: 'release' }>): Promise<Reply> {
  const q = queues.get(req.queue);
  if (!q) return { id: req.id, ok: false, error: `queue ${req.queue} is not bound`, errno: 'ENOENT' };
  const at = q.marks.findIndex((m) => m.checkpoint === req.checkpoint);
  const upTo = at < 0 ? -1 : q.marks[at]!.upTo;
  if (at >= 0) q.marks.splice(0, at + 1);
  dirty = true;
  q.epochs++;
  // Nothing seen held up to the boundary: no verdict (the kernel would say ENOENT).
  if (upTo < 0 || q.head >= q.ids.length || idAfter(q.ids[q.head]!, upTo)) {
    return { id: req.id, ok: true, queue: q.num, stats: statsOf(q) };
  }
  if (TRACE) trace.push(now());
  // The kernel reinjects a batch's packets inside the sendmsg that carries the verdict and
  // hands them on only as it goes; a small first batch puts the epoch's first packets on
  // the wire without waiting for the kernel to walk the whole epoch (measured: bench/).
  const first = q.ids[Math.min(q.head + FIRST_BATCH - 1, q.ids.length - 1)]!;
  const replies: Promise<number>[] = [];
  if (idAfter(upTo, first)) replies.push(sendAck(NFQNL_MSG_VERDICT_BATCH, verdict(q.num, NF_ACCEPT, first)));
  replies.push(sendAck(NFQNL_MSG_VERDICT_BATCH, verdict(q.num, NF_ACCEPT, upTo)));
  const errnos = await Promise.all(replies);
  if (TRACE) trace.push(now());
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
  return { id: req.id, ok: true, queue: q.num, stats: statsOf(q) };
}

async function unbind(req: Extract<Request, { op: 'unbind' }>): Promise<Reply> {
  const mine = [...queues.values()].filter((q) => q.tag === req.tag);
  if (mine.length === 0) return { id: req.id, ok: true };
  const counters = kernelCounters();
  let last: QueueStats | undefined;
  for (const q of mine) {
    queues.delete(q.num);
    // Unbinding makes the kernel drop every packet the queue still holds.
    const e = await sendAck(NFQNL_MSG_CONFIG, configCommand(q.num, NFQNL_CFG_CMD_UNBIND));
    q.flushDropped += q.ids.length - q.head;
    q.ids = [];
    q.lens = [];
    q.head = 0;
    q.heldBytes = 0;
    if (e !== 0 && e !== 2 && e !== 1) {
      return { id: req.id, ok: false, error: `unbinding queue ${q.num} failed: ${errnoName(e)}`, errno: errnoName(e) };
    }
    last = statsOf(q, counters);
  }
  return last ? { id: req.id, ok: true, queue: last.queue, stats: last } : { id: req.id, ok: true };
}

async function handle(req: Request): Promise<Reply> {
  switch (req.op) {
    case 'bind':
      return bind(req);
    case 'mark':
      // Let the netlink messages already readable be handled first, so the
      // boundary is as late as the kernel allows (an unread packet would only
      // be released one epoch late, never early).
      await new Promise((r) => setImmediate(r));
      return mark(req);
    case 'release':
      if (TRACE) trace.push(now());
      return release(req);
    case 'unbind':
      return unbind(req);
    case 'stats': {
      const counters = kernelCounters();
      return { id: req.id, ok: true, all: [...queues.values()].map((q) => statsOf(q, counters)), overruns };
    }
    default:
      return { id: (req as { id: number }).id, ok: false, error: `unknown op ${(req as { op: string }).op}`, errno: 'EINVAL' };
  }
}

function write(reply: Reply | { ready: true; pid: number } | { stats: QueueStats[] }): void {
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}

// Requests are handled one at a time, in order: a mark never overtakes a release.
let chain: Promise<void> = Promise.resolve();
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const read = TRACE ? now() : 0n;
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    return;
  }
  chain = chain.then(async () => {
    if (TRACE) trace.length = 0;
    write(await handle(req));
    if (TRACE && req.op === 'release' && trace.length === 3) {
      appendFileSync(TRACE, `release ${req.written ?? 0} ${read} ${trace.join(' ')} ${now()}\n`);
    }
  });
});
rl.on('close', () => {
  // The parent is gone (or tore us down): closing the socket unbinds every
  // queue, and the kernel drops what they held.
  sock.close();
  process.exit(0);
});

write({ ready: true, pid: process.pid });

// Reports figures while they change, so progress displays see held output grow between checkpoints.
setInterval(() => {
  if (!dirty || queues.size === 0) return;
  dirty = false;
  const counters = kernelCounters();
  write({ stats: [...queues.values()].map((q) => statsOf(q, counters)) });
}, STATS_INTERVAL_MS);
