// The shared test set-up against real namespaces, veth pairs and processes.
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { childProcesses, createHostPair, freePorts, netnsList, ownedName, processAlive, sh, sweepStale, tryRun, waitFor, type HostPair } from '../src/index.js';

const made: HostPair[] = [];
afterEach(() => {
  for (const p of made.splice(0)) p.destroy();
});

describe('host pairs', () => {
  it('joins a host and a guest namespace with addressed veth pairs that carry traffic, and destroy removes both', () => {
    const p = createHostPair({ prefix: 'rtl', nics: 2, net: 78 });
    made.push(p);
    expect(netnsList()).toEqual(expect.arrayContaining([p.host, p.guest]));
    expect(p.nics).toEqual(['vh0', 'vh1']);
    const r = tryRun('ip', ['netns', 'exec', p.guest, 'busybox', 'ping', '-c', '1', '-W', '2', p.hostIp(1)]);
    expect(r.status, r.out).toBe(0);
    p.destroy();
    p.destroy(); // idempotent
    expect(netnsList()).not.toContain(p.host);
    expect(netnsList()).not.toContain(p.guest);
  });

  it("a dead owner's namespaces are swept; a live owner's (this process) are kept", () => {
    const mine = createHostPair({ prefix: 'rtl' });
    made.push(mine);
    // A namespace named as if owned by a process that is gone (pid 1, another start time).
    const stale = `rtl1s999999999x1-h`;
    sh('ip', ['netns', 'add', stale]);
    try {
      expect(sweepStale('rtl')).toEqual([stale]);
      expect(netnsList()).toContain(mine.host);
    } finally {
      tryRun('ip', ['netns', 'del', stale]);
    }
    expect(ownedName('rtl')).toMatch(new RegExp(`^rtl${process.pid}s\\d+x\\d+$`));
    expect(() => ownedName('Bad_Prefix')).toThrow(/prefix/);
  });
});

describe('processes', () => {
  it('children are listed by name; a killed one is gone once reaped or a zombie', async () => {
    const c = spawn('sleep', ['30']);
    await waitFor(() => childProcesses('sleep').includes(c.pid!), 2000, 'sleep to start');
    expect(processAlive(c.pid!)).toBe(true);
    c.kill('SIGKILL');
    await waitFor(() => !processAlive(c.pid!), 2000, 'sleep to die');
    expect(childProcesses('sleep')).not.toContain(c.pid);
  });

  it('waitFor times out naming what it waited for', async () => {
    await expect(waitFor(() => false, 50, 'the moon', () => 'still night')).rejects.toThrow(/the moon.*still night/);
  });

  it('freePorts gives distinct bindable ports', async () => {
    const ports = await freePorts(3);
    expect(new Set(ports).size).toBe(3);
    for (const p of ports) expect(p).toBeGreaterThan(0);
  });
});
