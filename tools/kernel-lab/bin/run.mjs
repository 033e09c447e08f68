#!/usr/bin/env node
// Runs one body in the kernel lab from the command line:
//   node bin/run.mjs [--timeout MS] SCRIPT.sh
//   node bin/run.mjs [--timeout MS] --node FILE.mjs [ARGS...]
// Prints the body's output; exit status 0 pass, 1 fail, 2 crash, 3 timeout, 4 usage or lab error.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { formatLabResult, runInLab } from '../dist/index.js';

const argv = process.argv.slice(2);
let timeoutMs;
if (argv[0] === '--timeout') {
  timeoutMs = Number(argv[1]);
  argv.splice(0, 2);
}
let options;
if (argv[0] === '--node' && argv[1] !== undefined) options = { node: { file: resolve(argv[1]), args: argv.slice(2) } };
else if (argv.length === 1) options = { script: readFileSync(argv[0], 'utf8') };
else {
  console.error('usage: run.mjs [--timeout MS] (SCRIPT.sh | --node FILE.mjs [ARGS...])');
  process.exit(4);
}
try {
  const r = await runInLab({ ...options, timeoutMs });
  if (r.outcome === 'pass') process.stdout.write(r.output);
  else console.error(formatLabResult(r));
  process.exit({ pass: 0, fail: 1, crash: 2, timeout: 3 }[r.outcome]);
} catch (e) {
  console.error(`[kernel-lab] ${e?.code ? `${e.code}: ` : ''}${e?.message ?? e}`);
  process.exit(4);
}
