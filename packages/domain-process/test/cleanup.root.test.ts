// Needs root and the cgroup freezers of this host (v1 /sys/fs/cgroup/freezer,
// v2 /sys/fs/cgroup/unified). Issue 14 item 1 (domain-process side) and item 6:
// cleanup touches only cgroups exactly <freezer root>/remus-<operation>;
// decoy cgroups, directories and processes this test makes survive. Every
// cgroup, directory and process made here is removed in afterEach.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pollUntil } from '@remus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { ProcessErrors, cleanupOperationCgroup, processDomain, processStartTime, reapCgroup, releaseCgroup, setFrozen } from '../src/index.js';

const V1 = '/sys/fs/cgroup/freezer';
const V2 = '/sys/fs/cgroup/unified';
const tag = `rmbackup${process.pid}`;
const children: ChildProcess[] = [];
const dirs: string[] = [];
const cgroups: string[] = [];

afterEach(async () => {
  const pids: number[] = [];
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    if (c.pid !== undefined) pids.push(c.pid);
  }
  // A killed child leaves its cgroup only once it is reaped: wait for that before removing the cgroups.
  await pollUntil(() => pids.every((p) => processStartTime(p) === undefined), { what: 'the test processes to be gone', timeoutMs: 10_000, intervalMs: 5 });
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  for (const g of cgroups.splice(0).reverse()) {
    if (!existsSync(g)) continue;
    const v2 = existsSync(join(g, 'cgroup.freeze'));
    writeFileSync(join(g, v2 ? 'cgroup.freeze' : 'freezer.state'), v2 ? '0' : 'THAWED');
    await pollUntil(
      () => {
        try {
          rmdirSync(g);
          return true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
          if ((e as NodeJS.ErrnoException).code === 'EBUSY') return false;
          throw e;
        }
      },
      { what: `removing test cgroup ${g}`, timeoutMs: 10_000, intervalMs: 10 },
    );
  }
});

/** A sleeping process in cgroup `g` (made here), as a decoy. */
async function decoyIn(g: string): Promise<ChildProcess> {
  if (!existsSync(g)) {
    mkdirSync(g);
    cgroups.push(g);
  }
  const c = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.push(c);
  await pollUntil(() => c.pid !== undefined, { what: 'the decoy to start', timeoutMs: 5000, intervalMs: 5 });
  writeFileSync(join(g, 'cgroup.procs'), String(c.pid));
  return c;
}

const alive = (pid: number): boolean => processStartTime(pid) !== undefined;
const state = (g: string): string =>
  existsSync(join(g, 'freezer.state')) ? readFileSync(join(g, 'freezer.state'), 'utf8').trim() : readFileSync(join(g, 'cgroup.events'), 'utf8').includes('frozen 1') ? 'FROZEN' : 'THAWED';

describe('cleanup acts only on <freezer root>/remus-<operation>', () => {
  it.each([
    ['the freezer root itself', V1],
    ['the v2 root', V2],
    ['the file system root', '/'],
    ['a decoy cgroup not named remus-*', `${V1}/decoy-${tag}`],
    ['a dotdot path through a remus- name', `${V1}/remus-x/../decoy-${tag}`],
    ['a nested remus- cgroup', `${V1}/decoy-${tag}/remus-${tag}`],
    ['another controller', `/sys/fs/cgroup/memory/remus-${tag}`],
    ['a relative path', `remus-${tag}`],
  ])('refuses %s, touching nothing', async (_what, path) => {
    const decoy = await decoyIn(`${V1}/decoy-${tag}`);
    const operation = path.endsWith(`remus-${tag}`) ? tag : 'x';
    for (const mode of ['reap', 'release'] as const) {
      await expect(cleanupOperationCgroup({ operation, path, mode })).rejects.toMatchObject({ code: ProcessErrors.CGROUP_NOT_OURS });
    }
    await expect(reapCgroup(path)).rejects.toMatchObject({ code: ProcessErrors.CGROUP_NOT_OURS });
    await expect(releaseCgroup(path)).rejects.toMatchObject({ code: ProcessErrors.CGROUP_NOT_OURS });
    await expect(setFrozen(path, true)).rejects.toMatchObject({ code: ProcessErrors.CGROUP_NOT_OURS });
    expect(alive(decoy.pid as number)).toBe(true);
    expect(state(`${V1}/decoy-${tag}`)).toBe('THAWED');
    expect(existsSync(`${V1}/decoy-${tag}`)).toBe(true);
  });

  it('refuses a plain directory named remus-<op> and writes no freezer.state into it', async () => {
    const d = mkdtempSync(join(tmpdir(), 'remus-cleanup-'));
    dirs.push(d);
    const g = join(d, `remus-${tag}`);
    mkdirSync(g);
    writeFileSync(join(g, 'cgroup.procs'), String(process.pid));
    await expect(cleanupOperationCgroup({ operation: tag, path: g, mode: 'reap' })).rejects.toMatchObject({ code: ProcessErrors.CGROUP_NOT_OURS });
    expect(readdirSync(g)).toEqual(['cgroup.procs']);
  });

  it('refuses a symlink named like an operation cgroup under /tmp pointing at the freezer root', async () => {
    const d = mkdtempSync(join(tmpdir(), 'remus-cleanup-'));
    dirs.push(d);
    symlinkSync(V1, join(d, `remus-${tag}`));
    await expect(cleanupOperationCgroup({ operation: tag, path: join(d, `remus-${tag}`), mode: 'reap' })).rejects.toMatchObject({
      code: ProcessErrors.CGROUP_NOT_OURS,
    });
  });

  it("refuses another operation's cgroup", async () => {
    const g = `${V1}/remus-${tag}b`;
    const decoy = await decoyIn(g);
    await expect(cleanupOperationCgroup({ operation: `${tag}a`, path: g, mode: 'reap' })).rejects.toMatchObject({ code: ProcessErrors.CGROUP_NOT_OURS });
    expect(alive(decoy.pid as number)).toBe(true);
  });

  it.each([V1, V2])('reaps exactly %s/remus-<operation>: its members die, a decoy elsewhere lives', async (root) => {
    const g = `${root}/remus-${tag}r`;
    const member = await decoyIn(g);
    const decoy = await decoyIn(`${V1}/decoy-${tag}`);
    const lines = await cleanupOperationCgroup({ operation: `${tag}r`, path: g, mode: 'reap' });
    expect(lines).toContain(`killed process ${member.pid} in cgroup ${g}`);
    expect(lines).toContain(`removed cgroup ${g}`);
    expect(existsSync(g)).toBe(false);
    await pollUntil(() => !alive(member.pid as number), { what: 'the member to die', timeoutMs: 5000, intervalMs: 5 });
    expect(alive(decoy.pid as number)).toBe(true);
    expect(await cleanupOperationCgroup({ operation: `${tag}r`, path: g, mode: 'reap' })).toEqual([]);
  });

  it('releases exactly remus-<operation>: its members live on in the root', async () => {
    const g = `${V1}/remus-${tag}l`;
    const member = await decoyIn(g);
    writeFileSync(join(g, 'freezer.state'), 'FROZEN');
    const lines = await cleanupOperationCgroup({ operation: `${tag}l`, path: g, mode: 'release' });
    expect(lines).toContain(`moved process ${member.pid} back to cgroup ${V1}`);
    expect(existsSync(g)).toBe(false);
    expect(alive(member.pid as number)).toBe(true);
  });

  it('processStartTime: the start time of a live process, nothing once it is gone (so no kill)', async () => {
    expect(processStartTime(process.pid)).toMatch(/^\d+$/);
    const c = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(c);
    const pid = c.pid as number;
    const start = processStartTime(pid);
    expect(start).toMatch(/^\d+$/);
    expect(Number(start)).toBeGreaterThanOrEqual(Number(processStartTime(process.pid)));
    c.kill('SIGKILL');
    await pollUntil(() => processStartTime(pid) === undefined, { what: 'the process to be gone', timeoutMs: 5000, intervalMs: 5 });
    expect(processStartTime(2 ** 22 + 1)).toBeUndefined();
    expect(processStartTime(-1)).toBeUndefined();
  });
});

describe('item 6: remus never protects itself or an ancestor', () => {
  it.each([
    ['remus itself', () => process.pid],
    ['its parent', () => process.ppid],
  ])('refuses %s with INVALID_ARGUMENT before any cgroup is made', (_what, pid) => {
    const before = [V1, V2].flatMap((r) => readdirSync(r).filter((n) => n.startsWith('remus-')));
    expect(() => processDomain({ pid: pid(), operation: `${tag}s` })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', details: expect.objectContaining({ reason: 'pid-is-remus' }) }));
    const after = [V1, V2].flatMap((r) => readdirSync(r).filter((n) => n.startsWith('remus-')));
    expect(after).toEqual(before);
  });
});
