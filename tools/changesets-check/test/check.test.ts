// check.mjs, the CI gate "packages/*/src changed without a changeset", on
// scratch git repositories: a branch against its merge base with main, and
// main against its last release tag.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const script = new URL('../check.mjs', import.meta.url).pathname;
const scratches: string[] = [];
afterEach(() => {
  for (const d of scratches.splice(0)) rmSync(d, { recursive: true, force: true });
});

function repo(): { dir: string; git: (...a: string[]) => string; write: (f: string, text: string) => void } {
  const dir = mkdtempSync(join(tmpdir(), 'remus-cscheck-'));
  scratches.push(dir);
  const git = (...a: string[]): string => execFileSync('git', ['-c', 'user.email=t@t', '-c', 'user.name=t', ...a], { cwd: dir, encoding: 'utf8' });
  const write = (f: string, text: string): void => {
    mkdirSync(join(dir, f, '..'), { recursive: true });
    writeFileSync(join(dir, f), text);
  };
  git('init', '-q', '-b', 'main');
  write('packages/a/package.json', JSON.stringify({ name: '@remus/a', version: '0.1.0' }));
  write('packages/a/src/index.ts', 'export const a = 1;\n');
  write('packages/lab/package.json', JSON.stringify({ name: '@remus/lab', version: '0.1.0', private: true }));
  write('packages/lab/src/index.ts', 'export const lab = 1;\n');
  write('.changeset/README.md', 'changesets\n');
  git('add', '-A');
  git('commit', '-qm', 'init');
  return { dir, git, write };
}

function check(dir: string, env: Record<string, string> = {}): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [script, '--repo', dir], { encoding: 'utf8', env: { ...process.env, REMUS_CHANGESET_BASE: '', ...env } });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe('changesets-check', () => {
  it('fails a branch whose package src changed without a changeset, naming the package and the fix', () => {
    const r = repo();
    r.git('checkout', '-qb', 'feature');
    r.write('packages/a/src/index.ts', 'export const a = 2;\n');
    r.git('commit', '-qam', 'change a');
    const c = check(r.dir);
    expect(c.status).toBe(1);
    expect(c.out).toContain('@remus/a (e.g. packages/a/src/index.ts)');
    expect(c.out).toContain('merge base with main');
    expect(c.out).toContain('pnpm changeset');
  });

  it('passes once a changeset names the package (committed or not yet)', () => {
    const r = repo();
    r.git('checkout', '-qb', 'feature');
    r.write('packages/a/src/index.ts', 'export const a = 2;\n');
    r.git('commit', '-qam', 'change a');
    r.write('.changeset/a-two.md', '---\n"@remus/a": minor\n---\nA is two.\n');
    expect(check(r.dir).status).toBe(0);
    r.git('add', '-A');
    r.git('commit', '-qm', 'changeset');
    expect(check(r.dir).status).toBe(0);
  });

  it('a changeset for another package does not count; uncommitted src changes count', () => {
    const r = repo();
    r.git('checkout', '-qb', 'feature');
    r.write('.changeset/other.md', '---\n"@remus/b": patch\n---\nB.\n');
    r.write('packages/a/src/new.ts', 'export const n = 1;\n');
    const c = check(r.dir);
    expect(c.status).toBe(1);
    expect(c.out).toContain('@remus/a (e.g. packages/a/src/new.ts)');
  });

  it('ignores private packages and changes outside src (tests, README)', () => {
    const r = repo();
    r.git('checkout', '-qb', 'feature');
    r.write('packages/lab/src/index.ts', 'export const lab = 2;\n');
    r.write('packages/a/README.md', 'docs\n');
    r.write('packages/a/test/a.test.ts', 'test\n');
    expect(check(r.dir).status).toBe(0);
  });

  it('on main, compares with the last release tag', () => {
    const r = repo();
    r.git('tag', '@remus/a@0.1.0');
    r.write('packages/a/src/index.ts', 'export const a = 3;\n');
    r.git('commit', '-qam', 'change a on main');
    const c = check(r.dir);
    expect(c.status).toBe(1);
    expect(c.out).toContain('last release tag @remus/a@0.1.0');
  });

  it('REMUS_CHANGESET_BASE overrides the base', () => {
    const r = repo();
    const first = r.git('rev-parse', 'HEAD').trim();
    r.write('packages/a/src/index.ts', 'export const a = 4;\n');
    r.git('commit', '-qam', 'change a');
    expect(check(r.dir).status).toBe(0); // main, no tag: nothing to compare with
    expect(check(r.dir, { REMUS_CHANGESET_BASE: first }).status).toBe(1);
  });
});
