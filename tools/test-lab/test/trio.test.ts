// The three-namespace lab, the owned namespace and LineProcess, against real namespaces and processes.
import { afterEach, describe, expect, it } from 'vitest';
import { createNamespace, createTrio, LineProcess, netnsList, sh, tryRun, type Trio } from '../src/index.js';

const made: Trio[] = [];
afterEach(() => {
  for (const t of made.splice(0)) t.destroy();
});

const ping = (ns: string, addr: string): { status: number; out: string } =>
  tryRun('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', '1', '-W', '2', addr]);

describe('trio: guest, host, client', () => {
  it('routed: the guest reaches the client through the host on IPv4 and IPv6, and destroy removes all three namespaces', () => {
    const t = createTrio({ prefix: 'rtl', ifPrefix: 'tl', net: 79 });
    made.push(t);
    expect(netnsList()).toEqual(expect.arrayContaining([t.guest, t.host, t.client]));
    expect([t.clientV4, t.clientV6, t.hostV4]).toEqual(['10.79.2.2', 'fd79:2::2', '10.79.1.1']);
    for (const n of [t.vif, t.guestIf, t.hostToClient, t.clientIf]) expect(n.length).toBeLessThanOrEqual(15);
    expect(ping(t.guest, t.clientV4).status, ping(t.guest, t.clientV4).out).toBe(0);
    expect(ping(t.guest, t.clientV6).status, ping(t.guest, t.clientV6).out).toBe(0);
    expect(sh('ip', ['-n', t.host, '-o', 'link', 'show', 'dev', t.vif])).toContain(t.vif);
    t.destroy();
    t.destroy(); // idempotent
    for (const ns of [t.guest, t.host, t.client]) expect(netnsList()).not.toContain(ns);
  });

  it('bridged without IPv6: guest and client share the host bridge; the guest has no IPv6 at all', () => {
    const t = createTrio({ prefix: 'rtl', ifPrefix: 'tl', topology: 'bridged', ipv6: false, net: 79 });
    made.push(t);
    expect(t.bridge).toBeDefined();
    expect(sh('ip', ['-n', t.host, '-o', 'link', 'show', 'master', t.bridge!])).toContain(t.vif);
    expect(ping(t.guest, t.clientV4).status).toBe(0);
    expect(sh('ip', ['-n', t.guest, '-6', 'addr', 'show'])).toBe('');
  });

  it('a bad interface prefix is refused before anything is made', () => {
    const before = netnsList().length;
    expect(() => createTrio({ prefix: 'rtl', ifPrefix: 'TooLong' })).toThrow(/ifPrefix/);
    expect(netnsList().length).toBe(before);
  });
});

describe('owned namespace and line process', () => {
  it('createNamespace makes one namespace with loopback up; destroy removes it', () => {
    const n = createNamespace('rtl');
    try {
      expect(sh('ip', ['-n', n.name, '-o', 'link', 'show', 'lo'])).toMatch(/UP|UNKNOWN/);
    } finally {
      n.destroy();
    }
    expect(netnsList()).not.toContain(n.name);
  });

  it('LineProcess collects lines, answers stdin, and its wait times out naming what it waited for', async () => {
    const p = new LineProcess(process.execPath, ['-e', "process.stdin.on('data', (b) => process.stdout.write('got ' + b));console.log('ready')"]);
    try {
      await p.waitFor((l) => l.includes('ready'), 10_000, 'ready');
      p.write('x');
      await p.waitFor((l) => l.includes('got x'), 10_000, 'echo');
      await expect(p.waitFor((l) => l.includes('never'), 100, 'a line never')).rejects.toThrow(/a line never.*got x/);
    } finally {
      p.stop();
    }
    await new Promise((r) => p.child.once('close', r));
    expect(p.child.signalCode ?? p.child.exitCode).not.toBeNull();
  });
});
