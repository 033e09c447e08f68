// Options are checked before anything is contacted; each error names the option and the fix.
import { describe, expect, it } from 'vitest';
import { etcdArbiter, parseEndpoint } from '../src/index.js';

const base = { endpoints: ['10.0.0.1:2379', '10.0.0.2:2379', '10.0.0.3:2379'], prefix: '/remus/c1/primary', host: 'hostA' };

describe('etcd arbiter options', () => {
  it('derives margins and intervals from the TTL', () => {
    const a = etcdArbiter({ ...base, ttlSeconds: 2 });
    expect(a.settings).toMatchObject({ ttlSeconds: 2, marginMs: 250, promotionMarginMs: 250, keepAliveIntervalMs: 667, callTimeoutMs: 500, pollIntervalMs: 200 });
    expect(etcdArbiter({ ...base }).settings).toMatchObject({ ttlSeconds: 5, marginMs: 500, keepAliveIntervalMs: 1667, callTimeoutMs: 1000 });
    expect(a.role()).toEqual({ held: false, epoch: 0, deadline: -Infinity });
    expect(a.name).toBe('etcd 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 /remus/c1/primary');
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['a TTL below etcd minimum', { ttlSeconds: 1 }, /ttlSeconds 1 must be a whole number of seconds from 2/],
    ['a fractional TTL', { ttlSeconds: 2.5 }, /ttlSeconds/],
    ['a margin of half the TTL', { ttlSeconds: 2, marginMs: 1000 }, /marginMs 1000 must be >= 0 and below half the TTL/],
    ['keepalives rarer than half the TTL', { ttlSeconds: 2, keepAliveIntervalMs: 1500 }, /keepAliveIntervalMs/],
    ['a prefix ending in a slash', { prefix: '/remus/' }, /prefix "\/remus\/" must start with "\/", not end with "\/"/],
    ['a relative prefix', { prefix: 'remus' }, /prefix/],
    ['a host name with a space', { host: 'host A' }, /host "host A" must be a host name/],
    ['no endpoints', { endpoints: [] }, /at least one "host:port"/],
    ['an endpoint without a port', { endpoints: ['10.0.0.1'] }, /is not host:port; write e.g. "10.0.0.1:2379"/],
    ['a TLS endpoint', { endpoints: ['https://10.0.0.1:2379'] }, /TLS to etcd is not supported yet/],
  ];
  for (const [what, o, message] of bad) {
    it(`refuses ${what}`, () => {
      expect(() => etcdArbiter({ ...base, ...o } as never)).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(message) }));
    });
  }

  it('parses endpoints with or without http://', () => {
    expect(parseEndpoint('http://10.0.0.1:2379/')).toBe('10.0.0.1:2379');
    expect(parseEndpoint('[::1]:2379')).toBe('[::1]:2379');
    expect(parseEndpoint('etcd-1.example:2379')).toBe('etcd-1.example:2379');
  });
});
