// One socket address type for every package.
import { describe, expect, it } from 'vitest';
import { RemusError, formatSocketAddress, isLocalAddress, isLoopbackHost, parseSocketAddress } from '../src/index.js';

describe('parseSocketAddress', () => {
  it('reads every text and object form', () => {
    expect(parseSocketAddress('127.0.0.1:7788', 'a')).toEqual({ host: '127.0.0.1', port: 7788 });
    expect(parseSocketAddress('tcp:backup.example:80', 'a')).toEqual({ host: 'backup.example', port: 80 });
    expect(parseSocketAddress('[::1]:4444', 'a')).toEqual({ host: '::1', port: 4444 });
    expect(parseSocketAddress('/run/qmp.sock', 'a')).toEqual({ path: '/run/qmp.sock' });
    expect(parseSocketAddress('unix:/run/qmp.sock', 'a')).toEqual({ path: '/run/qmp.sock' });
    expect(parseSocketAddress({ host: '10.0.0.1', port: '9' }, 'a')).toEqual({ host: '10.0.0.1', port: 9 });
    expect(parseSocketAddress({ path: '/x' }, 'a')).toEqual({ path: '/x' });
    expect(parseSocketAddress('0.0.0.0:0', 'a', { allowPortZero: true })).toEqual({ host: '0.0.0.0', port: 0 });
  });
  it.each([
    [':7788', 'host is missing'],
    ['7788', 'HOST:PORT'],
    ['host:0', 'port'],
    ['host:65536', 'port'],
    ['host:12a', 'port'],
    ['::1:80', 'HOST:PORT'],
    ['[10.0.0.1]:80', 'IPv6'],
    ['bad host:80', 'not a name'],
    ['-x:80', 'not a name'],
    ['unix:', 'socket path'],
    ['/run/\nx', 'socket path'],
    [`/${'x'.repeat(200)}`, 'socket path'],
    [42, 'expected text'],
    [null, 'expected text'],
  ])('refuses %j naming the thing and the forms (%s)', (value, why) => {
    try {
      parseSocketAddress(value, '--listen');
      throw new Error('accepted');
    } catch (e) {
      expect(e).toBeInstanceOf(RemusError);
      expect((e as RemusError).code).toBe('INVALID_ARGUMENT');
      expect((e as RemusError).message).toContain('--listen');
      expect((e as RemusError).message).toContain(why);
      expect((e as RemusError).message).toContain('HOST:PORT');
    }
  });
  it('refuses paths where only TCP is allowed', () => {
    expect(() => parseSocketAddress('/run/x', 'peer', { allowPath: false })).toThrow(/not allowed/);
  });
});

describe('formatSocketAddress and isLoopbackHost', () => {
  it('round-trips', () => {
    for (const s of ['127.0.0.1:7788', '[::1]:4444', 'unix:/run/qmp.sock', 'h.example:1']) {
      expect(formatSocketAddress(parseSocketAddress(s, 'a'))).toBe(s);
    }
  });
  it('knows loopback', () => {
    expect(['localhost', '127.0.0.1', '127.9.9.9', '::1'].map(isLoopbackHost)).toEqual([true, true, true, true]);
    expect(['0.0.0.0', '10.0.0.1', '::', 'example.com'].map(isLoopbackHost)).toEqual([false, false, false, false]);
  });
  it('a local address is a Unix socket or a loopback host', () => {
    expect(['unix:/run/b.sock', '127.0.0.1:1', '[::1]:1', 'localhost:1'].map((s) => isLocalAddress(parseSocketAddress(s, 'a', { allowPath: true })))).toEqual([true, true, true, true]);
    expect(['0.0.0.0:1', '10.0.0.1:1', '[::]:1'].map((s) => isLocalAddress(parseSocketAddress(s, 'a')))).toEqual([false, false, false]);
  });
});
