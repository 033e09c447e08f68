// `pnpm bench` for @remus/nic-netbuf (needs root and a built dist).
//
// 1. This machine's kernel (no sch_plug): postsuspend and commit per NIC
//    through the shared tc batch channel, sending the equivalent qdisc change
//    message to a stand-in bfifo at the plug's place, against spawning one
//    `tc` per op in the same run. Target: median <= 100 us per op and at least
//    20x faster than spawning.
// 2. The kernel lab (real sch_plug, emulated CPU): the same with the real
//    plug BUFFER / RELEASE_ONE ops. Reported, no target.
//
// Writes ${REMUS_BENCH_OUT:-<repo>/bench-results}/nic-netbuf.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { measure } from './body.mjs';

const here = new URL('.', import.meta.url).pathname;
const outDir = process.env.REMUS_BENCH_OUT ?? join(here, '../../../bench-results');
const figures = [];
const fmt = (us) => `${us.toFixed(1)} us`;

function addFigures(where, r, target) {
  for (const op of ['postsuspend', 'commit']) {
    const base = { name: `spawn tc per op (${where})`, value: round(r.spawn.medianUs), unit: 'us' };
    figures.push({
      name: `${op} per NIC, median (${where}, ${r.qdisc})`,
      value: round(r[op].medianUs),
      unit: 'us',
      baseline: base,
      ratio: round(r[op].medianUs / r.spawn.medianUs, 4),
      ...(target ? { target: '<= 100 us and ratio <= 0.05 (>= 20x faster than spawning)' } : {}),
    });
    figures.push({
      name: `${op} per NIC, p99 (${where}, ${r.qdisc})`,
      value: round(r[op].p99Us),
      unit: 'us',
      baseline: { name: `spawn tc per op, p99 (${where})`, value: round(r.spawn.p99Us), unit: 'us' },
      ratio: round(r[op].p99Us / r.spawn.p99Us, 4),
    });
  }
  console.log(`${where} (kernel ${r.kernel}, ${r.qdisc}, ${r.nics} NICs, ${r.postsuspend.n} ops per op kind)`);
  for (const op of ['postsuspend', 'commit']) {
    console.log(
      `  ${op.padEnd(11)} median ${fmt(r[op].medianUs)}  p99 ${fmt(r[op].p99Us)}   spawn tc median ${fmt(r.spawn.medianUs)} p99 ${fmt(r.spawn.p99Us)}   ${(r.spawn.medianUs / r[op].medianUs).toFixed(1)}x faster`,
    );
  }
}

function round(v, digits = 1) {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

// 1. Host kernel.
const hostResult = await measure({ standIn: true, iterations: 1000, spawnIterations: 200 });
addFigures('host', hostResult, true);
const hostOk = hostResult.postsuspend.medianUs <= 100 && hostResult.commit.medianUs <= 100 &&
  hostResult.spawn.medianUs / hostResult.postsuspend.medianUs >= 20 && hostResult.spawn.medianUs / hostResult.commit.medianUs >= 20;
console.log(`  target (median <= 100 us, >= 20x faster than spawning): ${hostOk ? 'met' : 'NOT met'}`);

// 2. Kernel lab.
let labNote;
try {
  const { runInLab, assertLabReady } = await import('@remus/kernel-lab');
  await assertLabReady();
  const res = await runInLab({
    node: { file: join(here, 'body.mjs'), args: ['--iterations', '100', '--spawn-iterations', '15'] },
    timeoutMs: 300_000,
  });
  const line = res.output.split('\n').find((l) => l.startsWith('RESULT '));
  if (res.outcome !== 'pass' || !line) throw new Error(`lab run ${res.outcome} (exit ${res.exitCode}): ${res.output.slice(-1500)}`);
  addFigures('kernel lab, emulated CPU', JSON.parse(line.slice(7)), false);
} catch (e) {
  labNote = `kernel lab figures missing: ${e.message}`;
  console.error(labNote);
}

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'nic-netbuf.json'), `${JSON.stringify({ package: '@remus/nic-netbuf', figures, ...(labNote ? { note: labNote } : {}) }, null, 2)}\n`);
if (!hostOk) process.exitCode = 1;
