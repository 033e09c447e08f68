// `pnpm bench` for @remus/nic-netbuf (needs root and a built dist).
//
// 1. This machine's kernel (no sch_plug): postsuspend and commit per NIC,
//    sending the equivalent qdisc change message to a stand-in bfifo at the
//    plug's place, in one run per namespace mode: the native synchronous
//    channel, the event-driven channel it replaces, the same change by a
//    libnl-from-C peer (Xen's netbuf call, peer/libnl-peer.c) on the same
//    IFB, and one spawned `tc` per op.
//    a. NICs in the process's own namespace (body.mjs runs under `ip netns
//       exec` in a fresh namespace). Target (issue 18): native median <= 3x
//       the peer, p99 <= 100 us.
//    b. NICs in another namespace. Target: native median <= 5x the peer.
// 2. The kernel lab (real sch_plug, emulated CPU): the same with the real
//    plug BUFFER / RELEASE_ONE ops. Reported, no target.
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

/**
 * Figures of one mode: the native channel (with the libnl peer and the spawn
 * baseline beside it) and the event-driven channel it replaces, same run.
 * `peerFactor`: the target ratio to the peer (3 own namespace, 5 other).
 */
function addFigures(where, r, peerFactor) {
  const peerOk = r.peer && !r.peer.error;
  for (const op of ['postsuspend', 'commit']) {
    for (const [label, m] of [[`native`, r.native[op]], [`event-driven (${r.eventChannel})`, r.event[op]]]) {
      figures.push({
        name: `${op} per NIC, median (${where}, ${r.qdisc}, ${label})`,
        value: round(m.medianUs),
        unit: 'us',
        p99: round(m.p99Us),
        ...(peerOk
          ? { baseline: { name: `libnl from C, same change, same IFB (${where})`, value: round(r.peer.medianUs), unit: 'us', p99: round(r.peer.p99Us) }, ratio: round(m.medianUs / r.peer.medianUs, 2) }
          : {}),
        ...(label === 'native' && peerFactor ? { target: `<= ${peerFactor}x the libnl peer${peerFactor === 3 ? ', p99 <= 100 us' : ''}` } : {}),
      });
    }
  }
  if (r.spawn) figures.push({ name: `spawn tc per op, median (${where})`, value: round(r.spawn.medianUs), unit: 'us', p99: round(r.spawn.p99Us) });
  console.log(`${where}: kernel ${r.kernel}, ${r.qdisc}, ${r.nics} NICs, ${r.native.postsuspend.n} ops per op kind`);
  console.log(`  libnl peer (C)      median ${peerOk ? fmt(r.peer.medianUs) : 'n/a'}  p99 ${peerOk ? fmt(r.peer.p99Us) : `n/a (${r.peer?.error ?? 'not run'})`}`);
  for (const op of ['postsuspend', 'commit']) {
    for (const [label, m] of [['native', r.native[op]], ['event', r.event[op]]]) {
      console.log(`  ${op.padEnd(11)} ${label.padEnd(6)} median ${fmt(m.medianUs)}  p99 ${fmt(m.p99Us)}${peerOk ? `  ${(m.medianUs / r.peer.medianUs).toFixed(2)}x the peer` : ''}`);
    }
  }
  if (r.spawn) console.log(`  spawn tc per op     median ${fmt(r.spawn.medianUs)}  p99 ${fmt(r.spawn.p99Us)}`);
}

/** The issue-18 target of a mode: native median <= factor x the peer (and p99 <= 100 us in the own namespace). */
function meetsPeer(r, factor, p99Us) {
  if (!r.peer || r.peer.error) return false;
  return ['postsuspend', 'commit'].every((op) => r.native[op].medianUs <= factor * r.peer.medianUs && (p99Us === undefined || r.native[op].p99Us <= p99Us));
}

function round(v, digits = 1) {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

// 1a. Host kernel, own namespace: body.mjs in a throwaway namespace of its own.
const ns = `rnb-bench-own-${process.pid}`;
const sh = promisify(execFile);
await sh('ip', ['netns', 'add', ns]);
let ownResult;
try {
  const { stdout } = await sh('ip', ['netns', 'exec', ns, process.execPath, join(here, 'body.mjs'), '--stand-in', '--mode', 'own', '--iterations', '2000', '--spawn-iterations', '200'], { maxBuffer: 1 << 20 });
  ownResult = JSON.parse(stdout.split('\n').find((l) => l.startsWith('RESULT ')).slice(7));
} finally {
  await sh('ip', ['netns', 'del', ns]).catch(() => undefined);
}
addFigures('host, own namespace', ownResult, 3);
const ownOk = meetsPeer(ownResult, 3, 100);
console.log(`  target (native median <= 3x the libnl peer, p99 <= 100 us): ${ownOk ? 'met' : 'NOT met'}`);

// 1b. Host kernel, another namespace.
const otherResult = await measure({ standIn: true, iterations: 2000, spawnIterations: 200 });
addFigures('host, other namespace', otherResult, 5);
const otherOk = meetsPeer(otherResult, 5);
console.log(`  target (native median <= 5x the libnl peer): ${otherOk ? 'met' : 'NOT met'}`);
const hostOk = ownOk && otherOk;

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
  lines.forEach((line, i) => addFigures(`kernel lab, emulated CPU, ${i === 0 ? 'own' : 'other'} namespace`, JSON.parse(line.slice(7)), 0));
} catch (e) {
  labNote = `kernel lab figures missing: ${e.message}`;
  console.error(labNote);
}

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'nic-netbuf.json'), `${JSON.stringify({ package: '@remus/nic-netbuf', figures, ...(labNote ? { note: labNote } : {}) }, null, 2)}\n`);
if (!hostOk) process.exitCode = 1;
