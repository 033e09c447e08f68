// Plugin metadata and loading by package name, from a scratch project with real packages on disk.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CORE_VERSION, createSubkind, definePlugin, loadPlugin, RemusError } from '../src/index.js';

const project = mkdtempSync(join(tmpdir(), 'remus-plugins-'));
afterAll(() => rmSync(project, { recursive: true, force: true }));

function installFake(name: string, source: string): void {
  const dir = join(project, 'node_modules', ...name.split('/'));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.2.3', type: 'module', exports: { '.': './index.js' } }));
  writeFileSync(join(dir, 'index.js'), source);
}

const subkindSource = (name: string) => `(o) => ({ name: ${JSON.stringify(name)}, kind: 'nic', options: o, setup() {}, teardown() {} })`;
installFake(
  '@acme/remus-ok',
  `export const plugin = { name: '@acme/remus-ok', version: '1.2.3', coreRange: '>=0.1.0 <1.0.0', subkinds: { 'nic-acme': ${subkindSource('nic-acme')}, 'nic-misnamed': ${subkindSource('other')} } };`,
);
installFake('@acme/remus-old', `export const plugin = { name: '@acme/remus-old', version: '9.0.0', coreRange: '^9.0.0', subkinds: { x: ${subkindSource('x')} } };`);
installFake('@acme/not-a-plugin', `export const something = 1;`);

async function failure(p: Promise<unknown> | (() => unknown)): Promise<RemusError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(RemusError);
    return e as RemusError;
  }
  throw new Error('expected a failure');
}

describe('plugins', () => {
  it('loads a plugin by package name from the user\'s project and makes its subkinds', async () => {
    const plugin = await loadPlugin('@acme/remus-ok', { from: project });
    expect(plugin.name).toBe('@acme/remus-ok');
    const ops = createSubkind(plugin, 'nic-acme', { limit: 5 });
    expect(ops.name).toBe('nic-acme');
    expect((ops as unknown as { options: unknown }).options).toEqual({ limit: 5 });
  });

  it('a missing plugin says how to install it', async () => {
    const e = await failure(loadPlugin('@remus/disk-nonexistent', { from: project }));
    expect(e.code).toBe('PLUGIN_NOT_FOUND');
    expect(e.message).toContain('pnpm add @remus/disk-nonexistent');
  });

  it('a plugin built for another core is PLUGIN_INCOMPATIBLE naming both versions', async () => {
    const e = await failure(loadPlugin('@acme/remus-old', { from: project }));
    expect(e.code).toBe('PLUGIN_INCOMPATIBLE');
    expect(e.message).toContain('^9.0.0');
    expect(e.message).toContain(CORE_VERSION);
  });

  it('a package without plugin metadata is PLUGIN_INVALID', async () => {
    const e = await failure(loadPlugin('@acme/not-a-plugin', { from: project }));
    expect(e.code).toBe('PLUGIN_INVALID');
  });

  it('a name that is not a package name is refused before anything is resolved', async () => {
    expect((await failure(loadPlugin('../../etc/passwd', { from: project }))).code).toBe('INVALID_ARGUMENT');
  });

  it('an unknown subkind lists what the plugin provides; a misnamed factory is INVALID_SUBKIND', async () => {
    const plugin = await loadPlugin('@acme/remus-ok', { from: project });
    const e = await failure(() => createSubkind(plugin, 'disk-acme'));
    expect(e.code).toBe('SUBKIND_NOT_FOUND');
    expect(e.message).toContain('nic-acme');
    expect((await failure(() => createSubkind(plugin, 'nic-misnamed'))).code).toBe('INVALID_SUBKIND');
  });

  it('definePlugin checks metadata where the plugin is written', async () => {
    const ok = { name: 'p', version: '0.1.0', coreRange: '>=0.1.0 <1.0.0', subkinds: { a: () => ({}) as never } };
    expect(definePlugin(ok)).toBe(ok);
    expect((await failure(() => definePlugin({ ...ok, version: 'one' }))).code).toBe('PLUGIN_INVALID');
    expect((await failure(() => definePlugin({ ...ok, subkinds: {} }))).code).toBe('PLUGIN_INVALID');
    expect((await failure(() => definePlugin({ ...ok, coreRange: 'not a range!' }))).code).toBe('PLUGIN_INVALID');
  });
});
