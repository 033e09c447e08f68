#!/usr/bin/env node
// `pnpm lab:setup`: prepares the kernel lab (see README.md). Exit 0 when ready.
import { setupLab } from '../dist/index.js';

const started = Date.now();
try {
  const r = await setupLab({ log: (line) => console.log(`[lab:setup] ${line}`) });
  const what = r.cached ? 'already set up, nothing to do' : r.steps.join('; ');
  console.log(`[lab:setup] ready: ${r.stamp.package} ${r.stamp.version} (${what}) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`[lab:setup] cache: ${r.stamp.kernel}`);
} catch (e) {
  console.error(`[lab:setup] FAILED: ${e?.code ? `${e.code}: ` : ''}${e?.message ?? e}`);
  process.exit(1);
}
