// A release rehearsal on a scratch copy of the workspace (manifests, built
// dist, READMEs, LICENSEs and the pending changesets): `changeset version`
// and `pnpm publish --dry-run -r` run clean; and the subkind template, which
// peer-depends on @remus/core, keeps loading after a core minor and is
// refused with a message naming both versions after a core major (core's
// load-time check of the plugin's own peer range). Needs the packages built.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = new URL('../../..', import.meta.url).pathname;
const changesetBin = join(repo, 'node_modules', '.bin', 'changeset');
const scratches: string[] = [];
afterAll(() => {
  for (const d of scratches.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  peerDependencies?: Record<string, string>;
}

const SHIPPED = ['package.json', 'dist', 'LICENSE', 'README.md', 'remus.json'];

/** A scratch workspace: root manifests, the changeset config and (unless `noPending`) the pending changesets, every package's shipped files. */
function scratchWorkspace(o: { noPending?: boolean } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'remus-release-'));
  scratches.push(dir);
  for (const f of ['package.json', 'pnpm-workspace.yaml', 'pnpm-lock.yaml', 'LICENSE', '.npmrc']) if (existsSync(join(repo, f))) cpSync(join(repo, f), join(dir, f));
  mkdirSync(join(dir, '.changeset'));
  for (const f of readdirSync(join(repo, '.changeset'))) {
    if (o.noPending && f.endsWith('.md') && f !== 'README.md') continue;
    cpSync(join(repo, '.changeset', f), join(dir, '.changeset', f));
  }
  for (const top of ['packages', 'tools', 'examples']) {
    for (const name of readdirSync(join(repo, top))) {
      const src = join(repo, top, name);
      if (!existsSync(join(src, 'package.json'))) continue;
      mkdirSync(join(dir, top, name), { recursive: true });
      for (const f of SHIPPED) if (existsSync(join(src, f))) cpSync(join(src, f), join(dir, top, name, f), { recursive: true });
    }
  }
  mkdirSync(join(dir, 'test-fixtures'));
  cpSync(join(repo, 'test-fixtures', 'package.json'), join(dir, 'test-fixtures', 'package.json'));
  const git = (...a: string[]): void => void execFileSync('git', ['-c', 'user.email=t@t', '-c', 'user.name=t', ...a], { cwd: dir, stdio: 'pipe' });
  git('init', '-q', '-b', 'main');
  git('add', '-A');
  git('commit', '-qm', 'scratch');
  return dir;
}

function manifest(dir: string, rel: string): Manifest {
  return JSON.parse(readFileSync(join(dir, rel, 'package.json'), 'utf8')) as Manifest;
}

function changesetVersion(dir: string): void {
  const r = spawnSync(changesetBin, ['version'], { cwd: dir, encoding: 'utf8' });
  expect(r.status, `changeset version: ${r.stderr}${r.stdout}`).toBe(0);
  expect(r.stderr).not.toMatch(/error/i);
}

/** Loads the template as published (0.1.0) through the scratch copy's released core, from a user project that has it installed. */
async function loadTemplate(dir: string): Promise<unknown> {
  const core = join(dir, 'packages', 'core');
  symlinkSync(join(repo, 'packages', 'core', 'node_modules'), join(core, 'node_modules'));
  // The template as published before the release (its own peer range, unchanged), installed in a user project.
  const published = join(dir, 'published-template');
  mkdirSync(published);
  for (const f of ['package.json', 'dist']) cpSync(join(repo, 'examples', 'subkind-template', f), join(published, f), { recursive: true });
  mkdirSync(join(published, 'node_modules', '@remus'), { recursive: true });
  symlinkSync(core, join(published, 'node_modules', '@remus', 'core'));
  const user = join(dir, 'user');
  mkdirSync(join(user, 'node_modules'), { recursive: true });
  symlinkSync(published, join(user, 'node_modules', 'remus-subkind-template'));
  const { loadPlugin } = (await import(pathToFileURL(join(core, 'dist', 'index.js')).href)) as typeof import('@remus/core');
  return loadPlugin('remus-subkind-template', { from: [user] });
}

describe('release rehearsal on a scratch copy', () => {
  it('changeset version consumes the pending changesets and pnpm publish --dry-run -r packs every published package', () => {
    const dir = scratchWorkspace();
    const pending = readdirSync(join(dir, '.changeset')).filter((f) => f.endsWith('.md') && f !== 'README.md');
    changesetVersion(dir);
    // Left behind: only changesets that name private tools alone (privatePackages.version is false, so
    // `changeset version` never consumes them; they change nothing a user installs).
    const privateNames = new Set(
      ['packages', 'tools', 'examples'].flatMap((top) =>
        readdirSync(join(dir, top)).map((n) => manifest(dir, join(top, n))).filter((m) => m.private).map((m) => m.name),
      ),
    );
    privateNames.add('@remus/test-fixtures');
    for (const f of readdirSync(join(dir, '.changeset')).filter((x) => x.endsWith('.md') && x !== 'README.md')) {
      const names = [...readFileSync(join(dir, '.changeset', f), 'utf8').matchAll(/^"([^"]+)":\s*(?:major|minor|patch)\s*$/gm)].map((m) => m[1]!);
      expect(names.filter((n) => !privateNames.has(n)), `${f} was not consumed`).toEqual([]);
    }
    if (pending.length > 0) expect(existsSync(join(dir, 'packages', 'core', 'CHANGELOG.md'))).toBe(true);
    // As a release does: the lockfile follows the new versions, then publish.
    const install = spawnSync('pnpm', ['install', '--prefer-offline', '--ignore-scripts', '--no-frozen-lockfile'], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
    expect(install.status, `pnpm install: ${install.stderr}${install.stdout}`).toBe(0);
    const r = spawnSync('pnpm', ['publish', '-r', '--dry-run', '--no-git-checks', '--access', 'public'], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
    const said = (r.stdout + r.stderr).split('\n').filter((l) => !/^npm (notice|warn)/.test(l)).join('\n');
    expect(r.status, `pnpm publish --dry-run -r: ${said}`).toBe(0);
    const out = r.stdout + r.stderr;
    for (const name of readdirSync(join(dir, 'packages'))) {
      const m = manifest(dir, join('packages', name));
      if (m.private) continue;
      expect(out, `${m.name}@${m.version} is in the dry run`).toContain(`${m.name}@${m.version}`);
    }
    expect(out).not.toContain('remus-subkind-template@');
    expect(out).not.toContain('workspace:');
  }, 300_000);

  it('after a core minor the template (peer >=0.1.0 <1.0.0) still loads', async () => {
    const dir = scratchWorkspace({ noPending: true });
    const before = manifest(dir, 'packages/core').version;
    writeFileSync(join(dir, '.changeset', 'core-minor.md'), '---\n"@remus/core": minor\n---\n\nA minor change of core.\n');
    changesetVersion(dir);
    const after = manifest(dir, 'packages/core').version;
    expect(after.split('.')[1]).toBe(String(Number(before.split('.')[1]) + 1));
    const plugin = (await loadTemplate(dir)) as { name: string; subkinds: Record<string, unknown> };
    expect(plugin.name).toBe('remus-subkind-template');
    expect(Object.keys(plugin.subkinds)).toEqual(['marker']);
  }, 120_000);

  it('after a core major the template is refused at load time, the message naming its range and the new core', async () => {
    const dir = scratchWorkspace({ noPending: true });
    writeFileSync(join(dir, '.changeset', 'core-major.md'), '---\n"@remus/core": major\n---\n\nA major change of core.\n');
    changesetVersion(dir);
    const core = manifest(dir, 'packages/core').version;
    expect(core).toBe('1.0.0');
    const range = JSON.parse(readFileSync(join(repo, 'examples', 'subkind-template', 'package.json'), 'utf8')).peerDependencies['@remus/core'] as string;
    let error: { code?: string; message?: string } | undefined;
    try {
      await loadTemplate(dir);
    } catch (e) {
      error = e as typeof error;
    }
    expect(error?.code).toBe('PLUGIN_INCOMPATIBLE');
    expect(error?.message).toContain(`remus-subkind-template@0.1.0 works with @remus/core ${range}`);
    expect(error?.message).toContain(`@remus/core ${core}`);
  }, 120_000);
});
