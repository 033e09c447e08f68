/**
 * The nemesis client: runs inside the client node's namespace, keeps one
 * connection to each host's service (reconnecting every 50 ms while a host
 * refuses or is cut off), sends a request every `periodMs` on each, and
 * prints every reply as a JSON line `{h, e, n, id, at}` (host, epoch, counter,
 * request id, CLOCK_MONOTONIC ms at receipt). A target given as
 * `NAME=HOST:PORT` names the host of replies that do not say it themselves
 * (a service that cannot know where it runs, e.g. one CRIU restored; their
 * epoch is then 0 and the test attributes it). Usage:
 *   node client.js PERIOD_MS [NAME=]HOST:PORT [[NAME=]HOST:PORT...]
 * A connection not established within $NEMESIS_CONNECT_MS (default 500) is
 * given up and tried again: raise it where the output gate holds a SYN-ACK
 * longer (checkpoints slower than that).
 */
import { connect, type Socket } from 'node:net';

const [periodArg, ...targets] = process.argv.slice(2);
const periodMs = Number(periodArg);
const connectMs = Number(process.env.NEMESIS_CONNECT_MS ?? 500);
const mono = (): number => Number(process.hrtime.bigint()) / 1e6;
let seq = 0;

function run(spec: string): void {
  const eq = spec.indexOf('=');
  const name = eq >= 0 ? spec.slice(0, eq) : undefined;
  const target = spec.slice(eq + 1);
  const i = target.lastIndexOf(':');
  const host = target.slice(0, i);
  const port = Number(target.slice(i + 1));
  let socket: Socket | undefined;
  const open = (): void => {
    const s = connect({ host, port });
    socket = s;
    s.setNoDelay(true);
    s.setEncoding('utf8');
    const timeout = setTimeout(() => s.destroy(), connectMs);
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
          const r = JSON.parse(line) as { id: string; n: number; epoch?: number; host?: string };
          process.stdout.write(`${JSON.stringify({ h: r.host ?? name, e: r.epoch ?? 0, n: r.n, id: r.id, at })}\n`);
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
