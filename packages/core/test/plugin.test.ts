// Plugin metadata and loading by package name, from a scratch project with real packages on disk.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import semver from 'semver';
import { CORE_VERSION, createSubkind, defineErrorCodes, definePlugin, loadPlugin, locatePlugin, RemusError } from '../src/index.js';

const root = mkdtempSync(join(tmpdir(), 'remus-plugins-'));
// The user's project sits below a directory whose node_modules holds decoys: they must never be loaded.
const project = join(root, 'project');
mkdirSync(project);
afterAll(() => rmSync(root, { recursive: true, force: true }));

function installFake(dir: string, name: string, source: string, manifest: Record<string, unknown> = {}): void {
  const pkg = join(dir, 'node_modules', ...name.split('/'));
  mkdirSync(pkg, { recursive: true });
  writeFileSync(
    join(pkg, 'package.json'),
    JSON.stringify({ name, version: '1.2.3', type: 'module', exports: { '.': './index.js' }, peerDependencies: { '@remus/core': `^${CORE_VERSION}` }, ...manifest }),
  );
  writeFileSync(join(pkg, 'index.js'), source);
}

const subkindSource = (name: string) => `(o) => ({ name: ${JSON.stringify(name)}, kind: 'nic', options: o, setup() {}, teardown() {} })`;
const pluginSource = (name: string, version = '1.2.3', extra = '') =>
  `export const plugin = { name: '${name}', version: '${version}', subkinds: { 'nic-acme': ${subkindSource('nic-acme')}, 'nic-misnamed': ${subkindSource('other')} } ${extra} };`;
installFake(project, '@acme/remus-ok', pluginSource('@acme/remus-ok'));
installFake(project, '@acme/remus-old', pluginSource('@acme/remus-old'), { peerDependencies: { '@remus/core': '^9.0.0' } });
installFake(project, '@acme/remus-nopeer', pluginSource('@acme/remus-nopeer'), { peerDependencies: undefined });
installFake(project, '@acme/remus-stale', pluginSource('@acme/remus-stale', '1.0.0'));
installFake(project, '@acme/remus-throws', `throw new Error('boom at import');`);
installFake(project, '@acme/not-a-plugin', `export const something = 1;`);
installFake(root, '@acme/remus-decoy', `globalThis.__remusDecoyLoaded = true; ${pluginSource('@acme/remus-decoy')}`);

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
  it("loads a plugin by package name from the user's project and makes its subkinds", async () => {
    const plugin = await loadPlugin('@acme/remus-ok', { from: project });
    expect(plugin.name).toBe('@acme/remus-ok');
    const ops = createSubkind(plugin, 'nic-acme', { limit: 5 });
    expect(ops.name).toBe('nic-acme');
    expect((ops as unknown as { options: unknown }).options).toEqual({ limit: 5 });
  });

  it('looks only in the directories given, never in their parents (a decoy node_modules above is not loaded)', async () => {
    const e = await failure(loadPlugin('@acme/remus-decoy', { from: project }));
    expect(e.code).toBe('PLUGIN_NOT_FOUND');
    expect((globalThis as { __remusDecoyLoaded?: boolean }).__remusDecoyLoaded).toBeUndefined();
    // Given explicitly, the second directory is used.
    const other = mkdtempSync(join(root, 'other-'));
    installFake(other, '@acme/remus-second', pluginSource('@acme/remus-second'));
    expect((await loadPlugin('@acme/remus-second', { from: [project, other] })).name).toBe('@acme/remus-second');
    expect(locatePlugin('@acme/remus-second', { from: [project, other] }).dir).toContain('other-');
  });

  it('a missing plugin says where it looked and how to install it (npm, pnpm, yarn, or the caller hint)', async () => {
    const e = await failure(loadPlugin('@remus/disk-nonexistent', { from: project }));
    expect(e.code).toBe('PLUGIN_NOT_FOUND');
    expect(e.message).toContain('npm install @remus/disk-nonexistent');
    expect(e.message).toContain(join(project, 'node_modules'));
    const hinted = await failure(loadPlugin('@remus/disk-nonexistent', { from: project, installHint: (n) => `yarn add ${n}` }));
    expect(hinted.message).toContain('`yarn add @remus/disk-nonexistent`');
  });

  it('compatibility comes from the package.json peer range, checked at load time, naming both versions', async () => {
    const e = await failure(loadPlugin('@acme/remus-old', { from: project }));
    expect(e.code).toBe('PLUGIN_INCOMPATIBLE');
    expect(e.message).toContain('^9.0.0');
    expect(e.message).toContain(CORE_VERSION);
    expect(e.message).toContain('@acme/remus-old@1.2.3');
    const np = await failure(loadPlugin('@acme/remus-nopeer', { from: project }));
    expect(np.code).toBe('PLUGIN_INVALID');
    expect(np.message).toContain('peerDependencies');
  });

  it('a core minor keeps a caret-range plugin loading; a core major does not (as changesets would bump them)', () => {
    const range = `^${CORE_VERSION}`;
    // 0.x carets pin the minor; 1.x carets the major: the check follows whatever range the manifest says.
    expect(semver.satisfies(CORE_VERSION, range)).toBe(true);
    expect(semver.satisfies(semver.inc(CORE_VERSION, 'patch')!, range)).toBe(true);
    expect(semver.satisfies(semver.inc(CORE_VERSION, 'major')!, range)).toBe(false);
  });

  it('a plugin whose `plugin` disagrees with its package.json is PLUGIN_INVALID', async () => {
    const e = await failure(loadPlugin('@acme/remus-stale', { from: project }));
    expect(e.code).toBe('PLUGIN_INVALID');
    expect(e.message).toContain('package.json');
  });

  it('a package without plugin metadata, or that throws when imported, is PLUGIN_INVALID', async () => {
    expect((await failure(loadPlugin('@acme/not-a-plugin', { from: project }))).code).toBe('PLUGIN_INVALID');
    const t = await failure(loadPlugin('@acme/remus-throws', { from: project }));
    expect(t.code).toBe('PLUGIN_INVALID');
    expect(t.message).toContain('boom at import');
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

  it('definePlugin checks metadata where the plugin is written, including its namespaced error codes', async () => {
    const ok = { name: 'p', version: '0.1.0', subkinds: { a: () => ({}) as never }, errors: defineErrorCodes('p', { BROKE: 'it broke' }) };
    expect(definePlugin(ok)).toBe(ok);
    expect((await failure(() => definePlugin({ ...ok, version: 'one' }))).code).toBe('PLUGIN_INVALID');
    expect((await failure(() => definePlugin({ ...ok, subkinds: {} }))).code).toBe('PLUGIN_INVALID');
    expect((await failure(() => definePlugin({ ...ok, errors: { BROKE: 'BROKE' } }))).code).toBe('PLUGIN_INVALID');
  });
});
