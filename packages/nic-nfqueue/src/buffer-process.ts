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
import { setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import { NfqueueBuffer, REPORT_INTERVAL_MS } from './queue-buffer.js';
import type { QueueStats, Reply, Request } from './buffer-protocol.js';

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

const buffer = new NfqueueBuffer({ onError: (m) => process.stderr.write(`buffer process: ${m}\n`) });

function write(reply: Reply | { ready: true; pid: number } | { stats: QueueStats[] }): void {
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}

// Requests are handled one at a time, in order: a mark never overtakes a release.
let chain: Promise<void> = Promise.resolve();
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  // Profiling (REMUS_NFQ_TRACE): a release's trace line starts with the parent's write and this read.
  const read = buffer.tracing ? process.hrtime.bigint() : 0n;
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    return;
  }
  chain = chain.then(async () => {
    write(await buffer.handle(req));
    if (req.op === 'release') buffer.traceRelease(BigInt(req.written ?? 0), read);
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
}, REPORT_INTERVAL_MS);
