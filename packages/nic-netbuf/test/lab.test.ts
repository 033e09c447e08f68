/**
 * nic-netbuf with the real sch_plug, in the kernel lab (a Debian 6.1 kernel
 * under QEMU; needs root and `pnpm lab:setup`). The bodies are plain JS run
 * inside the guest against this package's built dist; see
 * test/lab/plug-epochs.mjs for what each asserts.
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

const body = new URL('./lab/plug-epochs.mjs', import.meta.url).pathname;

it('holds each epoch until its commit and releases exactly it (NIC in the namespace of the ops process, native channel)', async () => {
  const r = await lab!.run({ node: { file: body }, timeoutMs: 240_000 });
  expectLabPass(r);
  expect(r.output).toContain('PASS');
}, 300_000);

it('holds each epoch until its commit and releases exactly it (NIC in another network namespace, native channel opened there)', async () => {
  const r = await lab!.run({ node: { file: body, args: ['--netns'] }, timeoutMs: 240_000 });
  expectLabPass(r);
  expect(r.output).toContain('PASS');
}, 300_000);

it('holds each epoch until its commit and releases exactly it (NIC in another network namespace, event-driven channel through tc -n)', async () => {
  const r = await lab!.run({ node: { file: body, args: ['--netns', '--channel-event'] }, timeoutMs: 240_000 });
  expectLabPass(r);
  expect(r.output).toContain('PASS');
}, 300_000);
