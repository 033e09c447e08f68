// pnpm bench (in packages/qmp): round trip of a QMP command (`query-status`)
// through one persistent client, against a fresh connection per command
// (connect, greeting, qmp_capabilities, command, close) in the same run, on
// a real QEMU (-machine none, no guest). Writes ${REMUS_BENCH_OUT}/qmp.json.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectQmp } from '../dist/index.js';

const PERSISTENT = Number(process.env.QMP_BENCH_N ?? 2000);
const FRESH = Number(process.env.QMP_BENCH_FRESH_N ?? 300);
const outDir = process.env.REMUS_BENCH_OUT ?? new URL('../../../bench-results', import.meta.url).pathname;

const dir = mkdtempSync(join(tmpdir(), `remus-qmp-bench-${process.pid}-`));
const sock = join(dir, 'qmp.sock');
const qemu = spawn(
  'qemu-system-x86_64',
  ['-S', '-nodefaults', '-display', 'none', '-machine', 'none', '-accel', 'tcg', '-m', '64', '-qmp', `unix:${sock},server=on,wait=off`],
  { stdio: 'ignore' },
);
const stop = () => {
  if (qemu.exitCode === null) qemu.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', stop);

try {
  for (let i = 0; i < 200 && !existsSync(sock); i++) await sleep(25);
  const quantile = (xs, q) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(q * s.length))];
  };

  const client = await connectQmp(sock);
  for (let i = 0; i < 100; i++) await client.execute('query-status'); // warm up
  const persistent = [];
  for (let i = 0; i < PERSISTENT; i++) {
    const t = performance.now();
    await client.execute('query-status');
    persistent.push(performance.now() - t);
  }
  await client.close();

  const fresh = [];
  for (let i = 0; i < FRESH; i++) {
    const t = performance.now();
    const c = await connectQmp(sock);
    await c.execute('query-status');
    await c.close();
    fresh.push(performance.now() - t);
  }

  const f = (xs) => ({ median: quantile(xs, 0.5), p99: quantile(xs, 0.99) });
  const p = f(persistent);
  const n = f(fresh);
  const figures = [
    {
      name: 'query-status round trip, persistent client (median)',
      value: p.median,
      unit: 'ms',
      baseline: { name: 'fresh connection per command (median)', value: n.median, unit: 'ms' },
      ratio: p.median / n.median,
    },
    {
      name: 'query-status round trip, persistent client (p99)',
      value: p.p99,
      unit: 'ms',
      baseline: { name: 'fresh connection per command (p99)', value: n.p99, unit: 'ms' },
      ratio: p.p99 / n.p99,
    },
  ];
  console.log(`persistent client: ${PERSISTENT} x query-status  median ${p.median.toFixed(3)} ms  p99 ${p.p99.toFixed(3)} ms`);
  console.log(`fresh connection:  ${FRESH} x connect+negotiate+query-status+close  median ${n.median.toFixed(3)} ms  p99 ${n.p99.toFixed(3)} ms`);
  console.log(`ratio (persistent / fresh): median ${(p.median / n.median).toFixed(3)}  p99 ${(p.p99 / n.p99).toFixed(3)}`);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'qmp.json'), JSON.stringify({ package: '@remus/qmp', figures }, null, 2) + '\n');
} finally {
  stop();
}
