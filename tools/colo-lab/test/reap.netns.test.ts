/**
 * As root: labs left by a run that died (its pid gone) are reaped, with the
 * processes inside their namespaces; labs of live runs are left alone.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { procStat } from '@remus/core';
import { waitFor } from '@remus/test-lab';
import { listLabNamespaces, reapStaleLabs } from '../src/index.js';

const made: string[] = [];
afterAll(() => {
  for (const ns of made) spawnSync('ip', ['netns', 'del', ns]);
});

/** A pid that surely belongs to no process any more. */
async function deadPid(): Promise<number> {
  const c = spawn('true');
  await new Promise((r) => c.once('exit', r));
  return c.pid!;
}

describe('reapStaleLabs', () => {
  it('removes namespaces, processes and folders of dead runs, and only those', async () => {
    const dead = await deadPid();
    const stale = `colo-t${dead}-0-h`;
    const live = `colo-t${process.pid}-reap-h`;
    for (const ns of [stale, live]) {
      expect(spawnSync('ip', ['netns', 'add', ns]).status).toBe(0);
      made.push(ns);
    }
    const sleeper = spawn('ip', ['netns', 'exec', stale, 'sleep', '60'], { stdio: 'ignore' });
    const sleeperGone = new Promise((r) => sleeper.once('exit', r));
    await new Promise((r) => setTimeout(r, 200));
    const dir = join(tmpdir(), `colo-t${dead}-0-reaptest`);
    mkdirSync(dir, { recursive: true });

    // Another test file may reap concurrently (it is the same function): judge by what is left.
    const removed = await reapStaleLabs();
    expect(removed).not.toContain(live);
    await sleeperGone;
    const left = await listLabNamespaces('colo-t');
    expect(left).not.toContain(stale);
    expect(left).toContain(live);
    expect(existsSync(dir)).toBe(false);
  });

  it('a lab whose owner was SIGKILLed but not yet reaped (a zombie) is reaped too', async () => {
    // sh backgrounds a sleep and then becomes another sleep by exec: that parent never waits, so the killed child stays a zombie.
    const parent = spawn('sh', ['-c', 'sleep 30 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const owner = await new Promise<number>((resolve, reject) => {
        parent.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
        parent.once('exit', () => reject(new Error('sh exited early')));
      });
      const ns = `colo-t${owner}-0-h`;
      expect(spawnSync('ip', ['netns', 'add', ns]).status).toBe(0);
      made.push(ns);
      process.kill(owner, 'SIGKILL');
      await waitFor(() => procStat(owner)?.state === 'Z', 5000, `process ${owner} to be a zombie`);
      await reapStaleLabs();
      expect(await listLabNamespaces('colo-t')).not.toContain(ns);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});
