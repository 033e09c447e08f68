/**
 * Failure paths on a real kernel (needs root and network namespaces): a
 * fault injected at each setup step leaves no rule, queue or process behind;
 * a failing ip6tables does the same; a killed buffer process, or a killed
 * Remus process, leaves the guest's output blocked (dropped), not leaking,
 * until teardown or reap.
 */
import { createCheckpointDevices, isRemusError, type CheckpointDevices } from '@remus/core';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { nicNfqueue, SETUP_STEPS, type SetupStep } from '../src/index.js';
import { createNfqueue } from '../src/subkinds.js';
import { boundQueues, createLab, killStrayBufferProcesses, leftovers, remusRules, type Lab } from './netns-lab.js';
import { LineProcess, sh, waitFor } from '@remus/test-lab';

let lab: Lab | undefined;
let layer: CheckpointDevices | undefined;
const cleanups: (() => void)[] = [];

afterEach(async () => {
  await layer?.teardown().catch(() => undefined);
  layer = undefined;
  for (const c of cleanups.splice(0)) c();
  killStrayBufferProcesses();
  lab?.destroy();
  lab = undefined;
});

const device = (l: Lab) => ({ id: 'vif1.0', kind: 'nic', params: { ifname: l.vif, netns: l.host } });

/** Packets counted by our rule in the host's raw PREROUTING (IPv4). */
function ruleHits(l: Lab): number {
  const out = sh('ip', ['netns', 'exec', l.host, 'iptables', '-t', 'raw', '-L', 'PREROUTING', '-v', '-x', '-n']);
  const line = out.split('\n').find((x) => x.includes('NFQUEUE'));
  return line ? Number(line.trim().split(/\s+/)[0]) : -1;
}

describe('nic-nfqueue setup failures leave nothing behind (netns)', () => {
  for (const step of SETUP_STEPS) {
    it(`a fault at setup step "${step}" leaves no rule, queue or buffer process`, async () => {
      // The bridge step only runs for bridge ports; it needs a bridge whose netfilter switch is off.
      lab = createLab(step === 'bridge-netfilter' ? 'bridged' : 'routed');
      const l = lab;
      const seen: SetupStep[] = [];
      layer = createCheckpointDevices({
        ops: [
          createNfqueue(
            {},
            {
              beforeStep: (s) => {
                seen.push(s);
                if (s === step) throw new Error(`injected fault at ${s}`);
              },
            },
          ),
        ],
        devices: [device(l)],
      });
      const err = await layer.setup().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isRemusError(err)).toBe(true);
      expect(String((err as Error).message) + JSON.stringify(err)).toContain(`injected fault at ${step}`);
      expect(seen.at(-1)).toBe(step);
      expect(layer.state).toBe('torn-down');
      layer = undefined;
      expect(leftovers(l)).toEqual([]);
    });
  }

  it('an ip6tables that fails to insert its rule: setup fails, the IPv4 rule and the queue are removed', async () => {
    lab = createLab('routed');
    const l = lab;
    const dir = mkdtempSync(join(tmpdir(), 'nfq-fake-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // A fake only for fault injection: a real ip6tables except that inserts fail.
    const fake = join(dir, 'ip6tables');
    writeFileSync(fake, '#!/bin/sh\nfor a in "$@"; do [ "$a" = "-I" ] && { echo "injected insert failure" >&2; exit 4; }; done\nexec ip6tables "$@"\n');
    writeFileSync(`${fake}-save`, '#!/bin/sh\nexec ip6tables-save "$@"\n');
    chmodSync(fake, 0o755);
    chmodSync(`${fake}-save`, 0o755);
    layer = createCheckpointDevices({ ops: [nicNfqueue({ ip6tables: fake })], devices: [device(l)] });
    await expect(layer.setup()).rejects.toThrow();
    layer = undefined;
    expect(leftovers(l)).toEqual([]);
  });
});

describe('nic-nfqueue teardown failures (netns)', () => {
  it('teardown tries every rule and reports every failure, not only the first', async () => {
    lab = createLab('routed');
    const l = lab;
    const dir = mkdtempSync(join(tmpdir(), 'nfq-fake-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // Fakes only for fault injection: the real tools, except that deletes fail.
    const fakes: Record<string, string> = {};
    for (const tool of ['iptables', 'ip6tables']) {
      const fake = join(dir, tool);
      writeFileSync(fake, `#!/bin/sh\nfor a in "$@"; do [ "$a" = "-D" ] && { echo "injected ${tool} delete failure" >&2; exit 4; }; done\nexec ${tool} "$@"\n`);
      writeFileSync(`${fake}-save`, `#!/bin/sh\nexec ${tool}-save "$@"\n`);
      chmodSync(fake, 0o755);
      chmodSync(`${fake}-save`, 0o755);
      fakes[tool] = fake;
    }
    layer = createCheckpointDevices({ ops: [nicNfqueue({ iptables: fakes['iptables'], ip6tables: fakes['ip6tables'] })], devices: [device(l)] });
    await layer.setup();
    const err = await layer.teardown().then(
      () => undefined,
      (e: unknown) => e,
    );
    layer = undefined;
    expect(isRemusError(err)).toBe(true);
    const text = JSON.stringify(err) + String((err as Error).message);
    expect(text).toContain('injected iptables delete failure');
    expect(text).toContain('injected ip6tables delete failure');
    expect(text).toContain('rules still present after delete');
    // The lab's namespaces take the rules the fakes kept with them (afterEach).
  });
});

describe('nic-nfqueue fails closed (netns)', () => {
  it('a killed buffer process leaves the guest output blocked (held and new packets dropped) until teardown', async () => {
    lab = createLab('routed');
    const l = lab;
    await l.startTraffic();
    layer = createCheckpointDevices({ ops: [nicNfqueue()], devices: [device(l)] });
    await layer.setup();
    await l.send(['held-1', 'held-2']);
    await waitFor(() => [...l.queueTotals().values()].some((n) => n >= 2), 10_000, 'two packets held');
    await layer.postsuspend();
    await layer.preresume();
    const pid = layer.stats()[0]!.stats.bufferPid!;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    // The kernel unbinds the dead socket's queue and drops what it held.
    await waitFor(() => boundQueues(l.host).length === 0, 10_000, 'queue unbound after the kill');
    const hitsBefore = ruleHits(l);
    await l.send(['new-1', 'new-2', 'new-3']);
    await waitFor(() => ruleHits(l) >= hitsBefore + 3, 10_000, 'new packets reached the rule');
    await new Promise((r) => setTimeout(r, 200));
    expect(l.received()).toEqual([]);
    expect(layer.stats()[0]!.stats.bufferAlive).toBe(0);
    // The checkpoint that should release them fails instead.
    await expect(layer.commit()).rejects.toThrow(/buffer process/);
    await layer.teardown();
    layer = undefined;
    expect(leftovers(l)).toEqual([]);
    expect(l.received()).toEqual([]);
    await l.send(['after-teardown']);
    await l.receiver!.waitFor(() => l.received().includes('after-teardown'), 10_000, 'traffic after teardown');
  });

  it('a killed Remus process: its buffer process exits, output stays blocked, reap removes the rules', async () => {
    lab = createLab('routed');
    const l = lab;
    await l.startTraffic();
    const op = `crash${process.pid}`;
    const script = fileURLToPath(new URL('./fixtures/crash-operation.mjs', import.meta.url));
    const remus = new LineProcess(process.execPath, [script, op, l.vif, l.host]);
    cleanups.push(() => remus.stop());
    await remus.waitFor((x) => x.some((s) => s.startsWith('ready')), 20_000, 'operation set up');
    const stats = JSON.parse(remus.lines.find((s) => s.startsWith('ready'))!.slice(6)) as { bufferPid: number };
    await l.send(['held-1']);
    await waitFor(() => [...l.queueTotals().values()].some((n) => n >= 1), 10_000, 'packet held');
    remus.child.kill('SIGKILL');
    // The buffer process sees its stdin close and exits; the kernel drops what was held.
    await waitFor(() => boundQueues(l.host).length === 0, 10_000, 'queue unbound after the crash');
    await waitFor(() => {
      try {
        process.kill(stats.bufferPid, 0);
        return false;
      } catch {
        return true;
      }
    }, 10_000, 'buffer process gone');
    expect(remusRules(l.host)).toHaveLength(2);
    await l.send(['while-crashed']);
    await new Promise((r) => setTimeout(r, 200));
    expect(l.received()).toEqual([]);
    const removed = await nicNfqueue().reap!(op, [device(l)], { signal: new AbortController().signal, checkpoint: 0, epoch: 0, operation: 'reaper' });
    expect(removed).toHaveLength(2);
    expect(leftovers(l)).toEqual([]);
    await l.send(['after-reap']);
    await l.receiver!.waitFor(() => l.received().includes('after-reap'), 10_000, 'traffic after reap');
    expect(l.received()).toEqual(['after-reap']);
  });
});
