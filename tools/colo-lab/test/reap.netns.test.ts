/**
 * As root: labs left by a run that died (its pid gone) are reaped, with the
 * processes inside their namespaces; labs of live runs are left alone.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
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
});
