// Runs one etcd arbiter inside a lab host's namespace for the tests: JSON
// requests on stdin ({ id, op }), answers and events as JSON lines on stdout.
// Times are CLOCK_MONOTONIC ms (process.hrtime), shared by every process on
// the machine, so the test can compare one host's deadline with another's
// election.
import { createInterface } from 'node:readline';
import { etcdArbiter } from '../dist/index.js';

const options = JSON.parse(process.argv[2]);
const mono = () => Number(process.hrtime.bigint()) / 1e6;
const toMono = (perf) => (Number.isFinite(perf) ? mono() - performance.now() + perf : perf);
const out = (x) => process.stdout.write(`${JSON.stringify(x)}\n`);
const arbiter = etcdArbiter({ ...options, onEvent: (e) => out({ event: e, at: mono() }) });
let campaign;

function role() {
  const r = arbiter.role();
  const now = performance.now();
  return { held: r.held, epoch: r.epoch, deadline: toMono(r.deadline), usable: r.held && now < r.deadline, at: mono() };
}

const ops = {
  publish: async (arg) => arbiter.publish('sync', arg ?? 'v', AbortSignal.timeout(5000)),
  read: async () => (await arbiter.read('sync', AbortSignal.timeout(5000))) ?? null,
  acquire: async () => {
    campaign = new AbortController();
    const r = await arbiter.acquire(campaign.signal);
    return { epoch: r.epoch, deadline: toMono(r.deadline), at: mono() };
  },
  abort: async () => campaign?.abort(new Error('aborted by the test')),
  role: async () => role(),
  resign: async () => arbiter.resign(),
  leader: async () => arbiter.leader(AbortSignal.timeout(5000)),
  close: async () => arbiter.close(),
};

createInterface({ input: process.stdin }).on('line', (line) => {
  const { id, op, arg } = JSON.parse(line);
  ops[op](arg).then(
    (result) => out({ id, ok: true, result: result ?? null }),
    (e) => out({ id, ok: false, error: { code: e.code, message: e.message } }),
  );
});
// Report the role every 50 ms, so the test sees exactly when it lapsed.
setInterval(() => out({ role: role() }), 50);
process.stdin.on('end', () => arbiter.close().finally(() => process.exit(0)));
