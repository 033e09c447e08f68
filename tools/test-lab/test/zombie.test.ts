// Zombie-aware liveness (kernel-lab's stale-folder sweep uses it), against a real zombie and a real live process (no QEMU needed).
import { spawn } from 'node:child_process';
import { expect, it } from 'vitest';
import { processAlive } from '../src/index.js';

it('a SIGKILLed process that its parent has not reaped (a zombie) counts as gone; a live one as alive, a reused pid not', async () => {
  // sh backgrounds a sleep, then becomes `sleep 30` by exec: that parent never waits, so the killed child stays a zombie.
  const parent = spawn('sh', ['-c', 'sleep 30 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const childPid = await new Promise<number>((resolve, reject) => {
      parent.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
      parent.once('exit', () => reject(new Error('sh exited early')));
    });
    expect(processAlive(childPid)).toBe(true);
    const start = (await import('node:fs')).readFileSync(`/proc/${childPid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19];
    expect(processAlive(childPid, start)).toBe(true);
    expect(processAlive(childPid, '1')).toBe(false); // another start time: a reused pid
    process.kill(childPid, 'SIGKILL');
    for (let i = 0; i < 50; i++) {
      const state = (await import('node:fs')).readFileSync(`/proc/${childPid}/stat`, 'utf8').split(') ')[1]![0];
      if (state === 'Z') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await import('node:fs')).readFileSync(`/proc/${childPid}/stat`, 'utf8').split(') ')[1]![0]).toBe('Z');
    expect(processAlive(childPid)).toBe(false);
    expect(processAlive(2 ** 22 + 7)).toBe(false); // no such pid
  } finally {
    parent.kill('SIGKILL');
  }
});
