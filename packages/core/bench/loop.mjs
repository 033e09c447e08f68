// The checkpoint loop's own cost per checkpoint with 8 no-op devices and a
// no-op domain, against the bare sequence of the same calls (suspend,
// Promise.all postsuspend, save, Promise.all preresume, resume, waitAck,
// Promise.all commit) measured in the same run, interleaved; the baseline
// never yields to the event loop (the loop does, at least every 1 ms). Target
// (issue 18): median <= 3x the bare sequence.
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

export async function measureLoop(rounds = Number(process.env.LOOP_ROUNDS ?? 30)) {
  const loop = [];
  const bare = [];
  for (let r = 0; r < rounds + 3; r++) {
    const l = await loopBatch();
    const b = await bareBatch();
    if (r >= 3) {
      loop.push(...l);
      bare.push(...b);
    }
  }
  return { devices: N_DEV, loop: median(loop), loopP99: p99(loop), bare: median(bare), ratio: median(loop) / median(bare) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const m = await measureLoop();
  console.log(
    `loop per checkpoint, ${m.devices} no-op devices: ${(m.loop * 1000).toFixed(1)} us (p99 ${(m.loopP99 * 1000).toFixed(1)}), bare sequence ${(m.bare * 1000).toFixed(1)} us, ratio ${m.ratio.toFixed(2)} (target <= 3)`,
  );
}
