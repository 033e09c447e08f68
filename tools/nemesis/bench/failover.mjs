// Failover time per fault kind at TTL 2 s and 5 s: from the fault to the
// first reply the client gets from the new primary (a higher epoch), and the
// longest the client went without any reply. Every history is also checked
// (violations must be 0). Root: namespaces and a real three-member etcd.
// REMUS_NEMESIS_BENCH_RUNS (default 3) runs per kind and TTL.
// Writes bench-results/nemesis.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NemesisLab, runScenario } from '../dist/index.js';

const RUNS = Number(process.env.REMUS_NEMESIS_BENCH_RUNS ?? 3);
// REMUS_NEMESIS_BENCH_KINDS / REMUS_NEMESIS_BENCH_TTLS (comma lists) restrict the run, e.g. late-timers at TTL 2.
const ALL_KINDS = ['kill-primary', 'partition-primary', 'pause-primary', 'late-timers'];
const KINDS = process.env.REMUS_NEMESIS_BENCH_KINDS ? process.env.REMUS_NEMESIS_BENCH_KINDS.split(',') : ALL_KINDS;
const TTLS = process.env.REMUS_NEMESIS_BENCH_TTLS ? process.env.REMUS_NEMESIS_BENCH_TTLS.split(',').map(Number) : [2, 5];
for (const k of KINDS) if (!ALL_KINDS.includes(k)) throw new Error(`REMUS_NEMESIS_BENCH_KINDS: unknown kind ${k}; known: ${ALL_KINDS.join(', ')}`);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const figures = [];
let violations = 0;
let histories = 0;
let unsettled = 0;
const lab = await NemesisLab.create();
try {
  for (const ttl of TTLS) {
    for (const kind of KINDS) {
      const fail = [];
      const gaps = [];
      for (let i = 0; i < RUNS; i++) {
        let r;
        try {
          r = await runScenario(lab, kind, { ttlSeconds: ttl, seed: 1000 * ttl + i });
        } catch (e) {
          // A pair that did not settle in time is a liveness miss, reported, not a figure.
          console.log(`TTL ${ttl}s ${kind} run ${i + 1}: did not settle: ${String(e.message).split('\n')[0]}`);
          unsettled++;
          continue;
        }
        histories++;
        violations += r.check.violations.length;
        if (r.failoverMs !== undefined) fail.push(r.failoverMs);
        if (r.outageMs !== undefined) gaps.push(r.outageMs);
        console.log(`TTL ${ttl}s ${kind} run ${i + 1}: failover ${r.failoverMs?.toFixed(0) ?? '-'} ms, longest gap ${r.outageMs?.toFixed(0) ?? '-'} ms, violations ${r.check.violations.length}, epochs ${r.epochs.join('>')}, deposed primaries that kept their state ${r.keptOwnState ?? 0}`);
      }
      if (fail.length) {
        figures.push({ name: `failover time, ${kind}, TTL ${ttl} s (fault to first reply of the new primary)`, value: median(fail), unit: 'ms', min: Math.min(...fail), max: Math.max(...fail), runs: fail.length, baseline: { name: 'TTL', value: ttl * 1000, unit: 'ms' }, ratio: median(fail) / (ttl * 1000) });
      }
      if (gaps.length) figures.push({ name: `longest client gap, ${kind}, TTL ${ttl} s`, value: median(gaps), unit: 'ms', runs: gaps.length });
    }
  }
} finally {
  await lab.destroy();
}
figures.push({ name: 'runs that did not settle in time (liveness, not safety)', value: unsettled, unit: 'runs' });
figures.push({ name: 'histories checked / violations', value: violations, unit: `violations in ${histories} histories`, target: '0' });
const out = process.env.REMUS_BENCH_OUT ?? new URL('../../../bench-results', import.meta.url).pathname;
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'nemesis.json'), JSON.stringify({ package: '@remus/nemesis', node: process.version, figures }, null, 2));
for (const f of figures) console.log(`${f.name}: ${typeof f.value === 'number' ? f.value.toFixed(0) : f.value} ${f.unit}${f.min !== undefined ? ` (min ${f.min.toFixed(0)}, max ${f.max.toFixed(0)})` : ''}`);
process.exit(violations === 0 ? 0 : 1);
