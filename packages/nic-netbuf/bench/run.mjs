// `pnpm bench` for @remus/nic-netbuf (needs root and a built dist).
//
// 1. This machine's kernel (no sch_plug): postsuspend and commit per NIC,
//    sending the equivalent qdisc change message to a stand-in bfifo at the
//    plug's place, against spawning one `tc` per op in the same run, through
//    both channels:
//    a. NICs in the process's own namespace: the in-process netlink socket
//       (body.mjs runs under `ip netns exec` in a fresh namespace, so its own
//       namespace is a throwaway one). Target: median <= 100 us per op and at
//       least 20x faster than spawning.
//    b. NICs in another namespace: the `tc -n NS -force -batch -` channel.
//       Reported against the same target, informative (a process wakeup).
// 2. The kernel lab (real sch_plug, emulated CPU): the same with the real
//    plug BUFFER / RELEASE_ONE ops, both channels. Reported, no target.
//
// Writes ${REMUS_BENCH_OUT:-<repo>/bench-results}/nic-netbuf.json.
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { measure } from './body.mjs';

const here = new URL('.', import.meta.url).pathname;
const outDir = process.env.REMUS_BENCH_OUT ?? join(here, '../../../bench-results');
const figures = [];
const fmt = (us) => `${us.toFixed(1)} us`;

function addFigures(where, r, target) {
  for (const op of ['postsuspend', 'commit']) {
    const base = { name: `spawn tc per op (${where}, ${r.channel})`, value: round(r.spawn.medianUs), unit: 'us' };
    figures.push({
      name: `${op} per NIC, median (${where}, ${r.qdisc}, ${r.channel})`,
      value: round(r[op].medianUs),
      unit: 'us',
      baseline: base,
      ratio: round(r[op].medianUs / r.spawn.medianUs, 4),
      ...(target ? { target: '<= 100 us and ratio <= 0.05 (>= 20x faster than spawning)' } : {}),
    });
    figures.push({
      name: `${op} per NIC, p99 (${where}, ${r.qdisc}, ${r.channel})`,
      value: round(r[op].p99Us),
      unit: 'us',
      baseline: { name: `spawn tc per op, p99 (${where}, ${r.channel})`, value: round(r.spawn.p99Us), unit: 'us' },
      ratio: round(r[op].p99Us / r.spawn.p99Us, 4),
    });
  }
  console.log(`${where}: ${r.channel} (kernel ${r.kernel}, ${r.qdisc}, ${r.nics} NICs, ${r.postsuspend.n} ops per op kind)`);
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

const meets = (r) => r.postsuspend.medianUs <= 100 && r.commit.medianUs <= 100 &&
  r.spawn.medianUs / r.postsuspend.medianUs >= 20 && r.spawn.medianUs / r.commit.medianUs >= 20;

// 1a. Host kernel, own namespace: body.mjs in a throwaway namespace of its own.
const ns = `rnb-bench-own-${process.pid}`;
const sh = promisify(execFile);
await sh('ip', ['netns', 'add', ns]);
let ownResult;
try {
  const { stdout } = await sh('ip', ['netns', 'exec', ns, process.execPath, join(here, 'body.mjs'), '--stand-in', '--mode', 'own', '--iterations', '1000', '--spawn-iterations', '200'], { maxBuffer: 1 << 20 });
  ownResult = JSON.parse(stdout.split('\n').find((l) => l.startsWith('RESULT ')).slice(7));
} finally {
  await sh('ip', ['netns', 'del', ns]).catch(() => undefined);
}
addFigures('host', ownResult, true);
const hostOk = meets(ownResult);
console.log(`  target (median <= 100 us, >= 20x faster than spawning): ${hostOk ? 'met' : 'NOT met'}`);

// 1b. Host kernel, another namespace: the tc batch channel.
const otherResult = await measure({ standIn: true, iterations: 1000, spawnIterations: 200 });
addFigures('host', otherResult, false);
console.log(`  (same target, informative for this channel: ${meets(otherResult) ? 'met' : 'not met'})`);

// 2. Kernel lab.
let labNote;
try {
  const { runInLab, assertLabReady } = await import('@remus/kernel-lab');
  await assertLabReady();
  const res = await runInLab({
    node: { file: join(here, 'body.mjs'), args: ['--mode', 'both', '--iterations', '100', '--spawn-iterations', '15'] },
    timeoutMs: 300_000,
  });
  const lines = res.output.split('\n').filter((l) => l.startsWith('RESULT '));
  if (res.outcome !== 'pass' || lines.length !== 2) throw new Error(`lab run ${res.outcome} (exit ${res.exitCode}): ${res.output.slice(-1500)}`);
  for (const line of lines) addFigures('kernel lab, emulated CPU', JSON.parse(line.slice(7)), false);
} catch (e) {
  labNote = `kernel lab figures missing: ${e.message}`;
  console.error(labNote);
}

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'nic-netbuf.json'), `${JSON.stringify({ package: '@remus/nic-netbuf', figures, ...(labNote ? { note: labNote } : {}) }, null, 2)}\n`);
if (!hostOk) process.exitCode = 1;
