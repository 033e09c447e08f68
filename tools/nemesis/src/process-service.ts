/**
 * The service the process-workload scenario protects (`service.type:
 * "process"` of `remus agent`): a TCP counter speaking the nemesis client's
 * protocol (a request line in, `{"id","n","epoch","host"}` out). Its only
 * state is the file `$REMUS_STATE_FILE` (`{"counter": N}`), replaced
 * atomically (temporary file, rename) before each reply is written, so a
 * frozen process never leaves it half written. It starts from that file
 * (a promoted backup's agent writes the last acknowledged state there
 * first) and listens on all addresses at the port of `$REMUS_LISTEN`.
 *
 * usage (by the agent): node process-service.js
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';

const file = process.env.REMUS_STATE_FILE as string;
const host = process.env.REMUS_HOST ?? '?';
const epoch = Number(process.env.REMUS_EPOCH ?? 0);
const port = Number((process.env.REMUS_LISTEN ?? ':7800').split(':').pop());
let counter = 0;
try {
  counter = (JSON.parse(readFileSync(file, 'utf8')) as { counter: number }).counter;
} catch {
  // No state yet: a fresh pair.
}
const server = createServer((sock) => {
  sock.setNoDelay(true);
  sock.setEncoding('utf8');
  let buf = '';
  sock.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const id = buf.slice(0, i);
      buf = buf.slice(i + 1);
      counter++;
      writeFileSync(`${file}.tmp`, JSON.stringify({ counter }));
      renameSync(`${file}.tmp`, file);
      sock.write(`${JSON.stringify({ id, n: counter, epoch, host })}\n`);
    }
  });
  sock.on('error', () => undefined);
});
server.listen(port, '0.0.0.0');
process.on('SIGTERM', () => process.exit(0));
