// The arbiter's cost per checkpoint. The same checkpoint loop (no-op domain,
// one no-op output device, interval 0) runs without an arbiter (baseline),
// under the single-host localArbiter, and under the etcd arbiter holding the
// role of a real one-member etcd on loopback (started here, removed after).
// Figures: median checkpoint time per variant and its ratio to the baseline,
// and etcd RPCs per checkpoint during the etcd run (keepalives are timed,
// every TTL/3, not per checkpoint: the ratio goes to 0 as the rate grows).
// Writes bench-results/agent.json.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCheckpointDevices, localArbiter, runCheckpointLoop } from '@remus/core';
import { etcdArbiter } from '@remus/arbiter-etcd';

const CHECKPOINTS = 3000;
const ROUNDS = 5;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const noop = () => undefined;
const domain = { name: 'noop', suspend: noop, save: noop, resume: noop, waitAck: noop };
const ops = [{ name: 'bench-output', kind: 'out', setup: noop, teardown: noop, postsuspend: noop, commit: noop }];

async function loop(arbiter) {
  const devices = createCheckpointDevices({ ops, devices: [{ id: 'o', kind: 'out' }], operationId: 'bench' });
  await devices.setup();
  const times = [];
  let last = performance.now();
  await runCheckpointLoop({
    devices,
    domain,
    intervalMs: 0,
    maxCheckpoints: CHECKPOINTS,
    ...(arbiter ? { arbiter } : {}),
    onCheckpoint: () => {
      const now = performance.now();
      times.push(now - last);
      last = now;
    },
  });
  return median(times.slice(100)) * 1000;
}

async function startEtcd() {
  const dir = mkdtempSync(join(tmpdir(), 'remus-agent-bench-etcd-'));
  const port = 23000 + (process.pid % 1000) * 2;
  const child = spawn('etcd', [
    '--name', 'b', '--data-dir', join(dir, 'data'),
    '--listen-client-urls', `http://127.0.0.1:${port}`, '--advertise-client-urls', `http://127.0.0.1:${port}`,
    '--listen-peer-urls', `http://127.0.0.1:${port + 1}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${port + 1}`,
    '--initial-cluster', `b=http://127.0.0.1:${port + 1}`,
  ], { stdio: 'ignore' });
  return { endpoint: `127.0.0.1:${port}`, stop: () => { child.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); } };
}

const etcd = await startEtcd();
let arbiter;
try {
  arbiter = etcdArbiter({ endpoints: [etcd.endpoint], prefix: '/bench/agent', host: 'bench', ttlSeconds: 5 });
  const until = performance.now() + 20_000;
  for (;;) {
    try {
      await arbiter.acquire(AbortSignal.timeout(5000));
      break;
    } catch (e) {
      if (performance.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  const local = localArbiter();
  await local.acquire(AbortSignal.timeout(1000));
  const r = { none: [], local: [], etcd: [] };
  let rpcs = 0;
  let etcdCheckpoints = 0;
  let etcdMs = 0;
  // Interleave the variants so machine noise hits all alike.
  for (let i = 0; i < ROUNDS; i++) {
    r.none.push(await loop(undefined));
    r.local.push(await loop(local));
    const before = arbiter.rpcCount;
    const t0 = performance.now();
    r.etcd.push(await loop(arbiter));
    etcdMs += performance.now() - t0;
    rpcs += arbiter.rpcCount - before;
    etcdCheckpoints += CHECKPOINTS;
  }
  const none = median(r.none);
  const loc = median(r.local);
  const et = median(r.etcd);
  const perCheckpoint = rpcs / etcdCheckpoints;
  console.log(`checkpoint time (median of ${ROUNDS} runs of ${CHECKPOINTS}): no arbiter ${none.toFixed(2)} us, localArbiter ${loc.toFixed(2)} us (x${(loc / none).toFixed(2)}), etcd arbiter ${et.toFixed(2)} us (x${(et / none).toFixed(2)})`);
  console.log(`etcd RPCs during ${etcdCheckpoints} checkpoints (${(etcdMs / 1000).toFixed(2)} s): ${rpcs} = ${perCheckpoint.toFixed(4)} per checkpoint (keepalives every TTL/3 and key checks; none per checkpoint)`);
  const figures = [
    { name: 'checkpoint time, etcd arbiter (role held)', value: et, unit: 'us', baseline: { name: 'no arbiter', value: none, unit: 'us' }, ratio: et / none },
    { name: 'checkpoint time, localArbiter', value: loc, unit: 'us', baseline: { name: 'no arbiter', value: none, unit: 'us' }, ratio: loc / none },
    { name: 'etcd RPCs per checkpoint (all RPCs during the run / checkpoints)', value: perCheckpoint, unit: 'rpc', target: '0 round trips per checkpoint (only timed keepalives)' },
  ];
  const out = process.env.REMUS_BENCH_OUT ?? new URL('../../../bench-results', import.meta.url).pathname;
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'agent.json'), JSON.stringify({ package: '@remus/agent', node: process.version, figures }, null, 2));
} finally {
  await arbiter?.close();
  etcd.stop();
}
