// Benchmark body, run as root in the kernel-lab guest (see bench/run.mjs):
// time of postsuspend + preresume for one DRBD disk with the built-in state
// source (/proc/drbd read through one handle), against the same ops asking
// `drbdsetup-84 status --statistics` (one process per state read) in the same
// run. Prints `RESULT {json}`.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { diskDrbd } from '../dist/index.js';
import { DRBDSETUP, up } from './pair.mjs';

const execFileP = promisify(execFile);
const ctx = (checkpoint) => ({ signal: new AbortController().signal, checkpoint, epoch: 0, operation: 'disk-drbd-bench' });

/** Parses `drbdsetup-84 status RES --verbose --statistics` into the minor state the plugin reads. */
function parseStatus(text, minor) {
  const num = (k) => Number(new RegExp(`\\b${k}:(\\d+)`).exec(text)?.[1] ?? NaN);
  const str = (re) => re.exec(text)?.[1] ?? '';
  return {
    minor,
    connection: str(/connection:(\S+)/),
    role: str(/^\S+ role:(\S+)/m),
    peerRole: str(/connection:\S+ role:(\S+)/),
    disk: str(/ disk:(\S+)/),
    peerDisk: str(/peer-disk:(\S+)/),
    protocol: 'C',
    ioFlags: /suspended:no/.test(text) ? 'r-----' : 's-----',
    counters: { ap: num('upper-pending'), lo: num('lower-pending'), pe: num('pending'), ua: num('unacked'), oos: num('out-of-sync') },
  };
}

/** A state source that asks drbdsetup at every read: the baseline. */
function drbdsetupSource(resource, minor) {
  let status = { version: '8.4', minors: new Map() };
  return async () => ({
    loaded: true,
    async refresh() {
      const { stdout } = await execFileP(DRBDSETUP, ['status', resource, '--verbose', '--statistics']);
      status = { version: '8.4', minors: new Map([[minor, parseStatus(stdout, minor)]]) };
      return status;
    },
    current: () => status,
    async close() {},
  });
}

async function measure(ops, n, warmup) {
  const shared = await ops.init(ctx(0));
  const h = { device: { id: 'xvda', kind: 'disk', params: { path: '/dev/drbd0' } }, shared, data: undefined };
  await ops.setup(h, ctx(0));
  const times = [];
  try {
    for (let i = 1; i <= warmup + n; i++) {
      const t0 = performance.now();
      await ops.postsuspend(h, ctx(i));
      await ops.preresume(h, ctx(i));
      const dt = performance.now() - t0;
      if (i > warmup) times.push(dt);
    }
  } finally {
    await ops.teardown(h, ctx(0));
    await ops.cleanup(shared, ctx(0));
  }
  times.sort((a, b) => a - b);
  const q = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
  return { n, median: q(0.5), p99: q(0.99), min: times[0], max: times.at(-1) };
}

await up();
const n = Number(process.env.BENCH_N ?? 200);
const nBaseline = Number(process.env.BENCH_N_BASELINE ?? 30);
const inMemory = await measure(diskDrbd(), n, 20);
const baseline = await measure(diskDrbd({ stateSource: drbdsetupSource('r0', 0) }), nBaseline, 3);
console.log(`RESULT ${JSON.stringify({ inMemory, baseline })}`);
