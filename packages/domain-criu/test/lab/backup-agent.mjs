// The backup host's process (run in the backup's network namespace): a
// receiver, and failovers on request. stdin lines: `point`, `failover <json>`.
// stdout lines: READY, POINT <n|none>, CHECKPOINT <n> <bytes>, REFUSED <n> <code>,
// FAILOVER_OK <json>, FAILOVER_ERR <code> <message>.
import { createInterface } from 'node:readline';
import { createCriuBackup, failover } from '../../dist/index.js';

const [dir, sock] = process.argv.slice(2);
const out = (l) => process.stdout.write(`${l}\n`);
const backup = await createCriuBackup({
  dir,
  listen: { path: sock },
  onCheckpoint: (p) => out(`CHECKPOINT ${p.checkpoint} ${p.bytes}`),
  onRefused: (n, e) => out(`REFUSED ${n} ${e.code}`),
});
out('READY');
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'point') out(`POINT ${backup.restorePoint()?.checkpoint ?? 'none'}`);
  else if (line.startsWith('failover ')) {
    const opts = JSON.parse(line.slice(9));
    try {
      const r = await failover({ restorePoint: dir, ...opts, onStep: (s) => out(`STEP ${s}`) });
      out(`FAILOVER_OK ${JSON.stringify(r)}`);
    } catch (e) {
      out(`FAILOVER_ERR ${e.code} ${String(e.message).replace(/\n/g, ' | ')}`);
    }
  } else if (line === 'close') break;
}
await backup.close();
out('CLOSED');
