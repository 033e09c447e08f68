/**
 * The in-process netlink channel on this kernel (root, network namespaces; a
 * bfifo stands in for sch_plug): NICs in the ops process's own namespace.
 * The body (fixtures/own-ns.mjs, built dist) runs under `ip netns exec` so
 * its own namespace is a throwaway one, never the host's.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, expect, it } from 'vitest';
import { createNamespace } from '@remus/test-lab';

const run = promisify(execFile);
const made: { destroy(): void }[] = [];

afterEach(() => {
  for (const n of made.splice(0)) n.destroy();
});

it('sends the checkpoint ops of own-namespace NICs through one netlink socket, without spawning, with errno and names on failure', async () => {
  const [self, guest] = [createNamespace('rnbnl'), createNamespace('rnbnl')].map((n) => (made.push(n), n.name));
  const file = new URL('./fixtures/own-ns.mjs', import.meta.url).pathname;
  const { stdout } = await run('ip', ['netns', 'exec', self, process.execPath, file, self, guest], { timeout: 60_000 });
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  expect(line).toBeDefined();
  expect(JSON.parse(line!.slice(7))).toEqual({
    viaNetlink: [true, true],
    oneSocket: true,
    ifindexRecorded: [true, true],
    tcChannels: 0,
    opSpawns: 0,
    limitAfterOps: 100000,
    stats: { epochsClosed: 20, epochsReleased: 20, epochsHeld: 0 },
    afterIfbGone: { code: 'OP_FAILED', errno: 'ENODEV', namesNic: true, namesIfb: true },
    otherStillWorks: true,
    abortedOp: 'ABORTED',
    socketClosedByCleanup: true,
    ifbsLeft: 0,
  });
});
