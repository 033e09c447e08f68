import { describe, expect, it } from 'vitest';
import { isRemusError } from '@remus/core';
import { pairOf, validateAgentConfig } from '../src/index.js';

const good = () => ({
  cluster: 'c1',
  hosts: [
    { name: 'ha', peer: '10.0.0.1:7790', service: '10.0.0.1:7800' },
    { name: 'hb', peer: '10.0.0.2:7790', service: '10.0.0.2:7800' },
  ],
  etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.11:2379', '10.0.0.12:2379'] },
  tls: { ca: 'tls/ca.crt', cert: 'tls/{host}.crt', key: 'tls/{host}.key' },
  ttlSeconds: 2,
});

function refused(value: unknown, text: string): void {
  let err: unknown;
  try {
    validateAgentConfig(value, '/etc/remus');
  } catch (e) {
    err = e;
  }
  expect(isRemusError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
  expect((err as Error).message).toContain(text);
}

describe('agent config', () => {
  it('accepts a pair and fills the defaults (prefix, margin, paths relative to the file)', () => {
    const c = validateAgentConfig(good(), '/etc/remus');
    expect(c.etcd.prefix).toBe('/remus/c1/primary');
    expect(c.marginMs).toBe(250);
    expect(c.tls.cert).toBe('/etc/remus/tls/{host}.crt');
    expect(pairOf(c, 'hb').peer.name).toBe('ha');
  });

  it('runs the primary loop at normal priority unless told otherwise, and refuses an unknown mode', () => {
    expect(validateAgentConfig(good(), '/etc/remus').realtime).toBe('off');
    expect(validateAgentConfig({ ...good(), realtime: 'auto' }, '/etc/remus').realtime).toBe('auto');
    expect(validateAgentConfig({ ...good(), realtime: 'on' }, '/etc/remus').realtime).toBe('on');
    refused({ ...good(), realtime: true }, 'realtime true is not one of auto, on, off');
  });

  it('refuses a config naming the same host twice', () => {
    const c = good();
    c.hosts[1]!.name = 'ha';
    refused(c, 'names host "ha" twice');
  });

  it('refuses two hosts on one peer address', () => {
    const c = good();
    c.hosts[1]!.peer = '10.0.0.1:7790';
    refused(c, 'same peer address');
  });

  it('refuses fewer than three etcd members (a third voter decides)', () => {
    refused({ ...good(), etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.11:2379'] } }, 'at least three members');
  });

  it('refuses a hard fence given as a shell string', () => {
    refused({ ...good(), hardFence: { command: 'ipmitool -H bmc power off' } }, 'argument vector');
  });

  it('refuses unknown fields with the closest name', () => {
    refused({ ...good(), ttlSecond: 2 }, 'did you mean "ttlSeconds"');
  });

  it('refuses a TTL below etcd\'s minimum and a margin of half the TTL or more', () => {
    refused({ ...good(), ttlSeconds: 1 }, 'from 2');
    refused({ ...good(), marginMs: 1000 }, 'below half the TTL');
  });

  it('refuses a loopback peer address (the other host cannot reach it)', () => {
    const c = good();
    c.hosts[0]!.peer = '127.0.0.1:7790';
    refused(c, 'loopback');
  });

  it('names the hosts when --host is not one of them', () => {
    expect(() => pairOf(validateAgentConfig(good()), 'hc')).toThrow(/hosts: ha, hb/);
  });
});
