// The checkpoint loop's own cost per checkpoint with 8 no-op devices and a
// no-op domain, against the bare sequence of the same calls (suspend,
// Promise.all postsuspend, save, Promise.all preresume, resume, waitAck,
// Promise.all commit) measured in the same run, interleaved; the baseline
// never yields to the event loop (the loop does, at least every 1 ms). Target
// (issue 18): median <= 3x the bare sequence.
//
// Both are measured warm: LOOP_WARMUP rounds (default 30, 6000 checkpoints)
// run first and are not counted. The loop's code needs about that many
// checkpoints before V8's optimising tier has compiled all of it (round
// medians fall from about 12 us to 4 us over the first 20 rounds), while the
// bare sequence, a few lines, is optimised after two; counting the first
// rounds measured how far V8 had got, not what a checkpoint costs, and made
// the ratio swing from 2.9 to 5 between runs. The cold figure is reported too.
import { createCheckpointDevices, runCheckpointLoop } from '../dist/index.js';

const N_DEV = Number(process.env.LOOP_DEVICES ?? 8);
const noop = async () => {};
const ops = { name: 'noop', kind: 'nic', setup: noop, teardown: noop, postsuspend: noop, preresume: noop, commit: noop };
const domain = { name: 'noop-domain', suspend: noop, save: noop, resume: noop, waitAck: noop };
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p99 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))];

const devices = Array.from({ length: N_DEV }, (_, i) => ({ id: `d${i}`, kind: 'nic' }));
const handles = devices.map((device) => ({ device, shared: undefined, data: undefined }));
const ctx = { signal: new AbortController().signal, checkpoint: 1, epoch: 0, operation: 'bench' };
const BATCH = Number(process.env.LOOP_BATCH ?? 200);

async function loopBatch() {
  const layer = createCheckpointDevices({ ops: [ops], devices });
  await layer.setup();
  const per = [];
  let last;
  await runCheckpointLoop({
    devices: layer,
    domain,
    intervalMs: 0,
    maxCheckpoints: BATCH,
    onCheckpoint: (f) => {
      const now = performance.now();
      if (last !== undefined) per.push(now - last);
      last = now;
    },
  });
  return per;
}

async function bareBatch() {
  const per = [];
  let last;
  for (let i = 0; i < BATCH; i++) {
    const c = { signal: ctx.signal, checkpoint: i + 1, epoch: 0 };
    await domain.suspend(c);
    await Promise.all(handles.map((h) => ops.postsuspend(h, ctx)));
    await domain.save(c);
    await Promise.all(handles.map((h) => ops.preresume(h, ctx)));
    await domain.resume(c);
    await domain.waitAck(c);
    await Promise.all(handles.map((h) => ops.commit(h, ctx)));
    const now = performance.now();
    if (last !== undefined) per.push(now - last);
    last = now;
  }
  return per;
}

export async function measureLoop(rounds = Number(process.env.LOOP_ROUNDS ?? 30), warmup = Number(process.env.LOOP_WARMUP ?? 30)) {
  const loop = [];
  const bare = [];
  const coldLoop = [];
  const coldBare = [];
  for (let r = 0; r < rounds + warmup; r++) {
    const l = await loopBatch();
    const b = await bareBatch();
    if (r < 3) {
      coldLoop.push(...l);
      coldBare.push(...b);
    }
    if (r >= warmup) {
      loop.push(...l);
      bare.push(...b);
    }
  }
  return {
    devices: N_DEV,
    loop: median(loop),
    loopP99: p99(loop),
    bare: median(bare),
    ratio: median(loop) / median(bare),
    cold: { loop: median(coldLoop), bare: median(coldBare), ratio: median(coldLoop) / median(coldBare) },
    warmupCheckpoints: warmup * BATCH,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const m = await measureLoop();
  console.log(
    `loop per checkpoint, ${m.devices} no-op devices, warm (after ${m.warmupCheckpoints} checkpoints): ${(m.loop * 1000).toFixed(1)} us (p99 ${(m.loopP99 * 1000).toFixed(1)}), bare sequence ${(m.bare * 1000).toFixed(1)} us, ratio ${m.ratio.toFixed(2)} (target <= 3); cold (first 600): ${(m.cold.loop * 1000).toFixed(1)} us against ${(m.cold.bare * 1000).toFixed(1)} us, ratio ${m.cold.ratio.toFixed(2)}`,
  );
}
