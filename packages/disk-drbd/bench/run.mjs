#!/usr/bin/env node
// `pnpm bench` for @remus/disk-drbd: boots the kernel lab once and runs
// lab/bench.mjs there (a real DRBD 8.4 pair, emulated CPU), then prints the
// medians and p99 of postsuspend + preresume per disk, in-memory state source
// vs asking drbdsetup per checkpoint, and writes
// ${REMUS_BENCH_OUT}/disk-drbd.json. Needs root, `pnpm lab:setup` and a build.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInLab } from '@remus/kernel-lab';

const root = new URL('../../..', import.meta.url).pathname;
const outDir = process.env.REMUS_BENCH_OUT ?? join(root, 'bench-results');
const body = new URL('../lab/bench.mjs', import.meta.url).pathname;

const r = await runInLab({ node: { file: body }, timeoutMs: 300_000, bootTimeoutMs: 300_000 });
const line = r.output.split('\n').find((l) => l.startsWith('RESULT '));
if (r.outcome !== 'pass' || !line) {
  console.error(`lab bench ${r.outcome} (exit ${r.exitCode}):\n${r.output}\n--- console\n${r.console}`);
  process.exit(1);
}
const { inMemory, baseline } = JSON.parse(line.slice('RESULT '.length));
const fmt = (x) => x.toFixed(3);
console.log('postsuspend + preresume per disk, idle DRBD 8.4 pair, kernel lab (emulated CPU):');
console.log(`  in-memory state source (/proc/drbd via one handle): median ${fmt(inMemory.median)} ms, p99 ${fmt(inMemory.p99)} ms (n=${inMemory.n})`);
console.log(`  asking drbdsetup per checkpoint (baseline):         median ${fmt(baseline.median)} ms, p99 ${fmt(baseline.p99)} ms (n=${baseline.n})`);
console.log(`  ratio in-memory / drbdsetup: median ${(inMemory.median / baseline.median).toFixed(4)}, p99 ${(inMemory.p99 / baseline.p99).toFixed(4)}`);

const base = { name: 'postsuspend+preresume asking drbdsetup status per state read', unit: 'ms' };
mkdirSync(outDir, { recursive: true });
writeFileSync(
  join(outDir, 'disk-drbd.json'),
  `${JSON.stringify(
    {
      package: '@remus/disk-drbd',
      figures: [
        {
          name: 'postsuspend+preresume per disk, in-memory state source, median (kernel lab, emulated CPU)',
          value: inMemory.median,
          unit: 'ms',
          baseline: { ...base, name: `${base.name}, median`, value: baseline.median },
          ratio: inMemory.median / baseline.median,
        },
        {
          name: 'postsuspend+preresume per disk, in-memory state source, p99 (kernel lab, emulated CPU)',
          value: inMemory.p99,
          unit: 'ms',
          baseline: { ...base, name: `${base.name}, p99`, value: baseline.p99 },
          ratio: inMemory.p99 / baseline.p99,
        },
      ],
    },
    null,
    2,
  )}\n`,
);
