// Core engine overhead per checkpoint phase for 1, 8, 64 and 1024 no-op
// devices, against a bare Promise.all over the same no-op functions measured
// in the same run. Target (issue 2): at 1024 devices, <= 2 us per device per
// phase and <= 3x the bare baseline. Writes bench-results/core.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCheckpointDevices } from '../dist/index.js';
import { measureLoop } from './loop.mjs';

const noop = async () => {};
const ops = {
  name: 'noop',
  kind: 'nic',
  setup: noop,
  teardown: noop,
  postsuspend: noop,
  preresume: noop,
  commit: noop,
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p99 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))];

async function measure(n) {
  const devices = Array.from({ length: n }, (_, i) => ({ id: `d${i}`, kind: 'nic' }));
  const layer = createCheckpointDevices({ ops: [ops], devices });
  await layer.setup();
  const handles = devices.map((device) => ({ device, shared: undefined, data: undefined }));
  const ctx = { signal: new AbortController().signal, checkpoint: 1, epoch: 0, operation: 'bench' };
  const rounds = n >= 1024 ? 300 : n >= 64 ? 2000 : 5000;
  const engine = [];
  const bare = [];
  // Interleave engine and baseline so machine noise hits both alike.
  for (let r = 0; r < rounds + 50; r++) {
    let t0 = performance.now();
    await layer.postsuspend();
    await layer.preresume();
    await layer.commit();
    const e = (performance.now() - t0) / 3;
    t0 = performance.now();
    await Promise.all(handles.map((h) => ops.postsuspend(h, ctx)));
    await Promise.all(handles.map((h) => ops.preresume(h, ctx)));
    await Promise.all(handles.map((h) => ops.commit(h, ctx)));
    const b = (performance.now() - t0) / 3;
    if (r >= 50) {
      engine.push(e);
      bare.push(b);
    }
  }
  await layer.teardown();
  return { n, engine: median(engine), engineP99: p99(engine), bare: median(bare) };
}

const figures = [];
console.log('devices  engine/phase(median)  p99       bare Promise.all  ratio  us/device/phase');
for (const n of [1, 8, 64, 1024]) {
  const m = await measure(n);
  const perDevUs = (m.engine * 1000) / n;
  const ratio = m.engine / m.bare;
  console.log(
    `${String(n).padStart(7)}  ${(m.engine * 1000).toFixed(1).padStart(12)} us  ${(m.engineP99 * 1000).toFixed(1).padStart(8)} us  ${(m.bare * 1000).toFixed(1).padStart(10)} us  ${ratio.toFixed(2).padStart(5)}  ${perDevUs.toFixed(3)}`,
  );
  figures.push({
    name: `phase time, ${n} no-op devices`,
    value: m.engine * 1000,
    unit: 'us',
    p99: m.engineP99 * 1000,
    baseline: { name: 'bare Promise.all over the same ops', value: m.bare * 1000, unit: 'us' },
    ratio,
    ...(n === 1024 ? { target: '<= 3x baseline' } : {}),
  });
  figures.push({ name: `per device per phase, ${n} devices`, value: perDevUs, unit: 'us', ...(n === 1024 ? { target: '<= 2 us' } : {}) });
}
// The loop's own cost per checkpoint (issue 18): 8 no-op devices, a no-op domain, against the bare calls.
const loop = await measureLoop();
console.log(
  `checkpoint loop, ${loop.devices} no-op devices, warm (after ${loop.warmupCheckpoints} checkpoints): ${(loop.loop * 1000).toFixed(1)} us per checkpoint (p99 ${(loop.loopP99 * 1000).toFixed(1)}), bare sequence of the same calls ${(loop.bare * 1000).toFixed(1)} us, ratio ${loop.ratio.toFixed(2)} (target <= 3); cold (first 600 checkpoints): ratio ${loop.cold.ratio.toFixed(2)}`,
);
figures.push({
  name: `checkpoint loop per checkpoint, ${loop.devices} no-op devices`,
  value: loop.loop * 1000,
  unit: 'us',
  p99: loop.loopP99 * 1000,
  baseline: { name: 'bare sequence of the same calls (suspend, postsuspend x8, save, preresume x8, resume, ack, commit x8)', value: loop.bare * 1000, unit: 'us' },
  ratio: loop.ratio,
  target: '<= 3x baseline',
});
figures.push({
  name: `checkpoint loop per checkpoint, cold (its first 600 checkpoints, V8 not yet optimised), ${loop.devices} no-op devices`,
  value: loop.cold.loop * 1000,
  unit: 'us',
  baseline: { name: 'bare sequence of the same calls, cold', value: loop.cold.bare * 1000, unit: 'us' },
  ratio: loop.cold.ratio,
});
const out = process.env.REMUS_BENCH_OUT ?? new URL('../../../bench-results', import.meta.url).pathname;
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'core.json'), JSON.stringify({ package: '@remus/core', node: process.version, figures }, null, 2));
const last = figures.filter((f) => f.name.includes('1024'));
const ok = last[0].ratio <= 3 && last[1].value <= 2;
console.log(ok ? 'targets met at 1024 devices' : 'TARGETS MISSED at 1024 devices');
console.log(loop.ratio <= 3 ? 'loop target met (<= 3x the bare calls)' : 'LOOP TARGET MISSED (> 3x the bare calls)');
