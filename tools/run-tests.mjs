#!/usr/bin/env node
// `pnpm test`: builds and typechecks every package, checks their packaging
// (publint, attw), checks that changed packages have changesets, runs every vitest project (unit, network-namespace and
// kernel-lab tiers), and ends with one line `N passed, N failed, N skipped`.
// With CI=true a skipped test is a failure.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = { ...process.env, TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1' };
const run = (cmd, args) => spawnSync(cmd, args, { stdio: 'inherit', env }).status ?? 1;

// One turbo invocation: it orders build before typecheck and lint:package and runs the rest in parallel.
let failedSteps = 0;
if (run('pnpm', ['exec', 'turbo', 'run', 'build', 'typecheck', 'lint:package', '--output-logs=errors-only']) !== 0) {
  console.error('step failed: turbo run build typecheck lint:package');
  failedSteps++;
}

// Every published package whose src changed has a changeset (against the merge base with main or the last release tag).
if (run('node', ['tools/changesets-check/check.mjs']) !== 0) {
  console.error('step failed: changesets-check');
  failedSteps++;
}

const dir = mkdtempSync(join(tmpdir(), 'remus-vitest-'));
const out = join(dir, 'results.json');
const args = ['exec', 'vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...process.argv.slice(2)];
const status = run('pnpm', args);
let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const r = JSON.parse(readFileSync(out, 'utf8'));
  passed = r.numPassedTests;
  failed = r.numFailedTests;
  skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  // Suites that failed to load count as failures too.
  failed += (r.testResults ?? []).filter((s) => s.status === 'failed' && (s.assertionResults ?? []).length === 0).length;
} catch (e) {
  console.error(`could not read vitest results: ${e.message}`);
  failed++;
}
rmSync(dir, { recursive: true, force: true });
failed += failedSteps;
if (status !== 0 && failed === 0) failed = 1;
const skippedIsFailure = process.env.CI === 'true' && skipped > 0;
if (skippedIsFailure) console.error(`CI=true: ${skipped} skipped test(s) count as failures`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || skippedIsFailure ? 1 : 0);
