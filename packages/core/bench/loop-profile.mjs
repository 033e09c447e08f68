#!/usr/bin/env node
// What to profile for the loop's own cost (issue 18): the checkpoint loop
// alone (8 no-op devices, no-op domain, interval 0), no baseline and no
// statistics in the same process, so every sampled microsecond is the loop's.
//   node --cpu-prof --cpu-prof-dir=DIR bench/loop-profile.mjs [CHECKPOINTS=300000]
//   node bench/profile-summary.mjs DIR/*.cpuprofile
import { createCheckpointDevices, runCheckpointLoop } from '../dist/index.js';

const N_DEV = Number(process.env.LOOP_DEVICES ?? 8);
const count = Number(process.argv[2] ?? 300_000);
const noop = async () => {};
const ops = { name: 'noop', kind: 'nic', setup: noop, teardown: noop, postsuspend: noop, preresume: noop, commit: noop };
const domain = { name: 'noop-domain', suspend: noop, save: noop, resume: noop, waitAck: noop };
const devices = Array.from({ length: N_DEV }, (_, i) => ({ id: `d${i}`, kind: 'nic' }));
const layer = createCheckpointDevices({ ops: [ops], devices });
await layer.setup();
let seen = 0;
const t0 = performance.now();
await runCheckpointLoop({ devices: layer, domain, intervalMs: 0, maxCheckpoints: count, onCheckpoint: () => void seen++ });
const ms = performance.now() - t0;
console.log(`${seen} checkpoints in ${ms.toFixed(0)} ms: ${((ms * 1000) / seen).toFixed(2)} us per checkpoint`);
