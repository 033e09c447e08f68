/**
 * The nemesis client: runs inside the client node's namespace, keeps one
 * connection to each host's service (reconnecting every 50 ms while a host
 * refuses or is cut off), sends a request every `periodMs` on each, and
 * prints every reply as a JSON line `{h, e, n, id, at}` (host, epoch, counter,
 * request id, CLOCK_MONOTONIC ms at receipt). Usage:
 *   node client.js PERIOD_MS HOST:PORT [HOST:PORT...]
 */
import { connect, type Socket } from 'node:net';

const [periodArg, ...targets] = process.argv.slice(2);
const periodMs = Number(periodArg);
const mono = (): number => Number(process.hrtime.bigint()) / 1e6;
let seq = 0;

function run(target: string): void {
  const i = target.lastIndexOf(':');
  const host = target.slice(0, i);
  const port = Number(target.slice(i + 1));
  let socket: Socket | undefined;
  const open = (): void => {
    const s = connect({ host, port });
    socket = s;
    s.setNoDelay(true);
    s.setEncoding('utf8');
    const timeout = setTimeout(() => s.destroy(), 500);
    let buf = '';
    s.on('connect', () => clearTimeout(timeout));
    s.on('data', (d: string) => {
      const at = mono();
      buf += d;
      let k: number;
      while ((k = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, k);
        buf = buf.slice(k + 1);
        try {
          const r = JSON.parse(line) as { id: string; n: number; epoch: number; host: string };
          process.stdout.write(`${JSON.stringify({ h: r.host, e: r.epoch, n: r.n, id: r.id, at })}\n`);
        } catch {
          process.stdout.write(`${JSON.stringify({ bad: line.slice(0, 200), at })}\n`);
        }
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timeout);
      socket = undefined;
      setTimeout(open, 50);
    });
  };
  open();
  setInterval(() => {
    if (socket && !socket.connecting && socket.writable) socket.write(`${++seq}\n`);
  }, periodMs);
}

for (const t of targets) run(t);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
