/** Plugin metadata and loading by package name (no root needed). */
import { createSubkind, loadPlugin } from '@remus/core';
import { expect, it } from 'vitest';
import { linkedProject } from '@remus/test-lab';
import { fileURLToPath } from 'node:url';
import { onTestFinished } from 'vitest';
import { nicNetbuf, plugin } from '../src/index.js';

/** A user's project with this package installed (linked, as pnpm does): core loads plugins only from such a node_modules. */
function userProject(pkg: string): string {
  const p = linkedProject(pkg, fileURLToPath(new URL('..', import.meta.url)));
  onTestFinished(p.remove);
  return p.dir;
}


it('declares the nic-netbuf subkind with its core range', () => {
  expect(plugin).toMatchObject({ name: '@remus/nic-netbuf' });
  const ops = createSubkind(plugin, 'nic-netbuf', { limitBytes: 1_000_000 });
  expect(ops).toMatchObject({ name: 'nic-netbuf', kind: 'nic' });
  for (const op of ['init', 'cleanup', 'match', 'setup', 'teardown', 'postsuspend', 'commit', 'reap', 'stats']) {
    expect(typeof (ops as unknown as Record<string, unknown>)[op]).toBe('function');
  }
  expect((ops as { preresume?: unknown }).preresume).toBeUndefined();
});

it('loads by package name, as a user installs it', async () => {
  const loaded = await loadPlugin('@remus/nic-netbuf', { from: userProject('@remus/nic-netbuf') });
  expect(loaded.name).toBe('@remus/nic-netbuf');
  expect(createSubkind(loaded, 'nic-netbuf').name).toBe(nicNetbuf().name);
});

it('rejects bad options through the factory with INVALID_ARGUMENT', () => {
  expect(() => createSubkind(plugin, 'nic-netbuf', { limitBytes: -1 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
});

it('refuses time options Node\'s timers cannot hold (above 2^31-1 ms) and fractional byte limits', () => {
  for (const bad of [{ commandTimeoutMs: 3e9 }, { lockTimeoutMs: 2 ** 31 }, { scriptTimeoutMs: 0 }, { limitBytes: 1.5 }]) {
    expect(() => nicNetbuf(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  }
});

it('refuses a misspelt option naming the closest known one (it is never silently ignored)', () => {
  expect(() => nicNetbuf({ limtBytes: 5 } as never)).toThrow(/unknown option "limtBytes" \(did you mean "limitBytes"\?\)/);
});
