#!/usr/bin/env node
// Kernel lab benchmark: boot to the agent's READY, the round trip of a trivial
// body in a shared boot, and Node's start in the guest, each against the same
// thing on the host measured in this run. Writes ${REMUS_BENCH_OUT}/kernel-lab.json.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, startLab } from '../dist/index.js';

const BOOTS = 3;
const TRIVIAL_RUNS = 15;
const NODE_RUNS = 3;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p99 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.99) - 1)];
function hostMs(file, args, n) {
  const xs = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    spawnSync(file, args, { stdio: 'ignore' });
    xs.push(performance.now() - t);
  }
  return xs;
}

const boots = [];
const trivial = [];
const nodeStarts = [];
for (let b = 0; b < BOOTS; b++) {
  const t = performance.now();
  const lab = await startLab();
  boots.push(performance.now() - t);
  try {
    if (b === 0) {
      for (let i = 0; i < TRIVIAL_RUNS; i++) {
        const r = await lab.run({ script: 'true' });
        if (r.outcome !== 'pass') throw new Error(`trivial run: ${r.outcome}`);
        trivial.push(r.durationMs);
      }
      await lab.run({ script: 'node -e 0' }); // first start reads node over 9p
      for (let i = 0; i < NODE_RUNS; i++) {
        const r = await lab.run({ script: 'node -e 0' });
        if (r.outcome !== 'pass') throw new Error(`node run: ${r.outcome}`);
        nodeStarts.push(r.durationMs);
      }
    }
  } finally {
    await lab.close();
  }
}
const hostBash = hostMs('bash', ['-c', 'true'], TRIVIAL_RUNS);
const hostNode = hostMs(process.execPath, ['-e', '0'], NODE_RUNS);
const hostNodeMs = median(hostNode);

const figures = [
  { name: 'boot to first command (median of 3)', value: median(boots), unit: 'ms', baseline: { name: 'host node start', value: hostNodeMs, unit: 'ms' }, target: '< 20000 ms idle' },
  { name: 'trivial body round trip in a shared boot', value: median(trivial), unit: 'ms', baseline: { name: 'host spawn bash -c true', value: median(hostBash), unit: 'ms' } },
  { name: 'trivial body round trip p99', value: p99(trivial), unit: 'ms', baseline: { name: 'host spawn bash -c true p99', value: p99(hostBash), unit: 'ms' } },
  { name: 'node -e 0 in the guest (warm)', value: median(nodeStarts), unit: 'ms', baseline: { name: 'node -e 0 on the host', value: hostNodeMs, unit: 'ms' }, target: '~20x host' },
].map((f) => ({ ...f, ratio: f.value / f.baseline.value }));

for (const f of figures) console.log(`${f.name}: ${f.value.toFixed(0)} ${f.unit} (baseline ${f.baseline.name} ${f.baseline.value.toFixed(1)} ms, ratio ${f.ratio.toFixed(1)})`);
const out = process.env.REMUS_BENCH_OUT ?? join(repoRoot(), 'bench-results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'kernel-lab.json'), JSON.stringify({ package: '@remus/kernel-lab', figures }, null, 2) + '\n');
