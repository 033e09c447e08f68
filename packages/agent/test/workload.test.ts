// The workload seam: service.type selects the workload (closest-name errors), the counter workload's state records.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessDomain } from '@remus/domain-process';
import { describe, expect, it } from 'vitest';
import { isRemusError } from '@remus/core';
import { MAX_PROCESS_STATE_BYTES, counterWorkload, processWorkload, validateAgentConfig, workloadFor, type ProcessServiceConfig } from '../src/index.js';

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
    expect(workloadFor(validateAgentConfig(config({ type: 'counter' }), '/etc').service).type).toBe('counter');
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
    expect(workloadFor(s).type).toBe('process');
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
      const start = w.startPrimary({ host: 'ha', epoch: 3, state: undefined, listen: { host: '127.0.0.1', port: 7800 }, onRelease: () => undefined, signal: AbortSignal.timeout(20_000) });
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
