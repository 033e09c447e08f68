// The one /proc/<pid>/stat reader: hostile command names (as text and as real processes), zombies, reused pids.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { liveStartTime, parseProcStat, pollUntil, procStat, processAlive } from '../src/index.js';

/** A stat line as the kernel writes it: 52 fields, comm in parentheses, newline at the end. */
function statLine(pid: number, comm: string, state: string, ppid: number, startTime: number): string {
  const after = [state, ppid, pid, pid, 0, -1, 4194304, 144, 0, 0, 0, 3, 1, 0, 0, 20, 0, 1, 0, startTime];
  while (after.length < 50) after.push(0);
  return `${pid} (${comm}) ${after.join(' ')}\n`;
}

const HOSTILE = [
  'sleep',
  'two words',
  'a) Z 1 2 (b', // a fake state and ppid inside the name
  ')',
  '((',
  ') R 99 ',
  'x\ny) S 7',
  '',
  '0 1 2 3 4 5 6',
];

describe('parseProcStat', () => {
  it.each(HOSTILE)('reads the fields after the command name %j, whatever it holds', (comm) => {
    expect(parseProcStat(statLine(4242, comm, 'S', 17, 123456))).toEqual({ pid: 4242, comm, state: 'S', ppid: 17, startTime: '123456', rtPriority: 0, policy: 0 });
    expect(parseProcStat(statLine(4242, comm, 'Z', 1, 9))).toMatchObject({ state: 'Z', ppid: 1, startTime: '9' });
  });

  it('reads the real-time priority and policy (fields 40 and 41), and leaves them out of a line cut short', () => {
    const fields = statLine(9, 'rt) x', 'S', 1, 5).trimEnd().split(' ');
    const at = fields.indexOf('x)') + 1; // field 3 (the state) is the first after the command name
    fields[at + 37] = '10';
    fields[at + 38] = '1';
    expect(parseProcStat(`${fields.join(' ')}\n`)).toMatchObject({ comm: 'rt) x', startTime: '5', rtPriority: 10, policy: 1 });
    const short = statLine(9, 'p', 'S', 1, 5).split(' ').slice(0, 30).join(' ');
    const parsed = parseProcStat(short);
    expect(parsed).toEqual({ pid: 9, comm: 'p', state: 'S', ppid: 1, startTime: '5' });
  });

  it('keeps a start time beyond 2^53 exact (text, not a float)', () => {
    const line = `7 (p) R 1 ${Array(17).fill('0').join(' ')} 123456789012345678901 0\n`;
    expect(parseProcStat(line)?.startTime).toBe('123456789012345678901');
  });

  it('refuses text that is not a stat line', () => {
    for (const text of ['', '\n', 'garbage', '12 sleep S 1', '12 (sleep S 1', 'x (sleep) S 1 2', '12 (sleep) SS 1', '12 (sleep) S one', '12 (sleep) S 1 2 3']) {
      expect(parseProcStat(text), JSON.stringify(text)).toBeUndefined();
    }
  });
});

describe('procStat, processAlive, liveStartTime (real processes)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'remus-proc-'));
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads this process: its parent and a start time that stays the same', () => {
    const s = procStat(process.pid);
    expect(s).toMatchObject({ pid: process.pid, ppid: process.ppid });
    expect(s?.startTime).toMatch(/^\d+$/);
    expect(liveStartTime(process.pid)).toBe(s?.startTime);
    expect(processAlive(process.pid)).toBe(true);
    expect(processAlive(process.pid, s?.startTime)).toBe(true);
    expect(processAlive(process.pid, String(Number(s?.startTime) + 1))).toBe(false); // another process under a reused pid
  });

  // The kernel takes the command name from the executable's file name: a symlink to sleep with a hostile name makes one.
  it.each(['a) Z 1 (b', 'x\ny) S 7', ') R 99 (( '])('reads a real process whose command name is %j', async (comm) => {
    const link = join(dir, comm.replace(/\//g, '_'));
    symlinkSync('/bin/sleep', link);
    const child = spawn(link, ['30'], { stdio: 'ignore' });
    children.push(child);
    const pid = child.pid!;
    const s = await pollUntil(() => {
      const r = procStat(pid);
      return r?.comm === comm ? r : undefined; // until the exec is done
    }, { what: `${JSON.stringify(comm)} to run`, timeoutMs: 5000, intervalMs: 5 });
    expect(s).toMatchObject({ pid, comm, state: expect.stringMatching(/^[RSD]$/), ppid: process.pid });
    expect(processAlive(pid, s.startTime)).toBe(true);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(procStat(pid)).toBeUndefined(); // reaped by node
    expect(processAlive(pid)).toBe(false);
    expect(liveStartTime(pid)).toBeUndefined();
  });

  it('a SIGKILLed process its parent has not reaped (a zombie) is read, but counts as gone', async () => {
    // sh backgrounds a sleep, then becomes `sleep 30` by exec: that parent never waits, so the killed child stays a zombie.
    const parent = spawn('sh', ['-c', 'sleep 30 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(parent);
    const pid = await new Promise<number>((resolve, reject) => {
      parent.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
      parent.once('exit', () => reject(new Error('sh exited early')));
    });
    const start = liveStartTime(pid);
    expect(start).toMatch(/^\d+$/);
    expect(processAlive(pid, start)).toBe(true);
    process.kill(pid, 'SIGKILL');
    const zombie = await pollUntil(() => (procStat(pid)?.state === 'Z' ? procStat(pid) : undefined), {
      what: 'the killed sleep to be a zombie',
      timeoutMs: 5000,
      intervalMs: 5,
    });
    expect(zombie).toMatchObject({ pid, ppid: parent.pid, startTime: start });
    expect(processAlive(pid)).toBe(false);
    expect(processAlive(pid, start)).toBe(false);
    expect(liveStartTime(pid)).toBeUndefined();
  });

  it('no such pid, or not a pid at all: undefined and not alive', () => {
    for (const pid of [2 ** 22 + 7, 0, -1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 2]) {
      expect(procStat(pid)).toBeUndefined();
      expect(processAlive(pid)).toBe(false);
      expect(liveStartTime(pid)).toBeUndefined();
    }
  });
});
