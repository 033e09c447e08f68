// The workload seam: service.type selects the workload (closest-name errors), the counter workload's state records.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessDomain } from '@remus/domain-process';
import { describe, expect, it } from 'vitest';
import { isRemusError } from '@remus/core';
import { MAX_PROCESS_STATE_BYTES, counterWorkload, criuWorkload, processWorkload, validateAgentConfig, workloadFor, type CriuServiceConfig, type ProcessServiceConfig } from '../src/index.js';
import { Frame, encodeFrame, filePayload } from '@remus/domain-criu';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, symlinkSync } from 'node:fs';

const config = (service: unknown) => ({
  cluster: 'c1',
  hosts: [
    { name: 'ha', peer: '10.0.0.1:7790', service: '10.0.0.1:7800' },
    { name: 'hb', peer: '10.0.0.2:7790', service: '10.0.0.2:7800' },
  ],
  etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.11:2379', '10.0.0.12:2379'] },
  tls: { ca: 'tls/ca.crt', cert: 'tls/{host}.crt', key: 'tls/{host}.key' },
  ttlSeconds: 2,
  service,
});

describe('agent workload', () => {
  it('service.type selects the workload; an unknown type is refused naming the closest known one', () => {
    expect(workloadFor(validateAgentConfig(config({ type: 'counter' }), '/etc').service, 'ha').type).toBe('counter');
    let err: unknown;
    try {
      validateAgentConfig(config({ type: 'countr' }), '/etc');
    } catch (e) {
      err = e;
    }
    expect(isRemusError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
    expect((err as Error).message).toContain('service.type "countr" is not known (did you mean "counter"?)');
  });

  it('counter: checkState reads {"counter": N} and refuses anything else', () => {
    const w = counterWorkload();
    expect(w.checkState(Buffer.from('{"counter":41}'))).toEqual({ counter: 41 });
    expect(() => w.checkState(Buffer.from('{"counter":-1}'))).toThrow(/counter/);
    expect(() => w.checkState(Buffer.from('not json'))).toThrow();
  });

  it('counter: a primary started from a state record serves from it, and save sends the next record', async () => {
    const w = counterWorkload();
    const p = await w.startPrimary({
      host: 'ha',
      epoch: 7,
      state: Buffer.from('{"counter":41}'),
      listen: { host: '127.0.0.1', port: 0 },
      onRelease: () => undefined,
      hold: async () => undefined,
      signal: new AbortController().signal,
    });
    try {
      const sent: string[] = [];
      const d = p.domain({ send: (_c, s) => void sent.push(Buffer.from(s).toString('utf8')), waitAck: () => Promise.resolve() });
      await d.save?.({ checkpoint: 1, epoch: 7, signal: new AbortController().signal } as never);
      expect(sent).toEqual(['{"counter":41}']);
      expect(p.output.kind).toBe('agent-output');
    } finally {
      await p.close();
    }
  });
});

describe('service.type "process"', () => {
  const good = { type: 'process', command: ['/usr/bin/node', '/srv/counter.js'], stateFile: 'svc-{host}.json', output: { package: '@remus/nic-nfqueue', subkind: 'nic-nfqueue', params: { ifname: 'vs0' } } };
  const refused = (service: unknown): string => {
    try {
      validateAgentConfig(config(service), '/etc/remus');
    } catch (e) {
      expect(isRemusError(e, 'INVALID_ARGUMENT'), String(e)).toBe(true);
      return (e as Error).message;
    }
    throw new Error('accepted');
  };

  it('takes a command, a state file (relative to the config, {host} kept) and an output subkind with its params', () => {
    const s = validateAgentConfig(config(good), '/etc/remus').service;
    expect(s).toEqual({ type: 'process', command: ['/usr/bin/node', '/srv/counter.js'], stateFile: '/etc/remus/svc-{host}.json', output: { package: '@remus/nic-nfqueue', subkind: 'nic-nfqueue', params: { ifname: 'vs0' }, from: ['/etc/remus'] } });
    expect(workloadFor(s, 'ha').type).toBe('process');
  });

  it('refuses a shell string, a program found by PATH, a bad package name, a missing subkind and unknown fields, naming the fix', () => {
    expect(refused({ ...good, command: 'node /srv/counter.js' })).toContain('service.command must be an argument vector');
    expect(refused({ ...good, command: ['node', '/srv/counter.js'] })).toContain('service.command[0] "node" must be an absolute path');
    expect(refused({ ...good, output: { ...good.output, package: '../evil' } })).toContain('service.output.package "../evil" is not a package name');
    expect(refused({ ...good, output: { package: '@remus/nic-nfqueue' } })).toContain('service.output.subkind must be a non-empty string');
    expect(refused({ ...good, stateFile: '' })).toContain('service.stateFile must be a non-empty string');
    expect(refused({ ...good, colour: 1 })).toContain('service: unknown field "colour"');
    expect(refused({ ...good, output: { ...good.output, params: [1] } })).toContain('service.output.params must be an object');
  });

  it('checkState takes any state file up to its bound and refuses a larger one', () => {
    const w = processWorkload(validateAgentConfig(config(good), '/etc/remus').service as ProcessServiceConfig);
    expect(w.checkState(Buffer.from('{"counter":3}'))).toEqual({ stateBytes: 13 });
    expect(() => w.checkState(Buffer.alloc(MAX_PROCESS_STATE_BYTES + 1))).toThrow(/larger than/);
  });
});

describe('service.type "process": a killed agent\'s leftover', () => {
  it('the next promotion on the host reaps the cgroup (and the command in it) that the killed phase recorded, before anything else', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'remus-agent-reap-'));
    // A primary phase whose agent died: its command (a sleep) still runs, frozen, in its cgroup.
    const left = new ProcessDomain({ command: ['/bin/sleep', '600'], stdio: 'ignore' });
    await left.start();
    await left.suspend({ checkpoint: 1, epoch: 1, signal: AbortSignal.timeout(5000) } as never);
    const pid = left.pid as number;
    const cgroup = left.cgroupPath as string;
    writeFileSync(join(dir, 'svc-ha.json.operation'), JSON.stringify({ operation: left.operation, cgroup }));
    try {
      const w = processWorkload(
        validateAgentConfig(config({ type: 'process', command: ['/bin/true'], stateFile: join(dir, 'svc-{host}.json'), output: { package: '@remus/not-installed-output', subkind: 'x' } }), dir).service as ProcessServiceConfig,
      );
      const start = w.startPrimary({ host: 'ha', epoch: 3, state: undefined, listen: { host: '127.0.0.1', port: 7800 }, onRelease: () => undefined, hold: async () => undefined, signal: AbortSignal.timeout(20_000) });
      // The output plugin is missing (refused, nothing started), but the leftover went first.
      await expect(start).rejects.toMatchObject({ code: 'PLUGIN_NOT_FOUND' });
      expect(existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')).toBe(false);
      expect(existsSync(cgroup)).toBe(false);
      expect(existsSync(join(dir, 'svc-ha.json.operation'))).toBe(false);
    } finally {
      await left.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('service.type "process": the output is held before the command starts', () => {
  it('startPrimary asks the agent to hold the output device (the plugin subkind, its params) before the command exists, and starts it after', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rmagent-hold-'));
    mkdirSync(join(dir, 'node_modules', '@remus'), { recursive: true });
    symlinkSync(join(__dirname, '..', '..', 'nic-nfqueue'), join(dir, 'node_modules', '@remus', 'nic-nfqueue'));
    const record = join(dir, 'svc-ha.json.operation');
    const calls: string[] = [];
    const w = processWorkload(
      validateAgentConfig(config({ type: 'process', command: ['/bin/sleep', '600'], stateFile: join(dir, 'svc-{host}.json'), output: { package: '@remus/nic-nfqueue', subkind: 'nic-nfqueue', params: { ifname: 'vs0' } } }), dir)
        .service as ProcessServiceConfig,
    );
    const p = await w.startPrimary({
      host: 'ha',
      epoch: 3,
      state: Buffer.from('{"counter":5}'),
      listen: { host: '127.0.0.1', port: 7800 },
      onRelease: () => undefined,
      hold: async (ops, params) => {
        calls.push(`hold ${ops.kind} ${JSON.stringify(params)} command started: ${existsSync(record)} state written: ${existsSync(join(dir, 'svc-ha.json'))}`);
      },
      signal: AbortSignal.timeout(20_000),
    });
    try {
      expect(calls).toEqual(['hold nic {"ifname":"vs0"} command started: false state written: false']);
      expect(existsSync(record)).toBe(true);
      expect(p.output.name).toBe('nic-nfqueue');
    } finally {
      await p.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('service.type "criu"', () => {
  const good = { type: 'criu', command: ['/usr/bin/python3', '/srv/counter.py'], netns: 'svc-{host}', output: { package: '@remus/nic-netbuf', subkind: 'nic-netbuf', params: { ifname: 'vs0' } } };
  const refused = (service: unknown): string => {
    try {
      validateAgentConfig({ ...config(service), stateDir: 'state/{host}' }, '/etc/remus');
    } catch (e) {
      expect(isRemusError(e, 'INVALID_ARGUMENT'), String(e)).toBe(true);
      return (e as Error).message;
    }
    throw new Error('accepted');
  };
  /** One checkpoint's record as the primary's CRIU domain sends it. */
  const record = (n: number, parent: number | null, files: Record<string, string>, damage = false): Buffer => {
    const hash = createHash('sha256');
    const out = [encodeFrame(Frame.BEGIN, n, Buffer.from(JSON.stringify({ parent, epoch: 3 })))];
    for (const [name, text] of Object.entries(files)) {
      const p = filePayload(name, Buffer.from(text));
      hash.update(p);
      out.push(encodeFrame(Frame.FILE, n, damage ? Buffer.concat([p.subarray(0, -1), Buffer.from('!')]) : p));
    }
    out.push(encodeFrame(Frame.END, n, hash.digest()));
    return Buffer.concat(out);
  };

  it('takes a command, the service namespace, a work directory (default <stateDir>/criu) and an output subkind; workloadFor picks it', () => {
    const s = validateAgentConfig({ ...config(good), stateDir: 'state/{host}' }, '/etc/remus').service as CriuServiceConfig;
    expect(s).toEqual({ type: 'criu', command: good.command, netns: 'svc-{host}', workDir: '/etc/remus/state/{host}/criu', dumpArgs: [], output: { ...good.output, from: ['/etc/remus'] } });
    expect(workloadFor(s, 'ha').type).toBe('criu');
    const t = validateAgentConfig(config({ ...good, workDir: '/srv/img/{host}', criuPath: '/usr/sbin/criu', dumpArgs: ['--ext-unix-sk'], fullEvery: 10 }), '/etc/remus').service;
    expect(t).toMatchObject({ workDir: '/srv/img/{host}', criuPath: '/usr/sbin/criu', dumpArgs: ['--ext-unix-sk'], fullEvery: 10 });
  });

  it('refuses a shell string, a relative program, a namespace that is not a name, a relative criu, dump arguments that are not options, a bad fullEvery and unknown fields', () => {
    expect(refused({ ...good, command: 'python3 /srv/counter.py' })).toContain('service.command must be an argument vector');
    expect(refused({ ...good, command: ['python3', '/srv/c.py'] })).toContain('service.command[0] "python3" must be an absolute path');
    expect(refused({ ...good, netns: '../../proc/1/ns/net' })).toContain('service.netns "../../proc/1/ns/net" must be a network namespace name');
    expect(refused({ ...good, criuPath: 'criu' })).toContain('service.criuPath "criu" must be an absolute path');
    expect(refused({ ...good, dumpArgs: ['-t', '1'] })).toContain('service.dumpArgs must be criu dump options');
    expect(refused({ ...good, dumpArgs: '--ext-unix-sk' })).toContain('service.dumpArgs must be criu dump options');
    expect(refused({ ...good, fullEvery: 0 })).toContain('service.fullEvery 0 must be a whole number');
    expect(refused({ ...good, stateFile: 'x' })).toContain('service: unknown field "stateFile"');
    expect(refused({ ...good, output: undefined })).toContain('service.output');
  });

  it('backup: checkState stores each record as the restore point (an increment over the last one), refuses a damaged one, an empty one and an increment over anything else; the host is not promoted from a record it does not hold', async () => {
    const root = mkdtempSync(join(tmpdir(), 'rmagent-criu-'));
    try {
      const s = validateAgentConfig({ ...config({ ...good, workDir: join(root, '{host}') }) }, root).service as CriuServiceConfig;
      const w = criuWorkload(s, 'hb');
      expect(w.maxStateBytes).toBeGreaterThan(MAX_PROCESS_STATE_BYTES);
      expect(w.checkState(record(1, null, { 'core-1.img': 'core', 'pages-1.img': 'pages' }))).toEqual({ criuCheckpoint: 1, criuBytes: 9, incremental: false });
      expect(w.checkState(record(2, 1, { 'pages-1.img': 'more' }))).toEqual({ criuCheckpoint: 2, criuBytes: 4, incremental: true });
      expect(() => w.checkState(record(3, 2, { 'pages-1.img': 'x' }, true))).toThrow(/checksum/);
      expect(() => w.checkState(record(5, 1, { 'pages-1.img': 'x' }))).toThrow(/send a full dump/);
      expect(() => w.checkState(Buffer.alloc(0))).toThrow(/empty/);
      expect(() => w.checkState(Buffer.from('not a record at all'))).toThrow();
      const rx = readdirSync(join(root, 'hb')).filter((e) => e.startsWith('rx-'));
      expect(rx).toHaveLength(1);
      expect(readFileSync(join(root, 'hb', rx[0] as string, '2', 'parent', 'core-1.img'), 'utf8')).toBe('core');
      // Another workload object (a restarted agent) holds no chain: promotion from a state it did not store is refused, nothing started.
      const fresh = criuWorkload(s, 'hb');
      let err: unknown;
      try {
        await fresh.startPrimary({ host: 'hb', epoch: 4, state: Buffer.from('x'), listen: { host: '127.0.0.1', port: 7800 }, onRelease: () => undefined, hold: async () => undefined, signal: new AbortController().signal });
      } catch (e) {
        err = e;
      }
      expect(isRemusError(err, 'STATE'), String(err)).toBe(true);
      expect((err as Error).message).toContain('no complete checkpoint');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
