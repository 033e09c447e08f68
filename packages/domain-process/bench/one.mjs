// One benchmark scenario in a fresh process (so its peak RSS is its own):
//   node bench/one.mjs backup|raw <MiB> <rounds>
// Both ends run here over TCP loopback. Each round sends one checkpoint of
// <MiB> MiB and waits for the acknowledgement; the receiver keeps the last
// complete state while the next one arrives, like a backup does.
// Prints one JSON line: per-round times (ms), peak RSS and RSS at start (bytes).
import { createConnection, createServer } from 'node:net';
import { nextEvent } from '@remus/core';
import { BackupLink, BackupServer } from '../dist/index.js';

const [mode, mibArg, roundsArg] = process.argv.slice(2);
const size = Number(mibArg) * 1024 * 1024;
const rounds = Number(roundsArg);
const rssStart = process.memoryUsage().rss;
const state = Buffer.alloc(size, 7);
const times = [];

if (mode === 'backup') {
  const server = await BackupServer.listen({ host: '127.0.0.1', port: 0 }, { maxFrameBytes: size });
  const link = await BackupLink.connect(server.address, AbortSignal.timeout(10_000));
  for (let cp = 1; cp <= rounds; cp++) {
    const t0 = performance.now();
    link.send(cp, state);
    await link.waitAck(cp, AbortSignal.timeout(120_000));
    times.push(performance.now() - t0);
  }
  if (server.latest.length !== size || server.latestCheckpoint !== rounds) throw new Error('backup did not keep the last state');
  link.close();
  await server.close();
} else if (mode === 'raw') {
  // Baseline: the least a receiver that keeps the state can do: a length
  // prefix, one preallocated buffer filled from the socket, one ack byte.
  let latest = Buffer.alloc(0);
  const server = createServer((s) => {
    let cur;
    let fill = 0;
    let head = Buffer.alloc(0);
    s.on('data', (c) => {
      let at = 0;
      while (at < c.length) {
        if (!cur) {
          const take = Math.min(4 - head.length, c.length - at);
          head = Buffer.concat([head, c.subarray(at, at + take)]);
          at += take;
          if (head.length < 4) return;
          cur = Buffer.allocUnsafe(head.readUInt32BE(0));
          head = Buffer.alloc(0);
          fill = 0;
          continue;
        }
        const take = Math.min(cur.length - fill, c.length - at);
        c.copy(cur, fill, at, at + take);
        fill += take;
        at += take;
        if (fill === cur.length) {
          latest = cur;
          cur = undefined;
          s.write(Buffer.from([1]));
        }
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await nextEvent(server, 'listening', { what: 'raw server', timeoutMs: 10_000 });
  const sock = createConnection(server.address().port, '127.0.0.1');
  sock.setNoDelay(true);
  await nextEvent(sock, 'connect', { what: 'raw connect', timeoutMs: 10_000, rejectOn: ['error'] });
  const len = Buffer.alloc(4);
  len.writeUInt32BE(size);
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    const acked = nextEvent(sock, 'data', { what: 'raw ack', timeoutMs: 120_000 });
    sock.cork();
    sock.write(len);
    sock.write(state);
    sock.uncork();
    await acked;
    times.push(performance.now() - t0);
  }
  if (latest.length !== size) throw new Error('raw receiver did not keep the state');
  sock.destroy();
  server.close();
} else {
  throw new Error(`unknown mode ${mode}`);
}
console.log(JSON.stringify({ mode, size, rounds, times, rssStart, peakRss: process.resourceUsage().maxRSS * 1024 }));
