/**
 * The demo's guest service: a UDP echo server. Each reply carries the
 * request's number, the guest's reply counter and the wall-clock time (ms,
 * sub-millisecond) at which the guest sent it, so the demo can tell which
 * epoch the reply belongs to. Prints `ready` once it listens.
 *
 * usage: node guest.js PORT
 */
import { createSocket } from 'node:dgram';

const port = Number(process.argv[2] ?? 7000);
const now = (): number => performance.timeOrigin + performance.now();
const socket = createSocket('udp4');
let replies = 0;
socket.on('message', (msg, from) => {
  let n = -1;
  try {
    n = (JSON.parse(msg.toString()) as { n: number }).n;
  } catch {
    return;
  }
  const body = Buffer.from(JSON.stringify({ n, k: ++replies, g: now() }));
  socket.send(body, from.port, from.address);
});
socket.bind(port, '0.0.0.0', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
