/**
 * The demo's client: sends a numbered UDP request to the guest every
 * PERIOD ms for DURATION ms, keeps listening DRAIN ms more, then prints one
 * JSON object: every request's send time and, for each reply, the guest's
 * send time and the client's receive time (wall clock, ms).
 *
 * usage: node client.js HOST PORT DURATION_MS PERIOD_MS DRAIN_MS
 */
import { createSocket } from 'node:dgram';

const [host = '127.0.0.1', port = '7000', duration = '3000', period = '5', drain = '1000'] = process.argv.slice(2);
const now = (): number => performance.timeOrigin + performance.now();
const sentAt: number[] = [];
const replies: { n: number; k: number; g: number; r: number }[] = [];
const socket = createSocket('udp4');
socket.on('message', (msg) => {
  const r = now();
  try {
    const { n, k, g } = JSON.parse(msg.toString()) as { n: number; k: number; g: number };
    replies.push({ n, k, g, r });
  } catch {
    // Not a reply.
  }
});
let stopped = false;
const finish = (): void => {
  if (stopped) return;
  stopped = true;
  clearInterval(timer);
  process.stdout.write(`${JSON.stringify({ sentAt, replies })}\n`, () => process.exit(0));
};
const timer = setInterval(() => {
  const n = sentAt.length;
  sentAt.push(now());
  socket.send(JSON.stringify({ n }), Number(port), host);
}, Number(period));
setTimeout(() => {
  clearInterval(timer);
  setTimeout(finish, Number(drain));
}, Number(duration));
process.on('SIGTERM', finish);
process.on('SIGINT', finish);
