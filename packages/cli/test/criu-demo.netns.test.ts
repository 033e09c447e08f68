// `remus demo` on a host where CRIU cannot work (this one: Debian's CRIU 3.17
// on a 6.13+ kernel): it says why in one line and runs the process-domain
// demo as before. Needs root and network namespaces.
import { release } from 'node:os';
import { afterAll, expect, it } from 'vitest';
import { tempDir } from '@remus/test-lab';
import { remus } from './helpers.js';

const [major, minor] = release().split('.').map(Number) as [number, number];
const state = tempDir('rmcriu-demo');
afterAll(async () => {
  await remus(['cleanup', '--state-dir', state.dir]);
  state.remove();
});

it('remus demo (on this host and CI: CRIU 3.17, kernel 6.13+) runs the process-domain demo, then says in one line why the CRIU failover is not shown here', async () => {
  expect(major > 6 || (major === 6 && minor >= 13)).toBe(true);
  const r = await remus(['demo', '--duration', '1500', '--state-dir', state.dir]);
  const lines = r.stdout.split('\n').filter((l) => l.includes('CRIU'));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^CRIU failover not shown: CRIU 4\.1 or later is needed on kernel 6\.13\+ .*; the process domain was shown$/);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain('checkpoints');
  // The one line comes after the process-domain demo ran, before the summary; no CRIU part in the summary.
  expect(r.stdout.indexOf(lines[0] as string)).toBeLessThan(r.stdout.indexOf('remus demo PASSED'));
  expect(r.stdout).not.toContain('CRIU failover: passed');
}, 120_000);
