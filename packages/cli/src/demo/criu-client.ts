/**
 * The client of the demo's CRIU failover: ONE TCP connection to the counter
 * service, a request `r<i>` every PERIOD ms (pipelined, no wait for the
 * reply), retrying the connect while the service does not listen yet
 * (at most 30 s). Prints `CONNECTED` once connected, then one line per reply:
 * `REPLY <wall ms received> <counter> r<i> <wall ms the service sent it>`.
 * `EOF` or `ERROR <message>` when the connection ends on its own. On a `stop`
 * line on stdin (or SIGTERM) it closes and prints `CLIENT_DONE <sent> <replies>`.
 *
 * usage: node criu-client.js HOST PORT PERIOD_MS
 */
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

const [host = '127.0.0.1', port = '7001', period = '20'] = process.argv.slice(2);
const out = (line: string): boolean => process.stdout.write(`${line}\n`);
let sent = 0;
let replies = 0;
let stopping = false;
let timer: NodeJS.Timeout | undefined;
let socket: Socket | undefined;

/** Connects, retrying while the service does not listen yet (at most 30 s). */
function open(attempt: number): void {
  const s = connect({ host, port: Number(port), noDelay: true });
  let connected = false;
  s.once('connect', () => {
    connected = true;
    socket = s;
    out('CONNECTED');
    timer = setInterval(() => {
      sent++;
      s.write(`r${sent}\n`);
    }, Number(period));
  });
  let buffered = '';
  s.setEncoding('utf8');
  s.on('data', (chunk: string) => {
    buffered += chunk;
    for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      replies++;
      out(`REPLY ${Date.now()} ${line}`);
    }
  });
  s.on('end', () => {
    if (!stopping) out('EOF');
  });
  s.on('error', (e) => {
    if (connected) {
      if (!stopping) out(`ERROR ${e.message}`);
    } else if (attempt < 300 && !stopping) setTimeout(() => open(attempt + 1), 100);
    else out(`ERROR ${e.message}`);
  });
}
open(0);
const finish = (): void => {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  socket?.destroy();
  process.stdout.write(`CLIENT_DONE ${sent} ${replies}\n`, () => process.exit(0));
};
createInterface({ input: process.stdin })
  .on('line', (l) => {
    if (l.trim() === 'stop') finish();
  })
  .on('close', finish);
process.on('SIGTERM', finish);
process.on('SIGINT', finish);
