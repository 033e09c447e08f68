/**
 * `remus agent` with `service.type: "criu"` across two hosts and a real
 * three-member etcd, in the kernel lab (a Debian 6.1 kernel under QEMU,
 * where Debian's CRIU works; needs root and `pnpm lab:setup`). The body
 * (test/lab/criu-agents.mjs) runs the nemesis lab inside the guest: a
 * service whose counter lives only in memory, dumped with CRIU at every
 * checkpoint and carried to the backup inside the agents' authenticated
 * session, its replies held by nic-netbuf on the real sch_plug. The primary
 * host dies twice (ha, then hb after ha came back): each time the other host
 * restores the same process from its last complete checkpoint; no counter
 * value is answered twice, each connection's counter increases, and the
 * restored service answers only after its host's promotion.
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

it('criu workload: the primary host dies, the backup restores the same process from its last acknowledged CRIU checkpoint and the counter goes on; then back again (kernel lab, real etcd)', async () => {
  const r = await lab!.run({ node: { file: new URL('./lab/criu-agents.mjs', import.meta.url).pathname }, timeoutMs: 600_000 });
  console.log(r.output.split('\n').filter((l) => l.startsWith('FIGURES') || l.includes('ok: ')).join('\n'));
  expectLabPass(r);
  expect(r.output).toContain('hb restored the same process');
  expect(r.output).toContain('ha restored the same process again');
  expect(r.output).toContain('PASS');
}, 660_000);
