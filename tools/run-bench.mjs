#!/usr/bin/env node
// `pnpm bench`: runs each workspace package's `bench` script one after the
// other (benchmarks must not compete for the 2 cores), each writing
// bench-results/<package>.json, then prints every figure with its ratio.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const outDir = join(root, 'bench-results');
mkdirSync(outDir, { recursive: true });
const only = process.argv.slice(2);
const dirs = ['packages', 'tools']
  .flatMap((top) => (existsSync(join(root, top)) ? readdirSync(join(root, top)).map((d) => join(root, top, d)) : []))
  .filter((d) => existsSync(join(d, 'package.json')));
let failures = 0;
for (const dir of dirs) {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  if (!pkg.scripts?.bench) continue;
  if (only.length && !only.some((o) => pkg.name.includes(o))) continue;
  console.log(`\n=== bench ${pkg.name}`);
  const r = spawnSync('pnpm', ['run', 'bench'], {
    cwd: dir,
    stdio: 'inherit',
    env: { ...process.env, REMUS_BENCH_OUT: outDir, TURBO_TELEMETRY_DISABLED: '1' },
  });
  if (r.status !== 0) {
    console.error(`bench failed: ${pkg.name}`);
    failures++;
  }
}
console.log('\n=== summary (median unless stated; ratio = figure / baseline in the same run)');
for (const f of readdirSync(outDir).filter((f) => f.endsWith('.json'))) {
  const r = JSON.parse(readFileSync(join(outDir, f), 'utf8'));
  for (const x of r.figures ?? []) {
    const base = x.baseline ? `  vs ${x.baseline.name} ${fmt(x.baseline.value)} ${x.baseline.unit ?? x.unit}  ratio ${fmt(x.ratio)}` : '';
    console.log(`${r.package}  ${x.name}: ${fmt(x.value)} ${x.unit}${base}${x.target ? `  target ${x.target}` : ''}`);
  }
}
process.exit(failures ? 1 : 0);

function fmt(v) {
  return typeof v === 'number' ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) : String(v);
}
