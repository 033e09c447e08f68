// `remus colo side`: the side file and the stdin commands are validated
// before anything is touched (every problem at once, with its path and a
// fix). The command itself runs against real QEMUs and etcd in
// tools/colo-lab's two-host tests, which start both sides with it.
import * as colo from '@remus/colo';
import * as qmp from '@remus/qmp';
import { describe, expect, it } from 'vitest';
import { tempDir } from '@remus/test-lab';
import type { ConfigProblem } from '../src/config.js';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseSideCommand, reprotectFromHook, sideEventText, validateSideFile } from '../src/colo/side.js';
import { remus, writeConfig } from './helpers.js';

const LIBS = { colo, qmp };
const at = (port: number) => ({ host: '10.0.0.1', port });
const PRIMARY_DEVICES = [
  { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(9003), compare: at(9004), primaryIn: { path: '/tmp/x-pri.sock' }, compareOut: '127.0.0.1:9005' } },
  { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: { host: '10.0.0.2', port: 9999 }, export: 'parent0' } },
];

function good(): Record<string, unknown> {
  return {
    role: 'primary',
    host: 'ha',
    peer: 'hb',
    operationId: 'web1',
    qemu: { qmp: '/run/qemu/ha.qmp', qmpEvents: '/run/qemu/ha-events.qmp', pid: process.pid, devices: PRIMARY_DEVICES },
    migrationUri: 'tcp:10.0.0.2:9998',
    etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.11:2379', '10.0.0.12:2379'], prefix: '/remus/web1/colo' },
    epochStore: '/var/lib/remus/web1-epoch.json',
    fence: { tap: 'tap0', bridge: 'br0' },
  };
}

function problems(raw: unknown): ConfigProblem[] {
  try {
    validateSideFile(raw, LIBS, '/x/side.json');
  } catch (e) {
    return ((e as { details?: { problems?: ConfigProblem[] } }).details?.problems ?? []) as ConfigProblem[];
  }
  return [];
}

describe('the side file', () => {
  it('takes a good side file and fills in the defaults', () => {
    const s = validateSideFile(good(), LIBS, '/x/side.json');
    expect(s).toMatchObject({ role: 'primary', host: 'ha', peer: 'hb', operationId: 'web1', migrationUri: 'tcp:10.0.0.2:9998', checkpointDelayMs: 2000, commandTimeoutMs: 10_000, startTimeoutMs: 150_000, statusEveryMs: 0 });
    expect(s.etcd).toEqual({ endpoints: ['10.0.0.10:2379', '10.0.0.11:2379', '10.0.0.12:2379'], prefix: '/remus/web1/colo', ttlSeconds: 2 });
    expect(s.qemu.devices.map((d) => d.kind)).toEqual(['nic', 'disk']);
    expect(s.fence).toEqual({ tap: 'tap0', bridge: 'br0' });
    // A secondary needs no migrationUri; its devices are judged by the secondary's params.
    const sec = {
      ...good(),
      role: 'secondary',
      migrationUri: undefined,
      qemu: { qmp: '/run/qemu/hb.qmp', devices: [{ id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(9003), compare: at(9004) } }, { id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at(9999) } }] },
    };
    expect(validateSideFile(sec, LIBS, '/x/side.json').role).toBe('secondary');
  });

  it('lists every problem at once, each with its path', () => {
    const g = good();
    const bad = {
      ...g,
      role: 'leader',
      peer: 'ha',
      operationId: 'a b',
      qemu: { qmp: 42, pid: -3, devices: [{ id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: 'nowhere' } }] },
      migrationUri: 'ftp://x',
      etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.10:2379', 'nohost'], prefix: 'relative', ttlSeconds: 1 },
      epochStore: 'epoch.json',
      fence: { tap: 'a-name-longer-than-15', bridge: 'br0', extra: 1 },
      hardFence: { command: 'fence hb' },
      colour: 'blue',
    };
    const paths = problems(bad).map((x) => x.path);
    for (const p of ['colour', 'role', 'peer', 'operationId', 'qemu.qmp', 'qemu.pid', 'migrationUri', 'etcd.endpoints[2]', 'etcd.endpoints', 'etcd.prefix', 'etcd.ttlSeconds', 'epochStore', 'fence.extra', 'fence.tap', 'hardFence.command']) {
      expect(paths, p).toContain(p);
    }
    expect(paths.some((p) => p.startsWith('qemu.devices[0].params'))).toBe(true);
  });

  it('refuses a side file that names the same host twice, fewer than three etcd members, or a primary without migrationUri', () => {
    expect(problems({ ...good(), peer: 'ha' })).toEqual([expect.objectContaining({ path: 'peer', message: 'names the same host as "host" (ha)' })]);
    expect(problems({ ...good(), etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.11:2379'], prefix: '/p' } }).map((x) => x.path)).toEqual(['etcd.endpoints']);
    expect(problems({ ...good(), migrationUri: undefined }).map((x) => x.path)).toEqual(['migrationUri']);
  });

  it("takes the watchdog over the side's own QEMU (default @remus/colo's), and refuses none at all", () => {
    expect(validateSideFile(good(), LIBS).watchdog).toEqual(colo.DEFAULT_WATCHDOG);
    expect(validateSideFile({ ...good(), watchdog: { probeTimeoutMs: 5000, misses: 4 } }, LIBS).watchdog).toEqual({ ...colo.DEFAULT_WATCHDOG, probeTimeoutMs: 5000, misses: 4 });
    expect(problems({ ...good(), watchdog: false })).toEqual([expect.objectContaining({ path: 'watchdog', message: 'cannot be false for a side' })]);
    expect(problems({ ...good(), watchdog: { misses: 0 } }).map((x) => x.path)).toEqual(['watchdog.misses']);
  });

  it('refuses a hard fence that is not an absolute executable', () => {
    expect(problems({ ...good(), hardFence: { command: ['fence-host', 'hb'] } }).map((x) => x.path)).toEqual(['hardFence.command[0]']);
    expect(problems({ ...good(), hardFence: { command: ['/nonexistent/fence-host'] } }).map((x) => x.path)).toEqual(['hardFence.command[0]']);
    expect(validateSideFile({ ...good(), hardFence: { command: ['/bin/true'], timeoutMs: 5000 } }, LIBS).hardFence).toEqual({ command: ['/bin/true'], timeoutMs: 5000 });
  });
});

describe('commands on stdin', () => {
  it('takes a reprotect with primary devices and a migration URI', () => {
    expect(parseSideCommand(JSON.stringify({ command: 'reprotect', devices: PRIMARY_DEVICES, migrationUri: 'tcp:10.0.0.2:9998' }), LIBS)).toMatchObject({ command: 'reprotect', migrationUri: 'tcp:10.0.0.2:9998' });
  });

  it('refuses what is not JSON, another command, secondary devices and a bad URI, naming the problem', () => {
    expect(() => parseSideCommand('reprotect now', LIBS)).toThrow(/one JSON object/);
    expect(() => parseSideCommand('{"command":"failover"}', LIBS)).toThrow(/unknown command "failover"/);
    expect(() => parseSideCommand(JSON.stringify({ command: 'reprotect', devices: [{ id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at(9999) } }], migrationUri: 'tcp:10.0.0.2:9998' }), LIBS)).toThrow(/devices\[0\]\.params/);
    expect(() => parseSideCommand(JSON.stringify({ command: 'reprotect', devices: PRIMARY_DEVICES, migrationUri: 'http://x' }), LIBS)).toThrow(/migrationUri: "http:\/\/x" is not a migration URI/);
  });
});

describe('autoReprotect: the command after the side went on alone', () => {
  const event = { type: 'promoted' as const, epoch: 7, why: 'the primary lost the role' };
  /** An executable script in a fresh folder; `body` is shell text of this test only (the product never runs a shell). */
  function hook(body: string): { command: string[]; timeoutMs: number; remove(): void } {
    const dir = tempDir('side-hook');
    const file = join(dir.dir, 'hook.sh');
    writeFileSync(file, `#!/bin/sh\n${body}\n`);
    chmodSync(file, 0o755);
    return { command: [file], timeoutMs: 10_000, remove: dir.remove };
  }

  it('gives the command the side and the event on stdin and in its environment, and takes the reprotect it prints', async () => {
    const out = JSON.stringify({ devices: PRIMARY_DEVICES, migrationUri: 'tcp:10.0.0.1:9998' });
    const h = hook(`cat > "$(dirname "$0")/stdin.json"; echo "$REMUS_COLO_HOST $REMUS_COLO_PEER $REMUS_COLO_EPOCH" > "$(dirname "$0")/env.txt"; echo '${out}'`);
    try {
      const cfg = validateSideFile({ ...good(), host: 'hb', peer: 'ha', autoReprotect: { command: h.command, timeoutMs: h.timeoutMs } }, LIBS);
      expect(cfg.autoReprotect).toEqual({ command: h.command, timeoutMs: 10_000 });
      const cmd = await reprotectFromHook(cfg, cfg.autoReprotect!, event, LIBS, AbortSignal.timeout(20_000));
      expect(cmd).toMatchObject({ command: 'reprotect', migrationUri: 'tcp:10.0.0.1:9998' });
      expect(cmd.devices.map((d) => d.id)).toEqual(['nic0', 'disk0']);
      const dir = dirname(h.command[0]!);
      expect(JSON.parse(readFileSync(join(dir, 'stdin.json'), 'utf8'))).toEqual({ host: 'hb', peer: 'ha', operationId: 'web1', event: 'promoted', epoch: 7, why: 'the primary lost the role' });
      expect(readFileSync(join(dir, 'env.txt'), 'utf8').trim()).toBe('hb ha 7');
    } finally {
      h.remove();
    }
  });

  it('refuses output that is not a usable reprotect, naming the command; a failing command is SCRIPT_FAILED', async () => {
    for (const [body, message] of [
      ['echo not json', /autoReprotect\.command .* is not JSON/],
      [`echo '{"devices":[],"migrationUri":"tcp:10.0.0.1:9998"}'`, /autoReprotect\.command [\s\S]*devices: must be a non-empty array/],
      [`echo '{"devices":${JSON.stringify(PRIMARY_DEVICES)},"migrationUri":"nowhere"}'`, /autoReprotect\.command [\s\S]*migrationUri: "nowhere" is not a migration URI/],
    ] as const) {
      const h = hook(body);
      try {
        const cfg = validateSideFile({ ...good(), autoReprotect: { command: h.command } }, LIBS);
        await expect(reprotectFromHook(cfg, cfg.autoReprotect!, event, LIBS, AbortSignal.timeout(20_000))).rejects.toThrow(message);
      } finally {
        h.remove();
      }
    }
    const failing = hook('echo no spare secondary >&2; exit 3');
    try {
      const cfg = validateSideFile({ ...good(), autoReprotect: { command: failing.command } }, LIBS);
      await expect(reprotectFromHook(cfg, cfg.autoReprotect!, event, LIBS, AbortSignal.timeout(20_000))).rejects.toMatchObject({ code: 'SCRIPT_FAILED' });
    } finally {
      failing.remove();
    }
  });
});

describe('events for people', () => {
  it('says what happened in one line', () => {
    expect(sideEventText('solo', { epoch: 3, why: 'secondary lost', ms: 812.4 })).toBe('serving alone, epoch 3: secondary lost (812 ms)');
    expect(sideEventText('reprotect-failed', { error: { code: 'QMP_ERROR', message: 'chardev exists' } })).toBe('reprotect-failed: chardev exists');
  });
});

describe('remus colo side', () => {
  it('exits 2 on a bad side file, naming each problem, before it touches QMP or etcd', async () => {
    const dir = tempDir('colo-side');
    try {
      const file = writeConfig(dir.dir, 'side.json', { ...good(), peer: 'ha', epochStore: 'x.json' });
      const r = await remus(['colo', 'side', file]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('peer: names the same host as "host" (ha)');
      expect(r.stderr).toContain('epochStore: "x.json" is not an absolute path');
      expect(r.stdout).toBe('');
      const none = await remus(['colo', 'side']);
      expect(none.code).toBe(2);
      expect(none.stderr).toContain('remus colo side takes one side file');
    } finally {
      dir.remove();
    }
  });
});
