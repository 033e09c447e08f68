// Runs the real `changeset version` on a scratch copy of this workspace's
// package manifests and changeset config, and checks what it did to the
// plugins' versions when @remus/core gets a minor and a major release.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const repo = new URL('../../..', import.meta.url).pathname;
const changesetBin = join(repo, 'node_modules', '.bin', 'changeset');
const scratches: string[] = [];

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  peerDependencies?: Record<string, string>;
}

/** A scratch workspace with every package manifest of the repo and its changeset config. */
function scratchWorkspace(configEdit?: (c: Record<string, unknown>) => void): string {
  const dir = mkdtempSync(join(tmpdir(), 'remus-changesets-'));
  scratches.push(dir);
  cpSync(join(repo, 'package.json'), join(dir, 'package.json'));
  cpSync(join(repo, 'pnpm-workspace.yaml'), join(dir, 'pnpm-workspace.yaml'));
  mkdirSync(join(dir, '.changeset'));
  const config = JSON.parse(readFileSync(join(repo, '.changeset', 'config.json'), 'utf8')) as Record<string, unknown>;
  configEdit?.(config);
  writeFileSync(join(dir, '.changeset', 'config.json'), JSON.stringify(config, null, 2));
  for (const top of ['packages', 'tools']) {
    for (const name of readdirSync(join(repo, top))) {
      const manifest = join(repo, top, name, 'package.json');
      if (!existsSync(manifest)) continue;
      mkdirSync(join(dir, top, name), { recursive: true });
      cpSync(manifest, join(dir, top, name, 'package.json'));
    }
  }
  if (existsSync(join(repo, 'test-fixtures', 'package.json'))) {
    mkdirSync(join(dir, 'test-fixtures'));
    cpSync(join(repo, 'test-fixtures', 'package.json'), join(dir, 'test-fixtures', 'package.json'));
  }
  execFileSync('git', ['init', '-q'], { cwd: dir });
  return dir;
}

function manifests(dir: string): Map<string, Manifest> {
  const out = new Map<string, Manifest>();
  for (const top of ['packages', 'tools']) {
    if (!existsSync(join(dir, top))) continue;
    for (const name of readdirSync(join(dir, top))) {
      const m = JSON.parse(readFileSync(join(dir, top, name, 'package.json'), 'utf8')) as Manifest;
      out.set(m.name, m);
    }
  }
  return out;
}

function version(dir: string, coreBump: 'minor' | 'major'): { before: Map<string, Manifest>; after: Map<string, Manifest> } {
  const before = manifests(dir);
  writeFileSync(join(dir, '.changeset', 'core-bump.md'), `---\n"@remus/core": ${coreBump}\n---\n\nA ${coreBump} change of core.\n`);
  execFileSync(changesetBin, ['version'], { cwd: dir, stdio: 'pipe' });
  return { before, after: manifests(dir) };
}

const major = (v: string): number => Number(v.split('.')[0]);
const minor = (v: string): number => Number(v.split('.')[1]);

afterEach(() => {
  for (const d of scratches.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('changesets configuration', () => {
  it('a minor release of @remus/core leaves every plugin that peer-depends on it without a new major', () => {
    const dir = scratchWorkspace();
    const { before, after } = version(dir, 'minor');
    const core = after.get('@remus/core')!;
    expect(minor(core.version)).toBe(minor(before.get('@remus/core')!.version) + 1);
    const plugins = [...before.values()].filter((m) => m.peerDependencies?.['@remus/core']);
    expect(plugins.length, 'the repo has plugins that peer-depend on @remus/core').toBeGreaterThan(0);
    for (const p of plugins) {
      const now = after.get(p.name)!;
      expect(major(now.version), `${p.name} ${p.version} -> ${now.version}`).toBe(major(p.version));
      expect(minor(now.version), `${p.name} ${p.version} -> ${now.version}`).toBe(minor(p.version));
      // The peer range still admits the new core, so users keep one core.
      expect(now.peerDependencies!['@remus/core']).toBe(p.peerDependencies!['@remus/core']);
    }
  });

  it('without onlyUpdatePeerDependentsWhenOutOfRange the same minor would force plugin majors (the trap is real)', () => {
    const dir = scratchWorkspace((c) => {
      delete c['___experimentalUnsafeOptions_WILL_CHANGE_IN_PATCH'];
    });
    const { before, after } = version(dir, 'minor');
    const plugins = [...before.values()].filter((m) => m.peerDependencies?.['@remus/core']);
    expect(plugins.length).toBeGreaterThan(0);
    expect(plugins.some((p) => major(after.get(p.name)!.version) > major(p.version) || (major(p.version) === 0 && minor(after.get(p.name)!.version) > minor(p.version)))).toBe(true);
  });

  it('a major release of @remus/core does bump plugins whose peer range it leaves', () => {
    const dir = scratchWorkspace();
    // Make the scratch core 0.x -> 1.0.0 with a major changeset: out of ">=0.1.0 <1.0.0".
    const { before, after } = version(dir, 'major');
    expect(major(after.get('@remus/core')!.version)).toBe(major(before.get('@remus/core')!.version) + 1);
    const plugins = [...before.values()].filter((m) => m.peerDependencies?.['@remus/core']);
    for (const p of plugins) {
      expect(after.get(p.name)!.version, p.name).not.toBe(p.version);
    }
  });
});
