// A new user's install, from the tarballs a release would publish: every
// published package (and the subkind template) packed with `pnpm pack`, then
// the CLI, one plugin (@remus/disk-drbd) and the template installed with npm
// into an empty directory outside the workspace (third-party dependencies
// from the npm registry, `--prefer-offline`). There: `remus plan`, a short
// `remus run` (root: the process domain's cgroup freezer) and the conformance
// kit on the installed template. Needs the packages built (`pnpm build`).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = realpathSync(new URL('../../..', import.meta.url).pathname);
const scratch = mkdtempSync(join(tmpdir(), 'remus-pack-'));
const tarballs = join(scratch, 'tarballs');
const user = join(scratch, 'user');

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  license?: string;
  keywords?: string[];
  repository?: { url?: string; directory?: string };
  files?: string[];
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/** Published packages (packages/*, not private) and the template: dir -> manifest. */
function packable(): Map<string, Manifest> {
  const out = new Map<string, Manifest>();
  for (const dir of [...readdirSync(join(repo, 'packages')).map((n) => join(repo, 'packages', n)), join(repo, 'examples', 'subkind-template')]) {
    const m = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest;
    if (m.private && !dir.includes('examples')) continue;
    out.set(dir, m);
  }
  return out;
}

const packages = packable();
const tarballOf = new Map<string, string>(); // package name -> tarball path
const contents = new Map<string, string[]>(); // package name -> files in the tarball
const packedManifest = new Map<string, Manifest>();

function run(cmd: string, args: string[], cwd: string, timeout = 600_000): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, npm_config_update_notifier: 'false' } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited ${r.status}: ${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

beforeAll(() => {
  mkdirSync(tarballs);
  for (const [dir, m] of packages) {
    run('pnpm', ['pack', '--pack-destination', tarballs], dir);
    const file = join(tarballs, `${m.name.replace('@', '').replace('/', '-')}-${m.version}.tgz`);
    if (!existsSync(file)) throw new Error(`pnpm pack made no ${file}`);
    tarballOf.set(m.name, file);
    contents.set(m.name, execFileSync('tar', ['tzf', file], { encoding: 'utf8' }).trim().split('\n'));
    packedManifest.set(m.name, JSON.parse(execFileSync('tar', ['xzOf', file, 'package/package.json'], { encoding: 'utf8' })) as Manifest);
  }
  // What the user asks for, plus the @remus packages the CLI itself declares (workspace-only, so not on the registry).
  // @remus/cli depends on @remus/core alone: `remus run` needs the process domain installed next to it (see its README).
  const wanted = new Set(['@remus/cli', '@remus/domain-process', '@remus/disk-drbd', 'remus-subkind-template']);
  const queue = [...wanted];
  while (queue.length > 0) {
    const m = packedManifest.get(queue.pop()!)!;
    for (const dep of Object.keys({ ...m.dependencies, ...m.peerDependencies })) {
      if (packedManifest.has(dep) && !wanted.has(dep)) {
        wanted.add(dep);
        queue.push(dep);
      }
    }
  }
  mkdirSync(user);
  writeFileSync(join(user, 'package.json'), JSON.stringify({ name: 'remus-user', private: true }));
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...[...wanted].map((n) => tarballOf.get(n)!)], user);
  // The kit's test runner (not under test): the workspace's vitest, linked.
  symlinkSync(realpathSync(join(repo, 'node_modules', 'vitest')), join(user, 'node_modules', 'vitest'));
});

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('the packed tarballs', () => {
  it('every published package ships LICENSE, dist and its README, declares license, repository with directory and keywords, and ships no source maps', () => {
    for (const [dir, m] of packages) {
      const files = contents.get(m.name)!;
      const where = m.name;
      expect(files, where).toContain('package/LICENSE');
      expect(readFileSync(join(dir, 'LICENSE'), 'utf8'), `${where}: LICENSE is the root one`).toBe(readFileSync(join(repo, 'LICENSE'), 'utf8'));
      expect(files.some((f) => f.startsWith('package/dist/')), where).toBe(true);
      expect(files.filter((f) => f.endsWith('.map')), `${where}: source maps point at src/, which is not shipped (stale dist? rm -rf dist and rebuild)`).toEqual([]);
      expect(files.filter((f) => f.startsWith('package/src/')), where).toEqual([]);
      const p = packedManifest.get(m.name)!;
      expect(p.license, where).toBe('MIT');
      expect(p.repository?.url, where).toMatch(/^git\+https:\/\//);
      expect(p.repository?.directory, where).toBe(dir.slice(repo.length + 1));
      expect(p.keywords, where).toContain('remus');
      expect(JSON.stringify(p), `${where}: workspace: protocol left in the packed manifest`).not.toContain('workspace:');
    }
  });

  it('every plugin (a package exporting `plugin`) carries the remus-plugin keyword and a @remus/core peer range', () => {
    const plugins = [...packedManifest.values()].filter((m) => m.keywords?.includes('remus-plugin'));
    expect(plugins.map((m) => m.name)).toEqual(expect.arrayContaining(['@remus/disk-drbd', '@remus/nic-netbuf', '@remus/nic-nfqueue', '@remus/colo', 'remus-subkind-template']));
    for (const m of plugins) expect(m.peerDependencies?.['@remus/core'], m.name).toBeTruthy();
  });
});

describe('the CLI installs alone', () => {
  it('@remus/cli depends on @remus/core alone among the @remus packages (plugins, domains and COLO are installed by the user)', () => {
    const deps = Object.keys(packedManifest.get('@remus/cli')!.dependencies ?? {}).filter((d) => d.startsWith('@remus/'));
    expect(deps).toEqual(['@remus/core']);
  });
});

describe('installed with npm into an empty directory', () => {
  it('has exactly one @remus/core (the plugins share the CLI one)', () => {
    const cores = execFileSync('find', [join(user, 'node_modules'), '-path', '*/@remus/core/package.json'], { encoding: 'utf8' }).trim().split('\n');
    expect(cores).toEqual([join(user, 'node_modules', '@remus', 'core', 'package.json')]);
  });

  it('remus plan loads the template from the config directory and assigns its device', () => {
    mkdirSync(join(user, 'markers'), { recursive: true });
    const config = JSON.parse(readFileSync(join(user, 'node_modules', 'remus-subkind-template', 'remus.json'), 'utf8'));
    config.devices[0].params.dir = join(user, 'markers');
    writeFileSync(join(user, 'remus.json'), JSON.stringify(config));
    const out = run(join(user, 'node_modules', '.bin', 'remus'), ['plan', '--config', join(user, 'remus.json')], user, 60_000);
    expect(out).toContain('notes (marker): marker');
  });

  it('a short remus run protects a process for 3 checkpoints and leaves nothing (as root)', () => {
    const state = join(user, 'state');
    const out = run(join(user, 'node_modules', '.bin', 'remus'), ['run', '--config', join(user, 'remus.json'), '--checkpoints', '3', '--json', '--state-dir', state], user, 60_000);
    const events = out.trim().split('\n').map((l) => JSON.parse(l) as { type: string; ok?: boolean });
    expect(events.filter((e) => e.type === 'checkpoint')).toHaveLength(3);
    expect(events.at(-1)).toMatchObject({ type: 'end', ok: true });
    expect(readdirSync(join(user, 'markers'))).toEqual([]);
  });

  it('the conformance kit from the installed @remus/core/testing passes on the installed template', () => {
    writeFileSync(
      join(user, 'kit.test.mjs'),
      `import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describeSubkindConformance } from '@remus/core/testing';
import { markerSubkind } from 'remus-subkind-template';
const dir = new URL('./kit-markers', import.meta.url).pathname;
describeSubkindConformance({
  title: 'installed marker subkind',
  make: () => markerSubkind(),
  device: () => ({ id: 'notes', kind: 'marker', params: { dir } }),
  beforeEach: () => mkdirSync(dir, { recursive: true }),
  afterEach: () => rmSync(dir, { recursive: true, force: true }),
  leftovers: () => readdirSync(dir),
  crash: { module: createRequire(import.meta.url).resolve('remus-subkind-template'), export: 'markerSubkind' },
});
`,
    );
    writeFileSync(join(user, 'vitest.config.mjs'), `export default { test: { include: ['kit.test.mjs'] } };\n`);
    const out = join(user, 'kit.json');
    spawnSync(process.execPath, [join(user, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', user, '--reporter=json', `--outputFile=${out}`], {
      cwd: user,
      encoding: 'utf8',
      timeout: 100_000,
    });
    const r = JSON.parse(readFileSync(out, 'utf8')) as { numPassedTests: number; numFailedTests: number };
    expect(r.numFailedTests).toBe(0);
    expect(r.numPassedTests).toBe(10);
  });
});
