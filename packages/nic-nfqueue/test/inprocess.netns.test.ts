/**
 * A NIC in the caller's own namespace is buffered in the caller's process (no
 * buffer process): the operation runs inside the lab's host namespace (the
 * layer-driver fixture), so its NIC has no `netns`. Output commit holds as
 * with a buffer process, nothing is left after teardown, and a killed
 * operation fails closed (needs root).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { LineProcess, waitFor } from '@remus/test-lab';
import { nicNfqueue } from '../src/index.js';
import { boundQueues, createLab, killStrayBufferProcesses, leftovers, remusRules, type Lab } from './netns-lab.js';

const DRIVER = fileURLToPath(new URL('./fixtures/layer-driver.mjs', import.meta.url));

let lab: Lab | undefined;
let driver: LineProcess | undefined;

afterEach(() => {
  driver?.stop();
  driver = undefined;
  killStrayBufferProcesses();
  lab?.destroy();
  lab = undefined;
});

interface Answer {
  readonly op: string;
  readonly ok: boolean;
  readonly error?: string;
  readonly stats?: Record<string, number>;
}

/** Starts the driver in the host namespace; resolves with its pid and operation id. */
async function startDriver(l: Lab, inProcess: boolean): Promise<{ pid: number; operation: string }> {
  driver = new LineProcess('ip', ['netns', 'exec', l.host, process.execPath, DRIVER, l.vif, inProcess ? '1' : '0']);
  await driver.waitFor((lines) => lines.some((x) => x.includes('"ready"')), 10_000, 'layer driver ready');
  return JSON.parse(driver.lines.find((x) => x.includes('"ready"'))!) as { pid: number; operation: string };
}

/** Sends one request to the driver and returns its answer; throws on a refusal. */
async function ask(op: string): Promise<Answer> {
  const d = driver!;
  const seen = d.lines.length;
  d.write(JSON.stringify({ op }));
  await d.waitFor((lines) => lines.slice(seen).some((x) => x.startsWith(`{"op":"${op}"`)), 20_000, `answer to ${op}`);
  const a = JSON.parse(d.lines.slice(seen).find((x) => x.startsWith(`{"op":"${op}"`))!) as Answer;
  if (!a.ok) throw new Error(`${op} failed: ${a.error}`);
  return a;
}

/** Pids of the live children of `pid` whose command line names the buffer process. */
function bufferChildrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid && readFileSync(`/proc/${e}/cmdline`, 'utf8').includes('buffer-process.js')) out.push(Number(e));
    } catch {
      // It ended while we looked.
    }
  }
  return out;
}

function held(l: Lab): number {
  return [...l.queueTotals().values()].reduce((a, b) => a + b, 0);
}

describe('nic-nfqueue buffers a NIC of its own namespace in-process (netns)', () => {
  for (const inProcess of [true, false]) {
    it(`holds epoch N until commit N, in order, and leaves nothing (${inProcess ? 'in-process, the default' : 'inProcess: false: a buffer process'})`, async () => {
      // IPv4 only: exact counts (a dual-stack guest's neighbour discovery is held too).
      lab = createLab('routed', { ipv6: false });
      const l = lab;
      await l.startTraffic();
      const { pid } = await startDriver(l, inProcess);
      const setup = await ask('setup');
      const children = bufferChildrenOf(pid);
      if (inProcess) {
        expect(setup.stats?.['bufferPid']).toBe(pid);
        expect(children).toEqual([]);
      } else {
        expect(children).toHaveLength(1);
        expect(setup.stats?.['bufferPid']).toBe(children[0]);
      }

      const e1 = ['e1-1', 'e1-2', 'e1-3', 'e1-4', 'e1-5', 'e1-6'];
      await l.send(e1);
      await waitFor(() => held(l) >= 6, 10_000, 'epoch 1 queued in the kernel');
      await ask('postsuspend');
      await ask('preresume');
      const e2 = ['e2-1', 'e2-2', 'e2-3'];
      await l.send(e2);
      await waitFor(() => held(l) >= 9, 10_000, 'epoch 2 queued in the kernel');
      await new Promise((r) => setTimeout(r, 150));
      expect(l.received()).toEqual([]);

      await ask('commit');
      await l.receiver!.waitFor(() => l.received().length >= 6, 10_000, 'epoch 1 after commit 1');
      await new Promise((r) => setTimeout(r, 150));
      expect(l.received()).toEqual(e1);
      expect(held(l)).toBe(3);

      await ask('postsuspend');
      await ask('preresume');
      const c2 = await ask('commit');
      await l.receiver!.waitFor(() => l.received().length >= 9, 10_000, 'epoch 2 after commit 2');
      expect(l.received()).toEqual([...e1, ...e2]);
      expect(c2.stats).toMatchObject({ released: 9, held: 0, dropped: 0, bufferAlive: 1 });

      await ask('teardown');
      expect(leftovers(l)).toEqual([]);
      expect(bufferChildrenOf(pid)).toEqual([]);
      await l.send(['after']);
      await l.receiver!.waitFor(() => l.received().includes('after'), 10_000, 'unbuffered packet after teardown');
    });
  }

  it('fails closed when the operation is killed: held and new output is dropped until reap removes the rules', async () => {
    lab = createLab('routed', { ipv6: false });
    const l = lab;
    await l.startTraffic();
    const { pid, operation } = await startDriver(l, true);
    await ask('setup');
    await l.send(['held-1', 'held-2']);
    await waitFor(() => held(l) >= 2, 10_000, 'output queued in the kernel');
    process.kill(pid, 'SIGKILL');
    await waitFor(() => boundQueues(l.host).length === 0, 10_000, 'the queue unbound by the kernel when its socket closed');
    await l.send(['new-1']);
    await new Promise((r) => setTimeout(r, 300));
    expect(l.received()).toEqual([]);
    expect(remusRules(l.host).length).toBeGreaterThan(0);

    const removed = await nicNfqueue().reap!(operation, [{ id: 'vif', kind: 'nic', params: { ifname: l.vif, netns: l.host } }], {
      signal: new AbortController().signal,
      checkpoint: 0,
      epoch: 0,
      operation: 'reaper',
    });
    expect(removed.length).toBeGreaterThanOrEqual(2);
    expect(leftovers(l)).toEqual([]);
    await l.send(['after-reap']);
    await l.receiver!.waitFor(() => l.received().includes('after-reap'), 10_000, 'unbuffered packet after reap');
    expect(l.received()).toEqual(['after-reap']);
  });
});
