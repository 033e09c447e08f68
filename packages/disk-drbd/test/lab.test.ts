// Kernel lab (QEMU guest with Linux 6.1 and its DRBD 8.4): a real DRBD pair
// (lab/pair.mjs) driven by lab/scenarios.mjs, the built plugin run inside the
// guest; one boot and one run for the whole file, each test asserts on its
// scenario's result. Needs `pnpm lab:setup` and a build.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectLabPass, startLab, type LabSession } from '@remus/kernel-lab';

const SCENARIOS = new URL('../lab/scenarios.mjs', import.meta.url).pathname;
const NAMES = ['up', 'match', 'loop', 'probe', 'checkpoints', 'disconnect', 'down'];

let lab: LabSession | undefined;
/** Each scenario's RESULT, from one Node process in one guest (Node starts slowly there). */
const results = new Map<string, any>();
let output = '';

beforeAll(async () => {
  lab = await startLab({ bootTimeoutMs: 300_000 });
  const r = await lab.run({ node: { file: SCENARIOS, args: NAMES }, timeoutMs: 900_000 });
  output = r.output;
  expectLabPass(r);
  for (const line of r.output.split('\n')) {
    const m = /^RESULT (\w+) (.*)$/.exec(line);
    if (m) results.set(m[1]!, JSON.parse(m[2]!));
  }
}, 1_300_000);

afterAll(async () => {
  await lab?.close();
}, 120_000);

/** One scenario's result; fails with the guest's output when it crashed or is missing. */
function scenario(name: string): any {
  const r = results.get(name);
  if (r === undefined) throw new Error(`scenario ${name} printed no RESULT:\n${output}`);
  if (r?.crashed) throw new Error(`scenario ${name} crashed in the guest:\n${r.crashed}\n${r.procDrbd}`);
  return r;
}

describe('disk-drbd on a real DRBD 8.4 pair (kernel lab)', () => {
  it('sets up the pair: r0 Primary here, r1 its Secondary peer', () => {
    expect(scenario('up').size).toBeGreaterThan(0);
  });

  it('matches the Primary disk by path, by resource and by both', () => {
    const r = scenario('match');
    expect(r.byPath).toEqual({ verdict: true });
    expect(r.byResource).toEqual({ verdict: true });
    expect(r.byBoth).toEqual({ verdict: true });
  });

  it('fails the Secondary minor, an unknown resource and a path/resource mismatch with errors that say what to do', () => {
    const r = scenario('match');
    expect(r.secondary.error.code).toBe('DEVICE_NOT_READY');
    expect(r.secondary.error.message).toMatch(/\/dev\/drbd1 \(resource r1\) is Secondary here .*Fix: make it Primary here with `drbdadm primary r1`/);
    expect(r.unknown.error.code).toBe('DEVICE_NOT_READY');
    expect(r.unknown.error.message).toMatch(/resource nosuch is unknown to the kernel.*drbdadm up nosuch/);
    expect(r.mismatch.error.code).toBe('INVALID_ARGUMENT');
  });

  it('a loop device that is not DRBD is not matched', () => {
    const r = scenario('loop');
    expect(r.verdict).toEqual({ match: false, reason: expect.stringMatching(/not a DRBD device \(major 147\)/) });
  });

  it('checkpoints pass while data is written, the peer holds every write at each checkpoint, teardown leaves the resource as found', () => {
    const r = scenario('checkpoints');
    for (const c of r.checkpoints) console.log(`checkpoint ${c.checkpoint}: barrier ${c.barrierMs.toFixed(1)} ms, requests in flight at the suspend ${c.pendingAtSuspend}, ${c.nonZeroBlocks} blocks written so far`);
    expect(r.checkpoints.length).toBe(8);
    for (const c of r.checkpoints) {
      expect(c.firstDifference, `checkpoint ${c.checkpoint}: backup differs at byte ${c.firstDifference}`).toBe(-1);
      expect(c.line).toMatch(/cs:Connected ro:Primary\/Secondary ds:UpToDate\/UpToDate C/);
    }
    // The writers really wrote: more and more of the disk is non-zero.
    expect(r.checkpoints.at(-1).nonZeroBlocks).toBeGreaterThan(0);
    expect(r.deviceStats[0].stats.checkpoints).toBe(8);
    expect(r.after).toEqual(r.before);
  });

  it('disconnecting the peer fails the next checkpoint with DEVICE_NOT_READY, and teardown changes nothing', () => {
    const r = scenario('disconnect');
    expect(r.line).toMatch(/cs:(WFConnection|StandAlone) ro:Primary\/Unknown/);
    console.log(`after the disconnect: primary ${r.line} | backup ${r.backupLine}`);
    expect(r.error.code).toBe('PHASE_FAILED');
    expect(r.error.failures[0].code).toBe('DEVICE_NOT_READY');
    expect(r.error.failures[0].message).toMatch(
      /DRBD disk \/dev\/drbd0 \(resource r0\) is not Connected to its peer \(cs:(WFConnection|StandAlone).*failed checkpoint 2 when the domain was suspended: the backup's disk does not hold this checkpoint.*Fix: connect it/,
    );
    // Teardown of the failed device changed nothing: still Primary, configuration as it was.
    expect(r.afterTeardown).toEqual(r.beforeTeardown);
    expect(r.afterTeardown[0].state).toMatch(/cs:(WFConnection|StandAlone) ro:Primary\/Unknown/);
  });

  it('the pair is removed at the end', () => {
    expect(scenario('down')).toEqual({});
  });

  it('an operator probe with Xen exit codes decides the match: 0 takes the disk, 4 fails it with the probe\'s words', () => {
    const r = scenario('probe');
    expect(r.primary).toEqual({ verdict: true });
    expect(r.secondary.error.code).toBe('DEVICE_NOT_READY');
    expect(r.secondary.error.message).toMatch(/not Connected or not Primary here for \/dev\/drbd1 \(exit 4\): cs:Connected ro:Secondary\/Primary/);
  });
});
