// `remus cleanup` against hostile and broken journals (issue 14.1, 14.7): it
// acts only on what the run provably made. Decoys this file makes (a cgroup
// with a process in it, a network namespace with a process in it, processes
// recorded without or with a wrong start time, a plugin in a directory the
// journal names) must all survive. Needs root, the cgroup v1 freezer or v2,
// and network namespaces; everything is removed in afterAll.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { processStart } from '../src/journal.js';
import { createNamespace, netnsList, processAlive, tempDir, tryRun } from '@remus/test-lab';
import { events, journals, remus } from './helpers.js';

const PREFIX = `rmcli${process.pid}`;
const FREEZER = existsSync('/sys/fs/cgroup/freezer/cgroup.procs') ? '/sys/fs/cgroup/freezer' : '/sys/fs/cgroup/unified';
const decoyCgroup = join(FREEZER, `${PREFIX}-decoy`);
let decoy: { readonly name: string; destroy(): void } | undefined;
let decoyNetns: string;
const children: ChildProcess[] = [];
let state: string;
let evil: string;

/** A pid that is certainly dead now (a process that ran and was reaped). */
function deadPid(): number {
  const r = spawnSync('true');
  return r.pid as number;
}

function sleeper(args: string[] = ['sleep', '600']): ChildProcess {
  const c = spawn(args[0] as string, args.slice(1), { stdio: 'ignore', detached: true });
  children.push(c);
  return c;
}

function journal(dir: string, name: string, data: Record<string, unknown>, mode = 0o600): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(data), { mode });
  chmodSync(path, mode);
  return path;
}

function base(operation: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { format: 1, operation, pid: deadPid(), pidStart: '1', command: 'run', startedAt: new Date().toISOString(), plugins: [], devices: [], cgroups: [], netns: [], processes: [], ...extra };
}

let inCgroup: ChildProcess;
let inNetns: ChildProcess;

beforeAll(async () => {
  mkdirSync(decoyCgroup);
  inCgroup = sleeper();
  writeFileSync(join(decoyCgroup, 'cgroup.procs'), String(inCgroup.pid));
  decoy = createNamespace('rmcli');
  decoyNetns = decoy.name;
  inNetns = sleeper(['ip', 'netns', 'exec', decoyNetns, 'sleep', '600']);
  await sleep(200);
});

afterEach(() => {
  rmSync(state, { recursive: true, force: true });
  if (evil) rmSync(evil, { recursive: true, force: true });
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await sleep(100);
  for (const pid of tryRun('ip', ['netns', 'pids', decoyNetns]).out.split('\n').filter((l) => /^\d+$/.test(l))) process.kill(Number(pid), 'SIGKILL');
  decoy?.destroy();
  for (let i = 0; i < 100 && existsSync(decoyCgroup); i++) {
    try {
      rmdirSync(decoyCgroup);
    } catch {
      await sleep(20);
    }
  }
});

describe('remus cleanup with a hostile journal (root)', () => {
  it('refuses cgroups, namespaces and processes the run did not provably make, and loads no plugin from the journal\'s path', async () => {
    state = tempDir('state').dir;
    // A plugin in a directory the journal names: importing it would leave a marker.
    evil = tempDir('evil').dir;
    const marker = join(evil, 'LOADED');
    const pkg = join(evil, 'node_modules', '@remus', 'nic-nfqueue');
    mkdirSync(pkg, { recursive: true });
    writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: '@remus/nic-nfqueue', version: '0.1.0', type: 'module', main: 'index.js', peerDependencies: { '@remus/core': '*' } }));
    writeFileSync(join(pkg, 'index.js'), `import { writeFileSync } from 'node:fs'; writeFileSync(${JSON.stringify(marker)}, 'x'); export const plugin = {};`);
    const noStart = sleeper();
    const wrongStart = sleeper();
    await sleep(100);
    const op = 'rhostile1';
    journal(state, op, base(op, {
      plugins: [{ package: '@remus/nic-nfqueue', from: evil, subkinds: { 'nic-nfqueue': {} } }],
      devices: [{ id: 'd0', kind: 'nic', params: { ifname: 'lo' } }],
      cgroups: [decoyCgroup, FREEZER, '/', join(FREEZER, `remus-${op}`, '..', `${PREFIX}-decoy`)],
      netns: [decoyNetns],
      processes: [
        { pid: noStart.pid, what: 'recorded without a start time' },
        { pid: wrongStart.pid, start: '1', what: 'a later process with the same pid' },
        { pid: process.pid, start: processStart(process.pid), what: 'the test runner itself' },
      ],
    }));
    const r = await remus(['cleanup', '--state-dir', state, '--json']);
    expect(r.code).toBe(1);
    const res = events(r.stdout)[0] as { results: { operation: string; status: string; removed: string[]; errors: string[] }[] };
    const [only] = res.results;
    expect(only).toMatchObject({ operation: op, status: 'failed' });
    const errors = only?.errors.join('\n') ?? '';
    // domain-process's strict cgroup cleanup refuses every path but <freezer root>/remus-<operation>.
    for (const path of [decoyCgroup, FREEZER, '/', join(FREEZER, `remus-${op}`, '..', `${PREFIX}-decoy`)]) {
      expect(errors).toContain(`cgroup ${path}: refusing cgroup ${JSON.stringify(path)}`);
    }
    expect(errors).toMatch(new RegExp(`network namespace ${decoyNetns}: refused: the name does not carry the run's operation`));
    expect(errors).toMatch(/refused: pid \d+ is remus itself or one of its ancestors/);
    expect(only?.removed.join('\n')).toMatch(new RegExp(`left process ${noStart.pid} alone: the journal has no start time`));
    // Every decoy survives; the journal's plugin path was never imported.
    await sleep(100);
    expect(existsSync(decoyCgroup)).toBe(true);
    expect(readFileSync(join(decoyCgroup, 'cgroup.procs'), 'utf8')).toMatch(new RegExp(`^${inCgroup.pid}$`, 'm'));
    expect(processAlive(inCgroup.pid as number)).toBe(true);
    expect(netnsList()).toContain(decoyNetns);
    expect(processAlive(inNetns.pid as number)).toBe(true);
    expect(processAlive(noStart.pid as number)).toBe(true);
    expect(processAlive(wrongStart.pid as number)).toBe(true);
    expect(existsSync(marker)).toBe(false);
    // The journal stays for a human to look at.
    expect(journals(state)).toEqual([`${op}.json`]);
  });

  it('reports a bad journal (null fields, symlink, foreign mode) and skips it; the good one is cleaned', async () => {
    state = tempDir('state').dir;
    journal(state, 'rnulls', { ...base('rnulls'), pid: null, plugins: null, cgroups: [null] });
    journal(state, 'rshared', base('rshared'), 0o666);
    const target = journal(tempDir('elsewhere').dir, 'rlink', base('rlink'));
    symlinkSync(target, join(state, 'rlink.json'));
    writeFileSync(join(state, 'rtrunc.json'), '{"format":1,', { mode: 0o600 });
    journal(state, 'rgood', base('rgood', { processes: [{ pid: deadPid(), start: '123', what: 'gone' }] }));
    const r = await remus(['cleanup', '--state-dir', state]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/rgood: cleaned/);
    expect(r.stdout).toMatch(/rnulls\.json: failed\n {2}error: journal refused: field pid null is not a process id/);
    expect(r.stdout).toMatch(/rshared\.json: failed\n {2}error: journal refused: is writable by others \(mode 666\)/);
    expect(r.stdout).toMatch(/rlink\.json: failed\n {2}error: journal refused: is a symbolic link/);
    expect(r.stdout).toMatch(/rtrunc\.json: failed\n {2}error: journal refused: is not JSON/);
    expect(journals(state).sort()).toEqual(['rlink.json', 'rnulls.json', 'rshared.json', 'rtrunc.json']);
    rmSync(dirname(target), { recursive: true, force: true });
  });
});

describe('the state directory (14.7)', () => {
  it('is refused on /proc or /sys, as a regular file, a symlink or world-writable: exit 2, nothing touched', async () => {
    state = tempDir('state').dir;
    for (const bad of ['/proc', '/proc/self', '/sys/fs/cgroup', `/proc/${PREFIX}`]) {
      const started = Date.now();
      const r = await remus(['cleanup', '--state-dir', bad]);
      expect(r.code, bad).toBe(2);
      expect(r.stderr).toMatch(/\[INVALID_ARGUMENT\] state directory .* (is under \/proc|is under \/sys|pseudo filesystem)/);
      expect(Date.now() - started).toBeLessThan(5000);
    }
    const file = join(state, 'not-a-dir');
    writeFileSync(file, 'x');
    const f = await remus(['cleanup', '--state-dir', file]);
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(/state directory .*not-a-dir is not a directory/);
    expect(f.stdout).not.toMatch(/nothing to clean up/);
    const link = join(state, 'link');
    const target = tempDir('target').dir;
    symlinkSync(target, link);
    expect((await remus(['cleanup', '--state-dir', link])).stderr).toMatch(/is a symbolic link/);
    rmSync(target, { recursive: true, force: true });
    const open = join(state, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const o = await remus(['cleanup', '--state-dir', open]);
    expect(o.code).toBe(2);
    expect(o.stderr).toMatch(/is writable by everyone \(mode 777\); fix: chmod go-w/);
    // remus run refuses it before loading anything or writing a journal.
    const cfg = join(state, 'remus.json');
    writeFileSync(cfg, JSON.stringify({ domain: { type: 'process', command: ['sleep', '1'] } }));
    const run = await remus(['run', '--config', cfg, '--state-dir', '/proc/remus']);
    expect(run.code).toBe(2);
    expect(existsSync('/proc/remus')).toBe(false);
  });
});
