/**
 * The buffer process: a small long-lived Node program that runs one
 * {@link NfqueueBuffer} (one NETLINK_NETFILTER socket) in a network namespace
 * other than its parent's.
 *
 * It is started once per such namespace per operation (with
 * `ip netns exec NS node buffer-process.js`), because a netlink socket lives
 * in the namespace of the process that opened it and Node cannot `setns`.
 * The parent talks to it with one JSON object per line on stdin/stdout (see
 * {@link Request}). Devices in the parent's own namespace need none: the
 * parent runs the same buffer in-process.
 *
 * Fail closed: when its stdin closes (the parent died) it exits; when it
 * exits, however, the kernel unbinds its queues, drops what they held, and
 * drops every new packet the rules queue.
 */
import { appendFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import { NfqueueBuffer } from './queue-buffer.js';
import type { QueueStats, Reply, Request } from './buffer-protocol.js';

/** How often changed figures are reported to the parent. */
const STATS_INTERVAL_MS = 250;
/**
 * Profiling aid (the benchmark sets it): when REMUS_NFQ_TRACE names a file, each release
 * appends one line of CLOCK_MONOTONIC nanoseconds along its path, written after the reply:
 * `release <request written by the parent> <line read> <handled> <verdict sent> <sendmsg returned> <ACK> <reply written>`.
 */
const TRACE = process.env.REMUS_NFQ_TRACE;
const now = (): bigint => process.hrtime.bigint();

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

const buffer = new NfqueueBuffer({ onError: (m) => process.stderr.write(`buffer process: ${m}\n`) }, { trace: TRACE !== undefined });

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
    write(await buffer.handle(req));
    if (TRACE && req.op === 'release' && buffer.traced.length === 4) {
      appendFileSync(TRACE, `release ${req.written ?? 0} ${read} ${buffer.traced.join(' ')} ${now()}\n`);
    }
  });
});
rl.on('close', () => {
  // The parent is gone (or tore us down): closing the socket unbinds every
  // queue, and the kernel drops what they held.
  buffer.close();
  process.exit(0);
});

write({ ready: true, pid: process.pid });

// Reports figures while they change, so progress displays see held output grow between checkpoints.
setInterval(() => {
  const stats = buffer.takeReport();
  if (stats) write({ stats });
}, STATS_INTERVAL_MS);
