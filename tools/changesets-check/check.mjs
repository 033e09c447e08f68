#!/usr/bin/env node
// CI gate: every published package whose `src/` changed since the base has a
// changeset naming it. Exit 1 listing the packages without one.
//
// The base is, in order: $REMUS_CHANGESET_BASE (a commit or ref); the merge
// base with `main` when HEAD is not main (a branch or worktree about to land);
// the newest release tag (`@remus/<pkg>@<version>`, as `changeset tag` makes
// them); else HEAD (on main before the first release only uncommitted
// changes are checked).
// Changed = committed since the base, staged, unstaged or untracked.
// Usage: node tools/changesets-check/check.mjs [--repo DIR]
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const argRepo = process.argv.indexOf('--repo');
const repo = argRepo > 0 ? process.argv[argRepo + 1] : process.cwd();
const git = (...args) => execFileSync('git', args, { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
const tryGit = (...args) => {
  try {
    return git(...args);
  } catch {
    return undefined;
  }
};

function base() {
  if (process.env.REMUS_CHANGESET_BASE) return { ref: process.env.REMUS_CHANGESET_BASE, why: '$REMUS_CHANGESET_BASE' };
  const head = git('rev-parse', 'HEAD');
  const main = tryGit('rev-parse', '--verify', '-q', 'main') ?? tryGit('rev-parse', '--verify', '-q', 'origin/main');
  if (main && main !== head) {
    const mb = tryGit('merge-base', 'HEAD', main);
    if (mb && mb !== head) return { ref: mb, why: 'the merge base with main' };
  }
  const tag = tryGit('describe', '--tags', '--abbrev=0', '--match', '@remus/*@*', 'HEAD');
  if (tag) return { ref: tag, why: `the last release tag ${tag}` };
  return { ref: head, why: 'HEAD (on main with no release tag: only uncommitted changes count)' };
}

const b = base();

const changed = new Set(
  [
    ...git('diff', '--name-only', b.ref).split('\n'),
    ...git('ls-files', '--others', '--exclude-standard').split('\n'),
  ].filter(Boolean),
);

// Published packages whose src changed.
const needing = new Map(); // package name -> a changed file
for (const dir of existsSync(join(repo, 'packages')) ? readdirSync(join(repo, 'packages')) : []) {
  const manifest = join(repo, 'packages', dir, 'package.json');
  if (!existsSync(manifest)) continue;
  const m = JSON.parse(readFileSync(manifest, 'utf8'));
  if (m.private) continue;
  const file = [...changed].find((f) => f.startsWith(`packages/${dir}/src/`));
  if (file) needing.set(m.name, file);
}

// Packages named by the changesets added since the base (still present: not yet consumed by `changeset version`).
const named = new Set();
for (const f of changed) {
  if (!/^\.changeset\/[^/]+\.md$/.test(f) || f === '.changeset/README.md' || !existsSync(join(repo, f))) continue;
  const front = /^---\n([\s\S]*?)\n---/.exec(readFileSync(join(repo, f), 'utf8'));
  for (const line of front ? front[1].split('\n') : []) {
    const m = /^\s*["']?([^"':]+)["']?\s*:\s*(major|minor|patch)\s*$/.exec(line);
    if (m) named.add(m[1]);
  }
}

const missing = [...needing].filter(([name]) => !named.has(name));
if (missing.length > 0) {
  console.error(`changesets-check: compared with ${b.why} (${b.ref.slice(0, 12)}), these packages changed without a changeset:`);
  for (const [name, file] of missing) console.error(`  ${name} (e.g. ${file})`);
  console.error('fix: run `pnpm changeset` (or add .changeset/<slug>.md naming the package and its bump) and describe the change for users');
  process.exit(1);
}
console.log(`changesets-check: ${needing.size} changed package(s), each with a changeset (compared with ${b.why})`);
