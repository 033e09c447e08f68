/** Plugin metadata and loading by package name (no root needed). */
import { createSubkind, loadPlugin } from '@remus/core';
import { expect, it } from 'vitest';
import { nicNetbuf, plugin } from '../src/index.js';

it('declares the nic-netbuf subkind with its core range', () => {
  expect(plugin).toMatchObject({ name: '@remus/nic-netbuf', coreRange: '>=0.1.0 <1.0.0' });
  const ops = createSubkind(plugin, 'nic-netbuf', { limitBytes: 1_000_000 });
  expect(ops).toMatchObject({ name: 'nic-netbuf', kind: 'nic' });
  for (const op of ['init', 'cleanup', 'match', 'setup', 'teardown', 'postsuspend', 'commit', 'reap', 'stats']) {
    expect(typeof (ops as unknown as Record<string, unknown>)[op]).toBe('function');
  }
  expect((ops as { preresume?: unknown }).preresume).toBeUndefined();
});

it('loads by package name, as a user installs it', async () => {
  const loaded = await loadPlugin('@remus/nic-netbuf', { from: new URL('..', import.meta.url).pathname });
  expect(loaded.name).toBe('@remus/nic-netbuf');
  expect(createSubkind(loaded, 'nic-netbuf').name).toBe(nicNetbuf().name);
});

it('rejects bad options through the factory with INVALID_ARGUMENT', () => {
  expect(() => createSubkind(plugin, 'nic-netbuf', { limitBytes: -1 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
});
