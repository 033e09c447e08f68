#!/usr/bin/env node
// Summarises a .cpuprofile (node --cpu-prof): self time by file (V8's own
// entries, such as the garbage collector, as themselves), then by function,
// largest first, with each function's file:line and share of the sampled time.
//   node bench/profile-summary.mjs PROFILE.cpuprofile [TOP=25]
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: profile-summary.mjs PROFILE.cpuprofile [TOP]');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
// Sample time: timeDeltas[i] is the time before sample i.
const selfUs = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const byFn = new Map();
const byFile = new Map();
let total = 0;
for (const [id, us] of selfUs) {
  const n = byId.get(id);
  const cf = n.callFrame;
  const where = cf.url ? `${basename(cf.url)}:${cf.lineNumber + 1}` : '';
  const key = `${cf.functionName || '(anonymous)'} ${where}`.trim();
  byFn.set(key, (byFn.get(key) ?? 0) + us);
  const fileKey = cf.url ? (cf.url.startsWith('node:') || !cf.url.includes('/') ? 'node internals' : basename(cf.url)) : /^\(/.test(cf.functionName) ? cf.functionName : 'native (no script)';
  byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + us);
  total += us;
}
const rows = [...byFn].sort((a, b) => b[1] - a[1]);
const idle = rows.filter(([k]) => /^\((idle|program|garbage collector)\)/.test(k)).reduce((s, [, v]) => s + v, 0);
console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled, ${((100 * idle) / total).toFixed(1)}% idle/program/gc`);
console.log('by file:');
for (const [k, us] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(1).padStart(8)} ms  ${k}`);
console.log('by function:');
for (const [k, us] of rows.slice(0, top)) console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(1).padStart(8)} ms  ${k}`);
