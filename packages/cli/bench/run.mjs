#!/usr/bin/env node
// pnpm bench for @remus/cli: the checkpoint loop as `remus run` drives it.
//
// 1. Highest sustained checkpoint rate: runCheckpointLoop with a no-op domain
//    and 8 no-op devices, interval 0, 3000 checkpoints. Baseline: the same
//    calls (4 domain steps, 3 x Promise.all over 8 no-op device ops) in a bare
//    loop. (A count, not a timer, bounds it: with interval 0 and synchronous
//    steps the loop never yields to the event loop, so no timer could fire.)
// 2. At 25 ms intervals (Remus's 40 per second, fixed-rate schedule): the
//    achieved rate, the pause, and the device layer's share of each pause
//    ((postsuspend + preresume) / pause), median and p99.
// 3. The same at 25 ms with the real process domain (a `sleep` in a cgroup v1
//    freezer, immediate ack): how long freezing and thawing one process takes.
//    Needs root.
//
// Writes ${REMUS_BENCH_OUT:-<repo>/bench-results}/cli.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCheckpointDevices, runCheckpointLoop } from '@remus/core';
import { processDomain } from '@remus/domain-process';

const root = new URL('../../..', import.meta.url).pathname;
const outDir = process.env.REMUS_BENCH_OUT ?? join(root, 'bench-results');
const DEVICES = 8;

const noopDomain = { name: 'noop', suspend() {}, save() {}, resume() {}, waitAck() {} };
const noopSubkind = {
  name: 'noop-nic',
  kind: 'nic',
  setup() {},
  teardown() {},
  postsuspend() {},
  preresume() {},
  commit() {},
};
const devices = () => Array.from({ length: DEVICES }, (_, i) => ({ id: `nic${i}`, kind: 'nic' }));

function pct(values, q) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

// With interval 0 and synchronous steps the loop never yields to the event
// loop, so a timer could not stop it: a checkpoint count bounds it instead.
async function loop({ intervalMs, durationMs, maxCheckpoints, schedule = 'after-commit', domain = noopDomain }) {
  const layer = createCheckpointDevices({ ops: [noopSubkind], devices: devices() });
  await layer.setup();
  const stop = durationMs === undefined ? undefined : AbortSignal.timeout(durationMs);
  const figures = [];
  const r = await runCheckpointLoop({ devices: layer, domain, intervalMs, schedule, stop, maxCheckpoints, onCheckpoint: (f) => figures.push(f) });
  return { rate: r.checkpoints / (r.durationMs / 1000), figures };
}

async function bareLoop(count) {
  const ops = Array.from({ length: DEVICES }, () => noopSubkind);
  let n = 0;
  const t0 = performance.now();
  while (n < count) {
    await noopDomain.suspend();
    await Promise.all(ops.map((o) => o.postsuspend()));
    await noopDomain.save();
    await Promise.all(ops.map((o) => o.preresume()));
    await noopDomain.resume();
    await noopDomain.waitAck();
    await Promise.all(ops.map((o) => o.commit()));
    n++;
  }
  return n / ((performance.now() - t0) / 1000);
}

function pauseFigures(figures) {
  const pauses = figures.map((f) => f.pauseMs);
  const share = figures.map((f) => (f.steps.postsuspend + f.steps.preresume) / f.pauseMs);
  const layer = figures.map((f) => f.steps.postsuspend + f.steps.preresume + f.steps.commit);
  return { pauses, share, layer };
}

const figures = [];
// Warm up the JIT.
await loop({ intervalMs: 0, maxCheckpoints: 500 });
await bareLoop(2000);

const COUNT = 3000;
const bare = await bareLoop(COUNT);
const max = await loop({ intervalMs: 0, maxCheckpoints: COUNT });
console.log(`max sustained rate, no-op domain, ${DEVICES} devices: ${max.rate.toFixed(0)}/s (bare loop ${bare.toFixed(0)}/s, ratio ${(max.rate / bare).toFixed(3)})`);
figures.push({
  name: `max sustained checkpoint rate (no-op domain, ${DEVICES} no-op devices)`,
  value: max.rate,
  unit: 'checkpoints/s',
  baseline: { name: 'bare loop of the same calls', value: bare, unit: 'checkpoints/s' },
  ratio: max.rate / bare,
  target: '>= 40/s',
});

const at25 = await loop({ intervalMs: 25, durationMs: 3000, schedule: 'fixed-rate' });
const p = pauseFigures(at25.figures.slice(5));
console.log(
  `at 25 ms fixed-rate: ${at25.rate.toFixed(1)}/s; pause p50 ${pct(p.pauses, 0.5).toFixed(4)} ms p99 ${pct(p.pauses, 0.99).toFixed(4)} ms; device layer share of pause p50 ${(100 * pct(p.share, 0.5)).toFixed(1)}% p99 ${(100 * pct(p.share, 0.99)).toFixed(1)}%`,
);
figures.push({ name: 'checkpoint rate at 25 ms intervals (fixed-rate)', value: at25.rate, unit: 'checkpoints/s', baseline: { name: 'Remus target', value: 40, unit: 'checkpoints/s' }, ratio: at25.rate / 40, target: '40/s' });
figures.push({ name: 'pause p50 at 25 ms (no-op domain, 8 devices)', value: pct(p.pauses, 0.5), unit: 'ms' });
figures.push({ name: 'pause p99 at 25 ms (no-op domain, 8 devices)', value: pct(p.pauses, 0.99), unit: 'ms' });
figures.push({ name: 'device layer share of each pause, p50 (postsuspend+preresume / pause)', value: pct(p.share, 0.5), unit: 'fraction' });
figures.push({ name: 'device layer share of each pause, p99', value: pct(p.share, 0.99), unit: 'fraction' });
figures.push({ name: 'device layer time per checkpoint p50 (3 phases x 8 devices)', value: pct(p.layer, 0.5), unit: 'ms' });

if (process.getuid?.() === 0) {
  const domain = processDomain({ command: ['sleep', '60'], stdio: 'ignore', ack: { type: 'immediate' } });
  await domain.start();
  try {
    const real = await loop({ intervalMs: 25, durationMs: 3000, schedule: 'fixed-rate', domain });
    const q = pauseFigures(real.figures.slice(5));
    const freeze = real.figures.slice(5).map((f) => f.steps.suspend);
    console.log(
      `process domain (cgroup v${domain.cgroupVersion} freezer) at 25 ms: ${real.rate.toFixed(1)}/s; pause p50 ${pct(q.pauses, 0.5).toFixed(3)} ms p99 ${pct(q.pauses, 0.99).toFixed(3)} ms; freeze p50 ${pct(freeze, 0.5).toFixed(3)} ms; device layer share p50 ${(100 * pct(q.share, 0.5)).toFixed(1)}%`,
    );
    figures.push({
      name: `pause p50 at 25 ms, process domain (cgroup v${domain.cgroupVersion} freezer, 1 process), 8 no-op devices`,
      value: pct(q.pauses, 0.5),
      unit: 'ms',
      baseline: { name: 'pause with the no-op domain', value: pct(p.pauses, 0.5), unit: 'ms' },
      ratio: pct(q.pauses, 0.5) / pct(p.pauses, 0.5),
    });
    figures.push({ name: 'pause p99 at 25 ms, process domain', value: pct(q.pauses, 0.99), unit: 'ms' });
    figures.push({ name: 'device layer share of each pause p50, process domain', value: pct(q.share, 0.5), unit: 'fraction' });
    figures.push({ name: 'checkpoint rate at 25 ms, process domain (fixed-rate)', value: real.rate, unit: 'checkpoints/s', baseline: { name: 'Remus target', value: 40, unit: 'checkpoints/s' }, ratio: real.rate / 40, target: '40/s' });
  } finally {
    await domain.stop();
  }
} else {
  console.log('not root: process domain figures skipped');
}

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'cli.json'), `${JSON.stringify({ package: '@remus/cli', figures }, null, 2)}\n`);
console.log(`wrote ${join(outDir, 'cli.json')}`);
