// `remus colo` with bad pair files and bad usage: every problem is named by
// its JSON path with a fix, exit 2, and nothing is touched: no journal, no
// control socket, and the QMP socket named in the file never sees a connection.
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { RemusError } from '@remus/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { controlSocketNames, controlSocketPath, requestControl, serveControl, socketLive } from '../src/colo/control.js';
import * as colo from '@remus/colo';
import * as qmp from '@remus/qmp';
import { validatePairConfig } from '../src/colo/pair.js';
import type { ConfigProblem } from '../src/config.js';
import { tempDir } from '@remus/test-lab';
import { remus, writeConfig } from './helpers.js';

const at = (port: number) => ({ host: '127.0.0.1', port });
/** The pair file's params, watchdog defaults and address forms: @remus/colo's and @remus/qmp's own. */
const LIBS = { colo, qmp };

function good(qmp: string): Record<string, unknown> {
  return {
    primary: {
      qmp,
      pid: process.pid,
      devices: [
        { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(9003), compare: at(9004), primaryIn: { path: '/tmp/x-pri.sock' }, compareOut: '127.0.0.1:9005' } },
        { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: at(9999), export: 'parent0' } },
      ],
    },
    secondary: {
      qmp: 'unix:/tmp/sec.qmp',
      devices: [
        { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(9003), compare: at(9004) } },
        { id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at(9999) } },
      ],
    },
    migrationUri: 'tcp:127.0.0.1:9998',
    fence: { bridge: 'br0', primaryTap: 'tap-p', secondaryTap: 'tap-s' },
  };
}

function problems(raw: unknown): ConfigProblem[] {
  try {
    validatePairConfig(raw, LIBS, '/x/web.json');
  } catch (e) {
    return (e as { details: { problems: ConfigProblem[] } }).details.problems;
  }
  throw new Error('pair file was accepted');
}

describe('validatePairConfig', () => {
  it('accepts a good pair file, fills in defaults and describes the fence as ip commands', () => {
    const c = validatePairConfig(good('/tmp/pri.qmp'), LIBS, '/x/web.json');
    expect(c).toMatchObject({ name: 'web', checkpointDelayMs: 2000, commandTimeoutMs: 10_000, watchdog: { intervalMs: 200, probeTimeoutMs: 1500, misses: 3 } });
    expect(c.primary.qmp).toEqual({ path: '/tmp/pri.qmp' });
    expect(c.description.fence).toEqual({
      attach: { primary: ['ip', 'link', 'set', 'tap-p', 'master', 'br0'], secondary: ['ip', 'link', 'set', 'tap-s', 'master', 'br0'] },
      detach: { primary: ['ip', 'link', 'set', 'tap-p', 'nomaster'], secondary: ['ip', 'link', 'set', 'tap-s', 'nomaster'] },
    });
    expect(validatePairConfig({ ...good('/a'), watchdog: false, name: 'db', fence: { netns: 'ns1', bridge: 'b', primaryTap: 'p', secondaryTap: 's' } }, LIBS).description.fence?.detach?.secondary).toEqual([
      'ip', '-n', 'ns1', 'link', 'set', 's', 'nomaster',
    ]);
  });

  it('autoReprotect: an argument vector whose program is an absolute path to an executable; anything else named with a fix', () => {
    const c = validatePairConfig({ ...good('/a'), autoReprotect: { command: [process.execPath, '--x'] } }, LIBS, '/x/web.json');
    expect(c.autoReprotect).toEqual({ command: [process.execPath, '--x'], timeoutMs: 120_000 });
    expect(validatePairConfig(good('/a'), LIBS, '/x/web.json').autoReprotect).toBeUndefined();
    const cases: [unknown, string, RegExp][] = [
      ['/usr/bin/true', 'autoReprotect', /must be an object/],
      [{ command: 'spare.sh --pair web' }, 'autoReprotect.command', /argument vector/],
      [{ command: [] }, 'autoReprotect.command', /argument vector/],
      [{ command: ['spare.sh'] }, 'autoReprotect.command[0]', /not an absolute path/],
      [{ command: ['/nonexistent/spare'] }, 'autoReprotect.command[0]', /not an executable file/],
      [{ command: [new URL(import.meta.url).pathname] }, 'autoReprotect.command[0]', /not an executable file/], // this test file: mode 644
      [{ command: [process.execPath], timeoutMs: -1 }, 'autoReprotect.timeoutMs', /./],
      [{ command: [process.execPath], comand: 1 }, 'autoReprotect.comand', /./],
    ];
    for (const [value, path, message] of cases) {
      const ps = problems({ ...good('/a'), autoReprotect: value });
      expect(ps.map((x) => x.path), JSON.stringify(value)).toEqual([path]);
      expect(ps[0]!.message, JSON.stringify(value)).toMatch(message);
      expect(ps[0]!.fix.length).toBeGreaterThan(5);
    }
  });

  it('reports every problem at once, each with its JSON path and a fix', () => {
    const g = good('/tmp/pri.qmp') as { primary: { devices: { params: Record<string, unknown> }[] }; secondary: Record<string, unknown> };
    const ps = problems({
      ...g,
      checkpointDelay: 100,
      primary: { ...g.primary, pid: 0, devices: [{ id: 'nic0', kind: 'nic', params: { ...g.primary.devices[0]!.params, mirror: 'nowhere', compar: 1 } }, { id: 'disk0', kind: 'dsk' }] },
      secondary: { ...g.secondary, qmp: 42 },
      migrationUri: '127.0.0.1:9998',
      watchdog: { misses: 0 },
      fence: { bridge: 'a-very-long-bridge-name', primaryTap: 'tap-p', secondaryTap: 'tap-p' },
    });
    expect(ps.map((p) => p.path)).toEqual([
      'checkpointDelay',
      'primary.pid',
      'primary.devices[0].params.compar',
      'primary.devices[0].params.mirror',
      'primary.devices[1].kind',
      'secondary.qmp',
      'migrationUri',
      'watchdog.misses',
      'fence.bridge',
      'fence.secondaryTap',
    ]);
    expect(ps[0]?.fix).toBe('did you mean "checkpointDelayMs"?');
    expect(ps[2]?.fix).toBe('did you mean "compare"?');
    expect(ps[4]?.fix).toMatch(/"nic".*"disk"/);
  });

  it('names missing sides, devices and params, and a pid that is not running', () => {
    expect(problems({ migrationUri: 'tcp:a:1' }).map((p) => `${p.path}: ${p.message}`)).toEqual(['primary: is missing', 'secondary: is missing']);
    const g = good('/q') as { primary: Record<string, unknown> };
    expect(problems({ ...g, primary: { ...g.primary, devices: [] } })[0]).toMatchObject({ path: 'primary.devices', message: 'must be a non-empty array' });
    expect(problems({ ...g, primary: { ...g.primary, devices: [{ id: 'd', kind: 'disk', params: { quorum: 'colo-disk0' } }] } }).map((p) => p.path)).toEqual([
      'primary.devices[0].params.nbd',
      'primary.devices[0].params.export',
    ]);
    expect(problems({ ...g, primary: { ...g.primary, pid: 2 ** 22 + 1 } })[0]).toMatchObject({ path: 'primary.pid', message: `process ${2 ** 22 + 1} is not running` });
    expect(problems({ ...g, name: 'a b' })[0]).toMatchObject({ path: 'name' });
  });
});

describe('remus colo with a bad pair file or bad usage (spawned remus)', () => {
  let dir: string;
  let state: string;
  let qmp: Server;
  let qmpPath: string;
  let connections: number;

  beforeEach(async () => {
    dir = tempDir('colo-cfg').dir;
    state = join(dir, 'state');
    qmpPath = join(dir, 'pri.qmp');
    connections = 0;
    // Stands in for the primary's QMP socket: a bad file must not make remus connect.
    qmp = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => qmp.listen(qmpPath, r));
  });
  afterEach(async () => {
    await new Promise<void>((r) => qmp.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });

  const bad = (mutate: (g: Record<string, any>) => void): Record<string, unknown> => {
    const g = good('') as Record<string, any>;
    mutate(g);
    return g;
  };
  const cases: [string, (g: Record<string, any>) => void, RegExp][] = [
    ['a misspelt key', (g) => (g.checkpointDelayMS = 5), /checkpointDelayMS: is not a known key; fix: did you mean "checkpointDelayMs"\?/],
    ['a device param that is not an address', (g) => (g.secondary.devices[0].params.mirror = 'x'), /secondary\.devices\[0\]\.params\.mirror: "x" is not a socket address; fix: /],
    ['a missing migration URI', (g) => delete g.migrationUri, /migrationUri: is missing; fix: where the secondary listens/],
    ['a tap name too long', (g) => (g.fence.secondaryTap = 'tap-with-a-long-name'), /fence\.secondaryTap: .*; fix: an interface name of at most 15 characters/],
  ];

  it.each(cases)('start with %s: exit 2, the path and the fix on stderr, nothing touched', async (_name, mutate, message) => {
    const cfg = bad(mutate);
    (cfg.primary as Record<string, unknown>).qmp = qmpPath;
    const file = writeConfig(dir, 'web.json', cfg);
    const r = await remus(['colo', 'start', file, '--state-dir', state]);
    expect(r.stderr).toMatch(message);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(readdirSafe(state), 'no journal, no control socket').toEqual([]);
    expect(connections, 'no connection to the QMP socket').toBe(0);
  });

  it('--json gives one error event with every problem', async () => {
    const file = writeConfig(dir, 'web.json', bad((g) => ((g.watchdog = { misses: 0 }), (g.primary.pid = -3), (g.primary.qmp = qmpPath))));
    const r = await remus(['colo', 'start', file, '--json', '--state-dir', state]);
    expect(r.code).toBe(2);
    const ev = JSON.parse(r.stdout.trim()) as { type: string; error: { code: string; details: { problems: ConfigProblem[] } } };
    expect(ev).toMatchObject({ type: 'error', error: { code: 'INVALID_ARGUMENT' } });
    expect(ev.error.details.problems.map((p) => p.path)).toEqual(['primary.pid', 'watchdog.misses']);
  });

  it('usage: a missing pair file, a bad --to, no driver to talk to', async () => {
    expect(await remus(['colo', 'start', '--state-dir', state])).toMatchObject({ code: 2, stderr: expect.stringMatching(/give the pair file/) });
    expect(await remus(['colo', 'strat'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown colo command "strat"/) });
    expect(await remus(['colo', 'failover', '--to', 'backup', '--state-dir', state])).toMatchObject({ code: 2, stderr: expect.stringMatching(/--to "backup" is not a side/) });
    expect(await remus(['colo', 'status', '--state-dir', state])).toMatchObject({ code: 2, stderr: expect.stringMatching(/no colo driver runs here .*give the pair file/) });
    const file = writeConfig(dir, 'web.json', bad((g) => (g.primary.qmp = qmpPath)));
    const f = await remus(['colo', 'failover', '--to', 'secondary', file, '--state-dir', state]);
    expect(f.code).toBe(1);
    expect(f.stderr).toMatch(/\[STATE\] no colo driver runs for pair web .*fences the other side/);
    expect(connections).toBe(0);
  });
});

function readdirSafe(d: string): string[] {
  try {
    return readdirSync(d);
  } catch {
    return [];
  }
}

describe('the control socket (in process)', () => {
  let d: string;
  beforeEach(() => {
    d = tempDir('colo-ctl').dir;
  });
  afterEach(() => rmSync(d, { recursive: true, force: true }));

  it('streams events then one result; errors come back as results; a live socket is not taken over, a stale one is', async () => {
    const path = controlSocketPath(d, 'web');
    // A stale socket file (no server) is replaced.
    const stale = createServer();
    await new Promise<void>((r) => stale.listen(path, r));
    stale.close();
    writeFileSync(path, '');
    const server = await serveControl(path, async (req, send) => {
      if (req.command !== 'failover') throw new RemusError('STATE', `no ${req.command} here`);
      send({ type: 'step', side: req.to, step: 'x', ms: 1 });
      send({ type: 'step', side: req.to, step: 'y', ms: 2 });
      return { done: req.to };
    });
    try {
      expect(controlSocketNames(d)).toEqual(['web']);
      expect(await socketLive(path)).toBe(true);
      await expect(serveControl(path, async () => ({}))).rejects.toMatchObject({ code: 'STATE' });
      const seen: unknown[] = [];
      expect(await requestControl(path, { command: 'failover', to: 'secondary' }, (e) => seen.push(e), 5000)).toEqual({ ok: true, done: 'secondary' });
      expect(seen).toEqual([
        { type: 'step', side: 'secondary', step: 'x', ms: 1 },
        { type: 'step', side: 'secondary', step: 'y', ms: 2 },
      ]);
      expect(await requestControl(path, { command: 'stop' }, () => {}, 5000)).toEqual({ ok: false, error: { code: 'STATE', message: 'no stop here' } });
      const raw = await requestControl(path, { command: 'reboot' } as never, () => {}, 5000);
      expect(raw).toMatchObject({ ok: false, error: { code: 'INVALID_ARGUMENT' } });
    } finally {
      await server.close();
    }
    expect(controlSocketNames(d), 'closing removes the socket').toEqual([]);
    await expect(requestControl(path, { command: 'status' }, () => {}, 5000)).rejects.toMatchObject({ code: 'STATE' });
  });
});
