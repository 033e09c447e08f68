// Needs root and a cgroup freezer (v1 at /sys/fs/cgroup/freezer and v2 at the
// hybrid /sys/fs/cgroup/unified on this host). Every cgroup and process a test
// makes is removed in afterEach.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createCheckpointDevices, pollUntil, processAlive, runCheckpointLoop, sleep, type DomainStepContext } from '@remus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { BackupServer, cgroupOf, detectFreezer, processDomain, reapCgroup, releaseCgroup, type ProcessDomain } from '../src/index.js';

const domains: ProcessDomain[] = [];
const children: ChildProcess[] = [];
let seq = 0;
const op = (): string => `dptest${process.pid}x${seq++}`;
const ctx = (checkpoint = 1): DomainStepContext => ({ signal: AbortSignal.timeout(5000), checkpoint, epoch: 0 });

// A process that prints a growing counter every 2 ms.
const TICKER = ['node', '-e', 'let i=0; setInterval(() => process.stdout.write(`${i++}\\n`), 2)'];

/** Waits (up to 10 s) until `cond` holds; TIMEOUT otherwise. */
async function until(cond: () => boolean): Promise<void> {
  await pollUntil(cond, { what: 'the condition', timeoutMs: 10_000, intervalMs: 10 });
}

/** Names of the files this process has open under `prefix` (a cgroup path, or a path prefix), sorted. */
function openInto(prefix: string): string[] {
  const names: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // closed meanwhile (the fd readdir itself used)
    }
    if (target.startsWith(prefix)) names.push(target.slice(target.lastIndexOf('/') + 1));
  }
  return names.sort();
}

/** True while `pid` runs (a zombie is not alive). */
const alive = (pid: number): boolean => processAlive(pid);

afterEach(async () => {
  for (const d of domains.splice(0)) await d.stop().catch(() => undefined);
  // Each child leads its own process group (detached): kill the group, so a backgrounded `sleep` goes too.
  for (const c of children.splice(0)) {
    try {
      process.kill(-(c.pid as number), 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  for (const root of ['/sys/fs/cgroup/freezer', '/sys/fs/cgroup/unified']) {
    for (const name of readdirSync(root).filter((n) => n.startsWith(`remus-dptest${process.pid}`))) {
      await reapCgroup(`${root}/${name}`);
    }
  }
});

describe.each(['v1', 'v2'] as const)('process domain with the cgroup %s freezer', (version) => {
  it('starts the command inside its own cgroup, children included', async () => {
    const d = processDomain({ command: ['sh', '-c', 'sleep 30 & sleep 30'], cgroup: version, operation: op(), stdio: 'ignore' });
    domains.push(d);
    await d.start();
    expect(d.cgroupVersion).toBe(version === 'v1' ? 1 : 2);
    expect(existsSync(d.cgroupPath as string)).toBe(true);
    await sleep(100);
    expect(d.pids.length).toBeGreaterThanOrEqual(2);
    expect(d.pids).toContain(d.pid);
  });

  it('suspend stops the processes from running and resume lets them run again', async () => {
    const d = processDomain({ command: TICKER, stdio: ['ignore', 'pipe', 'inherit'], cgroup: version, operation: op(), ack: { type: 'immediate' } });
    domains.push(d);
    let lines = 0;
    await d.start();
    const stdout = d.stdout;
    expect(stdout).toBeDefined();
    stdout?.on('data', (b: Buffer) => (lines += b.toString().split('\n').length - 1));
    // Node may take a while to start on a loaded host: wait for its output.
    await until(() => lines > 5);
    await d.suspend(ctx());
    await sleep(30);
    const frozenAt = lines;
    await sleep(200);
    expect(lines).toBe(frozenAt);
    await d.resume(ctx());
    await until(() => lines > frozenAt + 5);
    expect(lines).toBeGreaterThan(frozenAt + 5);
  });

  it('stop kills the command and removes the cgroup', async () => {
    const d = processDomain({ command: ['sh', '-c', 'sleep 30 & sleep 30'], cgroup: version, operation: op(), stdio: 'ignore' });
    domains.push(d);
    await d.start();
    await sleep(50);
    const path = d.cgroupPath as string;
    const pids = d.pids;
    await d.suspend(ctx());
    await d.stop();
    expect(existsSync(path)).toBe(false);
    for (const p of pids) expect(alive(p)).toBe(false);
    await d.stop();
  });

  it('keeps only the freezer files of its cgroup open while it runs, and closes them at stop and after a failed start', async () => {
    const d = processDomain({ command: ['sleep', '30'], cgroup: version, operation: op(), stdio: 'ignore', ack: { type: 'immediate' } });
    domains.push(d);
    await d.start();
    const path = d.cgroupPath as string;
    const open = openInto(path);
    // v1: freezer.state (written and read); v2: cgroup.freeze (written) and cgroup.events (read).
    expect(open).toEqual(version === 'v1' ? ['freezer.state'] : ['cgroup.events', 'cgroup.freeze']);
    for (let i = 1; i <= 20; i++) {
      await d.suspend(ctx(i));
      await d.resume(ctx(i));
    }
    expect(openInto(path)).toEqual(open);
    // The pid list is read afresh, not through a kept file: a process added now is seen now.
    const extra = spawn('sleep', ['30'], { stdio: 'ignore', detached: true });
    children.push(extra);
    await sleep(50);
    writeFileSync(join(path, 'cgroup.procs'), String(extra.pid));
    expect(d.pids).toContain(extra.pid);
    await d.stop();
    expect(openInto(path)).toEqual([]);
    expect(existsSync(path)).toBe(false);

    // A start that fails after the cgroup was made (its signal already aborted: the wait for the command to join fails) closes them too.
    const badOp = op();
    const bad = processDomain({ command: ['sleep', '30'], cgroup: version, operation: badOp, stdio: 'ignore', ack: { type: 'immediate' } });
    domains.push(bad);
    await expect(bad.start(AbortSignal.abort())).rejects.toThrow();
    expect(openInto(`${dirname(path)}/remus-${badOp}`)).toEqual([]);
    expect(existsSync(`${dirname(path)}/remus-${badOp}`)).toBe(false);
  });

  it('protects an existing process tree and gives it back alive at stop', async () => {
    const c = spawn('sh', ['-c', 'sleep 30 & wait'], { stdio: 'ignore', detached: true });
    children.push(c);
    await sleep(100);
    const h = detectFreezer(version);
    const before = cgroupOf(c.pid as number, h);
    const d = processDomain({ pid: c.pid as number, cgroup: version, operation: op() });
    domains.push(d);
    await d.start();
    expect(d.pids.length).toBe(2);
    await d.suspend(ctx());
    await d.resume(ctx());
    const path = d.cgroupPath as string;
    await d.stop();
    expect(existsSync(path)).toBe(false);
    expect(c.exitCode).toBeNull();
    expect(cgroupOf(c.pid as number, h)).toBe(before);
  });
});

describe('process domain and the backup', () => {
  it('save sends the hook state; waitAck resolves only after the backup received it', async () => {
    const backup = await BackupServer.listen({ host: '127.0.0.1', port: 0 });
    try {
      const seen: number[][] = [];
      const d = processDomain({
        command: ['sleep', '30'],
        stdio: 'ignore',
        operation: op(),
        ack: { type: 'remote', address: backup.address },
        save: ({ pids, checkpoint }) => {
          seen.push([...pids]);
          return `state ${checkpoint}`;
        },
      });
      domains.push(d);
      await d.start();
      await d.suspend(ctx(1));
      await d.save(ctx(1));
      await d.resume(ctx(1));
      await d.waitAck(ctx(1));
      expect(backup.stats.acked).toBe(1);
      expect(backup.latest.toString()).toBe('state 1');
      expect(seen[0]).toContain(d.pid);
    } finally {
      await backup.close();
    }
  });

  it('waitAck fails when the backup goes away', async () => {
    const backup = await BackupServer.listen({ host: '127.0.0.1', port: 0 });
    const d = processDomain({ command: ['sleep', '30'], stdio: 'ignore', operation: op(), ack: { type: 'remote', address: backup.address } });
    domains.push(d);
    await d.start();
    await backup.close();
    await sleep(50);
    await expect(async () => {
      await d.save(ctx(1));
      await d.waitAck(ctx(1));
    }).rejects.toThrow(/backup/);
  });

  it('runs a real checkpoint loop with the local backup', async () => {
    const d = processDomain({ command: ['sleep', '30'], stdio: 'ignore', operation: op() });
    domains.push(d);
    await d.start();
    const devices = createCheckpointDevices({ ops: [], devices: [] });
    await devices.setup();
    const r = await runCheckpointLoop({ devices, domain: d, intervalMs: 5, maxCheckpoints: 10 });
    expect(r.checkpoints).toBe(10);
  });
});

describe('process domain failures', () => {
  it('suspend fails with DOMAIN_FAILED once the command has exited', async () => {
    const d = processDomain({ command: ['true'], stdio: 'ignore', operation: op() });
    domains.push(d);
    await d.start().catch(() => undefined);
    await d.exited;
    await expect(d.suspend(ctx())).rejects.toMatchObject({ code: expect.stringMatching(/DOMAIN_FAILED|STATE/) });
  });

  it('rejects bad options before touching anything', () => {
    expect(() => processDomain({})).toThrow(/exactly one/);
    expect(() => processDomain({ command: [] })).toThrow(/non-empty/);
    expect(() => processDomain({ command: ['no-such-program-remus'] })).toThrow(/not found/);
    expect(() => processDomain({ pid: 1 })).toThrow(/> 1/);
    expect(() => processDomain({ command: ['true'], operation: 'bad op' })).toThrow(/operation id/);
  });

  it('reapCgroup kills frozen processes and removes the cgroup', async () => {
    const d = processDomain({ command: ['sleep', '30'], stdio: 'ignore', operation: op() });
    domains.push(d);
    await d.start();
    await d.suspend(ctx());
    const path = d.cgroupPath as string;
    const lines = await reapCgroup(path);
    expect(lines.some((l) => l.startsWith('removed cgroup'))).toBe(true);
    expect(existsSync(path)).toBe(false);
    expect(await reapCgroup(path)).toEqual([]);
  });

  it('releaseCgroup thaws the members, moves them to the parent alive and removes the cgroup', async () => {
    const c = spawn('sleep', ['30'], { stdio: 'ignore', detached: true });
    children.push(c);
    const d = processDomain({ pid: c.pid as number, operation: op() });
    domains.push(d);
    await d.start();
    await d.suspend(ctx());
    const path = d.cgroupPath as string;
    const lines = await releaseCgroup(path);
    expect(lines).toContain(`moved process ${c.pid} back to cgroup ${dirname(path)}`);
    expect(existsSync(path)).toBe(false);
    expect(alive(c.pid as number)).toBe(true);
    expect(await releaseCgroup(path)).toEqual([]);
  });
});

describe('the freeze keeper (cgroup v1)', () => {
  it('an empty frozen child keeps the freezer key on: the domain still freezes and thaws, and stop removes both', async () => {
    const d = processDomain({ command: ['sleep', '30'], stdio: 'ignore', cgroup: 'v1', operation: op(), ack: { type: 'immediate' } });
    domains.push(d);
    await d.start();
    const path = d.cgroupPath as string;
    const keeper = `${path}/freeze-keeper`;
    expect(readFileSync(`${keeper}/freezer.state`, 'utf8').trim()).toBe('FROZEN');
    expect(readFileSync(`${keeper}/cgroup.procs`, 'utf8')).toBe(''); // holds no process
    const pid = d.pid as number;
    await d.suspend(ctx());
    expect(readFileSync(`${path}/freezer.state`, 'utf8').trim()).toBe('FROZEN');
    await d.resume(ctx());
    expect(readFileSync(`${path}/freezer.state`, 'utf8').trim()).toBe('THAWED');
    expect(readFileSync(`${keeper}/freezer.state`, 'utf8').trim()).toBe('FROZEN'); // the domain's thaw leaves the keeper frozen
    await d.stop();
    expect(existsSync(keeper)).toBe(false);
    expect(existsSync(path)).toBe(false);
    expect(alive(pid)).toBe(false);
  });

  it('a v2 domain has no keeper', async () => {
    const d = processDomain({ command: ['sleep', '30'], stdio: 'ignore', cgroup: 'v2', operation: op(), ack: { type: 'immediate' } });
    domains.push(d);
    await d.start();
    expect(readdirSync(d.cgroupPath as string)).not.toContain('freeze-keeper');
  });
});
