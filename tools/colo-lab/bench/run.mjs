// COLO figures on a real pair (software emulation here, with the test-only
// shim): time to first checkpoint, pause per checkpoint, failover time from
// SIGKILL to the first answered request, for both directions. Baselines are
// measured in the same run: the checkpoint period (x-checkpoint-delay) for
// pauses, and the median request time during replication for failovers.
// Run as root, one pair at a time: `pnpm --filter @remus/colo-lab bench`.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ColoLab } from '../dist/index.js';

const DELAY_MS = 2000;
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)];
};

async function scenario(victim) {
  const lab = await ColoLab.create({ prefix: `colo-b${process.pid % 100000}-${victim[0]}`, checkpointDelayMs: DELAY_MS });
  try {
    await lab.start(150_000);
    const latencies = [];
    for (let i = 0; i < 6; i++) {
      const t = performance.now();
      await lab.request(10_000);
      latencies.push(performance.now() - t);
    }
    await new Promise((r) => setTimeout(r, 4000)); // periodic checkpoints too
    const before = lab.pair.status();
    const killedAt = performance.now();
    process.kill((victim === 'primary' ? lab.primary : lab.secondary).pid, 'SIGKILL');
    let firstAnswerMs;
    while (performance.now() - killedAt < 60_000) {
      try {
        await lab.request(1000);
        firstAnswerMs = performance.now() - killedAt;
        break;
      } catch {
        /* not yet */
      }
    }
    const after = lab.pair.status();
    if (firstAnswerMs === undefined || after.state !== 'failed-over') throw new Error(`no failover after killing the ${victim}:\n${lab.logs()}`);
    return {
      timeToFirstCheckpointMs: before.timeToFirstCheckpointMs,
      pauseP50: before.pauseMs.p50,
      pauseP99: before.pauseMs.p99,
      checkpoints: before.checkpoints,
      onDemand: before.onDemandCheckpoints,
      requestMedianMs: median(latencies),
      firstAnswerMs,
      driverFailoverMs: after.failover.doneAt - after.failover.detectedAt,
      shim: lab.shim(),
    };
  } finally {
    await lab.close();
  }
}

const p = await scenario('primary');
console.log('primary killed:', JSON.stringify(p));
const s = await scenario('secondary');
console.log('secondary killed:', JSON.stringify(s));

const period = { name: 'checkpoint period (x-checkpoint-delay)', value: DELAY_MS, unit: 'ms' };
const fig = (name, value, baseline, target) => ({ name, value: Math.round(value * 10) / 10, unit: 'ms', baseline: { ...baseline, value: Math.round(baseline.value * 10) / 10 }, ratio: Math.round((value / baseline.value) * 1000) / 1000, ...(target ? { target } : {}) });
const reqBase = (r) => ({ name: 'median request time during replication', value: r.requestMedianMs, unit: 'ms' });
const figures = [
  fig('time to first checkpoint (start() to end of first checkpoint), mean of both runs', mean([p.timeToFirstCheckpointMs, s.timeToFirstCheckpointMs]), period),
  fig('checkpoint pause p50 (STOP to RESUME), mean of both runs', mean([p.pauseP50, s.pauseP50]), period),
  fig('checkpoint pause p99 (STOP to RESUME), worse of both runs', Math.max(p.pauseP99, s.pauseP99), period),
  fig('primary SIGKILL to first answered request (secondary serving)', p.firstAnswerMs, reqBase(p), '< 3000 ms'),
  fig('secondary SIGKILL to first answered request (primary alone)', s.firstAnswerMs, reqBase(s), '< 3000 ms'),
  fig('driver failover to the secondary (detection to done)', p.driverFailoverMs, reqBase(p)),
  fig('driver failover to the primary (detection to done)', s.driverFailoverMs, reqBase(s)),
];
for (const f of figures) console.log(`${f.name}: ${f.value} ms (baseline ${f.baseline.name} ${f.baseline.value} ms, ratio ${f.ratio})`);
const out = resolve(process.env.REMUS_BENCH_OUT ?? join(import.meta.dirname, '..', '..', '..', 'bench-results'));
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'colo-lab.json'), JSON.stringify({ package: '@remus/colo-lab', figures }, null, 2) + '\n');
console.log(`wrote ${join(out, 'colo-lab.json')}`);
