/**
 * Remus with CRIU in the kernel lab (a Debian 6.1 kernel under QEMU, where
 * Debian's CRIU 3.17 works; needs root and `pnpm lab:setup`). The body is
 * plain JS against this package's dist; see test/lab/failover.mjs for what
 * it asserts: one client TCP connection survives the primary's death with no
 * gap and no repeat in the service's counter, and the faults (dump killed,
 * images damaged in transit, failing restore, second failover). Then the
 * same proof through the product (test/lab/cli-failover.mjs): `remus backup
 * --domain criu`, `remus run` (core's loop, nic-netbuf on the real sch_plug),
 * the primary killed, `remus failover`; output commit checked per reply; and
 * again with `--on-primary-lost failover` (the backup restores by itself).
 * Then `remus demo` itself (test/lab/demo.mjs): on this kernel it shows the
 * CRIU failover after the process-domain demo and leaves nothing. Last,
 * test/lab/probe.sh: the host's criu by itself (check, soft-dirty, dump and
 * restore of a sleep).
 */
import { readFileSync } from 'node:fs';
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

it('through the remus command: remus backup --domain criu, remus run (core loop + nic-netbuf), kill, remus failover; same connection, no gap, no repeat, no reply before its ack (kernel lab)', async () => {
  const r = await lab!.run({ node: { file: new URL('./lab/cli-failover.mjs', import.meta.url).pathname }, timeoutMs: 600_000 });
  console.log(r.output.split('\n').filter((l) => l.startsWith('FIGURES') || l.startsWith('[criu-cli-lab')).join('\n'));
  expectLabPass(r);
  expect(r.output).toContain('PASS');
}, 660_000);

it('through the remus command with automatic failover: remus backup --on-primary-lost failover restores by itself when the primary dies; same connection, no gap, no repeat, no reply before its ack (kernel lab)', async () => {
  const r = await lab!.run({ node: { file: new URL('./lab/cli-failover.mjs', import.meta.url).pathname }, env: { REMUS_CRIU_LAB_AUTO: '1' }, timeoutMs: 600_000 });
  console.log(r.output.split('\n').filter((l) => l.startsWith('FIGURES') || l.startsWith('[criu-cli-lab')).join('\n'));
  expectLabPass(r);
  expect(r.output).toContain('fails over by itself');
  expect(r.output).toContain('PASS');
}, 660_000);

it('remus demo, where CRIU works (this kernel): after the process-domain demo it shows the CRIU failover, one client connection kept, counter continuous, no reply before its ack, nothing left (kernel lab)', async () => {
  const r = await lab!.run({ node: { file: new URL('./lab/demo.mjs', import.meta.url).pathname }, timeoutMs: 600_000 });
  console.log(r.output.split('\n').filter((l) => l.startsWith('FIGURES') || l.startsWith('[criu-demo-lab') || l.includes('CRIU')).join('\n'));
  expectLabPass(r);
  expect(r.output).toContain('CRIU failover: passed');
  expect(r.output).toContain('PASS');
}, 660_000);

// After the end-to-end bodies, in the same guest: the host's criu on the guest's kernel, by itself.
it("the host's criu runs in the lab guest: criu check, soft-dirty, dump and restore of a sleep", async () => {
  const r = await lab!.run({ script: readFileSync(new URL('./lab/probe.sh', import.meta.url).pathname, 'utf8'), timeoutMs: 120_000 });
  console.log(r.output.split('\n').filter((l) => l.startsWith('PROBE')).join('\n'));
  expectLabPass(r);
  expect(r.output).toContain('PROBE_PASS');
  expect(r.output).toMatch(/PROBE mem_dirty_track rc=0/);
}, 300_000);
