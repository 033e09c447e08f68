// `pnpm bench` for @remus/domain-process (issue 14):
// 1. A 256 MiB checkpoint through BackupLink -> BackupServer over TCP
//    loopback: time per checkpoint (send to ack) and peak RSS of the process,
//    against a raw socket copy of 256 MiB into one preallocated buffer with a
//    one-byte ack, measured in the same run. Each side runs in fresh processes
//    (bench/one.mjs), alternating, so peak RSS is each one's own.
// 2. The frame decoder alone on a 256 MiB frame in 64 KiB chunks, against one
//    memcpy of 256 MiB (linear reassembly: one copy per byte).
// 3. The frame parser fuzz properties, longer than in CI, with a fresh seed.
// Writes bench-results/domain-process.json. Env: REMUS_BENCH_BACKUP_MIB (256),
// REMUS_BENCH_REPEATS (3 processes per side, 3 checkpoints each),
// REMUS_FUZZ_RUNS (20000), REMUS_FUZZ_SEED (random, printed).
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FrameDecoder, FrameType, encodeHeader } from '../dist/index.js';

const here = new URL('.', import.meta.url).pathname;
const pkgDir = join(here, '..');
const mib = Number(process.env.REMUS_BENCH_BACKUP_MIB ?? 256);
const repeats = Number(process.env.REMUS_BENCH_REPEATS ?? 3);
const rounds = 3;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const MB = 1024 * 1024;
const figures = [];

// 1. End to end.
const runs = { raw: [], backup: [] };
for (let i = 0; i < repeats; i++) {
  for (const mode of i % 2 === 0 ? ['raw', 'backup'] : ['backup', 'raw']) {
    const r = spawnSync(process.execPath, [join(here, 'one.mjs'), mode, String(mib), String(rounds)], { encoding: 'utf8', cwd: pkgDir, timeout: 600_000 });
    if (r.status !== 0) {
      console.error(r.stdout, r.stderr);
      throw new Error(`bench scenario ${mode} failed`);
    }
    runs[mode].push(JSON.parse(r.stdout.trim().split('\n').at(-1)));
  }
}
const timeOf = (mode) => median(runs[mode].flatMap((x) => x.times));
const rssOf = (mode) => median(runs[mode].map((x) => x.peakRss));
const growthOf = (mode) => median(runs[mode].map((x) => x.peakRss - x.rssStart));
const t = { backup: timeOf('backup'), raw: timeOf('raw') };
const rss = { backup: rssOf('backup'), raw: rssOf('raw') };
const growth = { backup: growthOf('backup'), raw: growthOf('raw') };
console.log(`${mib} MiB checkpoint over TCP loopback, ${repeats} processes x ${rounds} checkpoints per side:`);
console.log(`  backup protocol: ${t.backup.toFixed(0)} ms per checkpoint (median), peak RSS ${(rss.backup / MB).toFixed(0)} MiB (+${(growth.backup / MB).toFixed(0)} MiB over start)`);
console.log(`  raw socket copy: ${t.raw.toFixed(0)} ms per checkpoint (median), peak RSS ${(rss.raw / MB).toFixed(0)} MiB (+${(growth.raw / MB).toFixed(0)} MiB over start)`);
console.log(`  ratio time ${(t.backup / t.raw).toFixed(2)}, peak RSS ${(rss.backup / rss.raw).toFixed(2)}`);
figures.push({
  name: `${mib} MiB checkpoint, send to ack (TCP loopback, link and backup in one process)`,
  value: t.backup,
  unit: 'ms',
  baseline: { name: `raw socket copy of ${mib} MiB into a preallocated buffer, 1-byte ack`, value: t.raw, unit: 'ms' },
  ratio: t.backup / t.raw,
});
figures.push({
  name: `${mib} MiB checkpoints, peak RSS of the process (sender's state + stored state + the one being received)`,
  value: rss.backup / MB,
  unit: 'MiB',
  baseline: { name: 'raw socket copy, same retention', value: rss.raw / MB, unit: 'MiB' },
  ratio: rss.backup / rss.raw,
});

// 2. Reassembly alone: linear in the frame size.
const CHUNK = 64 * 1024;
const payloadBytes = mib * MB;
const chunk = Buffer.alloc(CHUNK, 3);
const header = encodeHeader(FrameType.STATE, 0, 1, payloadBytes);
const dec = [];
const copy = [];
for (let r = 0; r < 5; r++) {
  let t0 = performance.now();
  const d = new FrameDecoder({ maxFrameBytes: payloadBytes });
  let got = 0;
  d.push(header, () => undefined);
  for (let at = 0; at < payloadBytes; at += CHUNK) d.push(chunk, (f) => (got = f.length));
  if (got !== payloadBytes) throw new Error('decoder lost the frame');
  dec.push(performance.now() - t0);
  t0 = performance.now();
  const dst = Buffer.allocUnsafe(payloadBytes);
  for (let at = 0; at < payloadBytes; at += CHUNK) chunk.copy(dst, at);
  copy.push(performance.now() - t0);
}
console.log(`decoder, ${mib} MiB frame in 64 KiB chunks: ${median(dec).toFixed(0)} ms; memcpy of ${mib} MiB in 64 KiB pieces: ${median(copy).toFixed(0)} ms; ratio ${(median(dec) / median(copy)).toFixed(2)}`);
figures.push({
  name: `frame decoder, ${mib} MiB frame in 64 KiB chunks`,
  value: median(dec),
  unit: 'ms',
  baseline: { name: `copying ${mib} MiB in 64 KiB pieces into one buffer`, value: median(copy), unit: 'ms' },
  ratio: median(dec) / median(copy),
});

// 3. The fuzz properties, longer.
const fuzzRuns = Number(process.env.REMUS_FUZZ_RUNS ?? 20_000);
const seed = Number(process.env.REMUS_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const t0 = performance.now();
const f = spawnSync('pnpm', ['exec', 'vitest', 'run', 'test/frame.fuzz.test.ts'], {
  cwd: pkgDir,
  encoding: 'utf8',
  env: { ...process.env, REMUS_FUZZ_RUNS: String(fuzzRuns), REMUS_FUZZ_SEED: String(seed) },
  timeout: 1_200_000,
});
const fuzzMs = performance.now() - t0;
console.log(`fuzz: ${fuzzRuns} runs per parser property (5 properties, the server model at 0.3x), seed ${seed}: ${f.status === 0 ? 'passed' : 'FAILED'} in ${(fuzzMs / 1000).toFixed(1)} s`);
figures.push({ name: `frame parser fuzzing, runs per property (seed ${seed})`, value: fuzzRuns, unit: 'runs', passed: f.status === 0, seconds: fuzzMs / 1000 });

const out = process.env.REMUS_BENCH_OUT ?? join(pkgDir, '..', '..', 'bench-results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'domain-process.json'), JSON.stringify({ package: '@remus/domain-process', node: process.version, figures, runs }, null, 2));
if (f.status !== 0) {
  console.error(f.stdout.slice(-4000), f.stderr.slice(-2000));
  console.error(`fuzzing failed; reproduce with REMUS_FUZZ_SEED=${seed} REMUS_FUZZ_RUNS=${fuzzRuns} pnpm exec vitest run test/frame.fuzz.test.ts`);
  process.exit(1);
}
