/**
 * The native synchronous netlink channel (the package's addon) on this
 * kernel (root, network namespaces; a bfifo stands in for sch_plug): NICs in
 * the ops process's own namespace and in another one. The body
 * (fixtures/native.mjs, built dist) runs under `ip netns exec` so its own
 * namespace is a throwaway one, never the host's.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterEach, expect, it } from 'vitest';
import { RemusError } from '@remus/core';
import { NativeRtnlChannel, loadNativeRtnl, qdiscChangeMessage } from '../src/native.js';
import { createNamespace } from '@remus/test-lab';
import { tryRun } from './helpers.js';

const run = promisify(execFile);
const made: { destroy(): void }[] = [];
/** A fresh namespace owned by this test process (removed after each test, or by the next run if this one was killed). */
function netns(): string {
  const n = createNamespace('rnbnat');
  made.push(n);
  return n.name;
}

afterEach(() => {
  for (const n of made.splice(0)) n.destroy();
});

it('the addon is built by the install step (CI installs compilers)', () => {
  expect(existsSync(new URL('../build/Release/remus_rtnl.node', import.meta.url))).toBe(true);
  expect('missing' in loadNativeRtnl()).toBe(false);
});

it('sends the checkpoint ops of NICs in any namespace through that namespace’s native socket, synchronously, without spawning, with errno and names on failure', async () => {
  const [self, other, guest] = [netns(), netns(), netns()];
  const file = new URL('./fixtures/native.mjs', import.meta.url).pathname;
  const { stdout } = await run('ip', ['netns', 'exec', self, process.execPath, file, self, other, guest], { timeout: 60_000 });
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  expect(line, stdout).toBeDefined();
  expect(JSON.parse(line!.slice(7))).toEqual({
    via: ['native', 'native'],
    socketsPerNamespace: [2, true],
    tcChannels: 0,
    settledWithoutEventLoop: true,
    opSpawns: 0,
    limitsAfterOps: [100000, 100000],
    stats: { epochsClosed: 20, epochsReleased: 20, epochsHeld: 0 },
    afterIfbGone: { code: 'OP_FAILED', errno: 'ENODEV', namesNic: true, namesIfb: true },
    otherStillWorks: true,
    abortedOp: 'ABORTED',
    socketsClosedByCleanup: true,
    ifbsLeft: 0,
  });
});

it('a missing namespace, a missing interface and a closed channel are clear errors, and this thread stays in its own namespace', () => {
  const addon = loadNativeRtnl();
  if ('missing' in addon) throw new Error(addon.missing);
  const before = tryRun('readlink', ['/proc/thread-self/ns/net']).out;
  const e = (() => {
    try {
      new NativeRtnlChannel(addon, 'rnb-nat-no-such-ns');
    } catch (x) {
      return x as RemusError;
    }
    return undefined;
  })();
  expect(e?.code).toBe('OP_FAILED');
  expect(e?.message).toContain('rnb-nat-no-such-ns');
  const other = netns();
  const c = new NativeRtnlChannel(addon, other);
  expect(() => c.ifindex('nope0')).toThrow(/nope0 not found in namespace/);
  expect(c.ifindex('lo')).toBe(1);
  // A change to a qdisc that is not there: the kernel's errno, named.
  expect(() => c.send(qdiscChangeMessage(1, 0x10000, { kind: 'bfifo', options: Buffer.alloc(4) }), 'test change', 500)).toThrow(/refused the qdisc change/);
  c.close();
  c.close();
  expect(() => c.send(Buffer.alloc(16), 'after close', 10)).toThrow(/closed/);
  expect(tryRun('readlink', ['/proc/thread-self/ns/net']).out).toBe(before);
});
