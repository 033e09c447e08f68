/**
 * Remus with CRIU in the kernel lab (a Debian 6.1 kernel under QEMU, where
 * Debian's CRIU 3.17 works; needs root and `pnpm lab:setup`). The body is
 * plain JS against this package's dist; see test/lab/failover.mjs for what
 * it asserts: one client TCP connection survives the primary's death with no
 * gap and no repeat in the service's counter, and the faults (dump killed,
 * images damaged in transit, failing restore, second failover).
 */
import { expectLabPass, startLab, type LabSession } from '@remus/kernel-lab';
import { afterAll, beforeAll, expect, it } from 'vitest';

let lab: LabSession | undefined;
beforeAll(async () => {
  lab = await startLab();
}, 300_000);
afterAll(async () => {
  await lab?.close();
});

const body = new URL('./lab/failover.mjs', import.meta.url).pathname;

it('the backup restores the service from the last acknowledged checkpoint and the same client connection goes on (kernel lab)', async () => {
  const r = await lab!.run({ node: { file: body }, timeoutMs: 540_000 });
  console.log(r.output.split('\n').filter((l) => l.startsWith('FIGURES')).join('\n'));
  expectLabPass(r);
  expect(r.output).toContain('PASS');
}, 720_000);
