// Hostile and careless input to `remus run/plan/doctor/backup` (issues 13 and
// 14.4, 14.5, 14.8): each attack refused with a clear error, exit 2, and
// nothing touched (no journal, no plugin code from an untrusted place). The
// fake plugins are small packages this file writes into temp directories.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '@remus/test-lab';
import { journals, remus, writeConfig } from './helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function temp(tag: string): string {
  const d = tempDir(tag).dir;
  dirs.push(d);
  return d;
}

const GOOD = {
  intervalMs: 100,
  domain: { type: 'process', command: ['sleep', '10'] },
  plugins: [{ package: '@remus/nic-nfqueue', subkinds: { 'nic-nfqueue': {} } }],
  devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: 'vif1.0' } }],
};

/**
 * Writes plugin package `name` into `<dir>/node_modules`: one subkind `fake`
 * of kind `nic` that knows the params `ifname` and `netns`, requires
 * `ifname` in checkParams, and whose match throws for `ifname: "throw"`.
 * Importing it writes `<dir>/LOADED-<name>`. It does not declare all of
 * core's NIC_PARAMS (no `buffer`), so the CLI does not look for its devices'
 * interfaces on the host (that check is for subkinds reading core's `nic`
 * params; see src/nic-host.ts and test/nic-host.netns.test.ts).
 */
function fakePlugin(dir: string, name: string): string {
  const pkg = join(dir, 'node_modules', ...name.split('/'));
  mkdirSync(pkg, { recursive: true });
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name, version: '1.0.0', type: 'module', main: 'index.js', peerDependencies: { '@remus/core': '>=0.1.0 <1.0.0' } }));
  const marker = join(dir, `LOADED-${name.replace('/', '+')}`);
  writeFileSync(
    join(pkg, 'index.js'),
    `import { writeFileSync } from 'node:fs';
writeFileSync(${JSON.stringify(marker)}, 'x');
export const plugin = {
  name: ${JSON.stringify(name)},
  version: '1.0.0',
  subkinds: {
    fake: () => ({
      name: 'fake',
      kind: 'nic',
      params: ['ifname', 'netns'],
      checkParams(d) { if (typeof d.params?.ifname !== 'string') throw new Error('params.ifname is required'); },
      match(h) { if (h.device.params?.ifname === 'throw') throw new Error('match exploded'); return true; },
      setup() { return {}; },
      teardown() {},
    }),
  },
};
`,
  );
  return marker;
}

describe('time and count values (14.5)', () => {
  it.each([
    ['--checkpoints', '1.5', /--checkpoints "1\.5" is not a count/],
    ['--checkpoints', '0x3', /--checkpoints "0x3" is not a count/],
    ['--checkpoints', '3e9', /--checkpoints "3e9" is not a count/],
    ['--duration', '3000000000', /--duration 3000000000 is not a valid time: use a number of milliseconds from 1 to 2147483647/],
    ['--duration', '0x10', /--duration "0x10" is not a time/],
    ['--duration', '-5', /--duration/],
  ])('remus run %s %s: exit 2, no journal', async (flag, value, message) => {
    const dir = temp('cfg');
    const state = temp('state');
    const r = await remus(['run', '--config', writeConfig(dir, 'remus.json', GOOD), '--state-dir', state, `${flag}=${value}`]);
    expect(r.stderr).toMatch(message);
    expect(r.code).toBe(2);
    expect(journals(state)).toEqual([]);
  });

  it('config times above what Node timers hold, and fractional or hex-like counts, are refused', async () => {
    const dir = temp('cfg');
    const state = temp('state');
    const cfg = { ...GOOD, intervalMs: 3e9, durationMs: 2 ** 31, maxCheckpoints: 1.5, timeouts: { commit: 3e9 }, domainTimeoutMs: Number.MAX_SAFE_INTEGER };
    const r = await remus(['run', '--config', writeConfig(dir, 'remus.json', cfg), '--state-dir', state]);
    expect(r.code).toBe(2);
    for (const path of ['intervalMs', 'durationMs', 'maxCheckpoints', 'domainTimeoutMs', 'timeouts.commit']) expect(r.stderr).toMatch(new RegExp(`^  ${path.replace('.', '\\.')}: `, 'm'));
    expect(r.stderr).toMatch(/intervalMs: 3000000000 is not a valid time: use a number of milliseconds from 1 to 2147483647/);
    expect(r.stderr).toMatch(/maxCheckpoints: 1\.5 is not valid: use a whole number/);
    expect(journals(state)).toEqual([]);
  });

  it('a deeply nested value is a clear error (exit 2), not a stack overflow', async () => {
    const dir = temp('cfg');
    const state = temp('state');
    const deep = `{"intervalMs": 100, "domain": {"type": "process", "command": ["sleep", "1"], "env": ${'['.repeat(100_000)}${']'.repeat(100_000)}}}`;
    const r = await remus(['run', '--config', writeConfig(dir, 'remus.json', deep), '--state-dir', state]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/domain\.env(\[0\])+: nests deeper than 32 levels/);
    expect(r.stderr).not.toMatch(/Maximum call stack/);
    expect(journals(state)).toEqual([]);
  });
});

describe('every problem at once, before the host is touched (13, 14.8)', () => {
  it('an unknown key, an unknown kind and an unknown param are reported in one run, with the closest names', async () => {
    const dir = temp('cfg');
    const state = temp('state');
    fakePlugin(dir, 'remus-fake-plugin');
    const cfg = {
      ...GOOD,
      intervalMS: 5,
      plugins: [{ package: 'remus-fake-plugin', subkinds: { fake: {} } }],
      devices: [
        { id: 'a', kind: 'nick', params: { ifname: 'x' } },
        { id: 'b', kind: 'nic', params: { ifnam: 'x' } },
      ],
    };
    const r = await remus(['run', '--config', writeConfig(dir, 'remus.json', cfg), '--state-dir', state]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/4 problem\(s\)/);
    expect(r.stderr).toMatch(/intervalMS: is not a known key; fix: did you mean "intervalMs"\?/);
    expect(r.stderr).toMatch(/devices\[0\]\.kind: no subkind in plugins handles kind "nick" \(kinds present: nic\); fix: did you mean "nic"\?/);
    expect(r.stderr).toMatch(/devices\[1\]\.params\.ifnam: device b: param "ifnam" is not known to fake \(did you mean "ifname"\?\)/);
    expect(r.stderr).toMatch(/devices\[1\]\.params: device b: params\.ifname is required/);
    expect(journals(state)).toEqual([]);
  });

  it("a subkind's own params check fails the run with exit 2 before a journal is written", async () => {
    const dir = temp('cfg');
    const state = temp('state');
    fakePlugin(dir, 'remus-fake-plugin');
    const cfg = { ...GOOD, plugins: [{ package: 'remus-fake-plugin', subkinds: { fake: {} } }], devices: [{ id: 'dev0', kind: 'nic', params: { netns: 'x' } }] };
    const r = await remus(['run', '--config', writeConfig(dir, 'remus.json', cfg), '--state-dir', state]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/devices\[0\]\.params: device dev0: params\.ifname is required/);
    expect(journals(state)).toEqual([]);
  });

  it('plan: a match that throws is MATCH FAILED with its code, not NOT SUPPORTED', async () => {
    const dir = temp('cfg');
    fakePlugin(dir, 'remus-fake-plugin');
    const cfg = { ...GOOD, plugins: [{ package: 'remus-fake-plugin', subkinds: { fake: {} } }], devices: [{ id: 'a', kind: 'nic', params: { ifname: 'throw' } }] };
    const r = await remus(['plan', '--config', writeConfig(dir, 'remus.json', cfg)]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^a \(nic\): MATCH FAILED: \[\w+\] .*match exploded/m);
    expect(r.stdout).not.toMatch(/NOT SUPPORTED/);
  });
});

describe('where plugins come from (14.4)', () => {
  it('a node_modules in a parent directory or the working directory is never loaded', async () => {
    const parent = temp('parent');
    const marker = fakePlugin(parent, '@remus/nic-decoy');
    const sub = join(parent, 'project');
    mkdirSync(sub);
    const state = temp('state');
    const cfg = { ...GOOD, plugins: [{ package: '@remus/nic-decoy', subkinds: { fake: {} } }] };
    const r = await remus(['run', '--config', writeConfig(sub, 'remus.json', cfg), '--state-dir', state], {}, parent);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/\[PLUGIN_NOT_FOUND\].*plugins\[0\]\.package: plugin @remus\/nic-decoy is not installed \(looked in [^)]*project\/node_modules, /s);
    expect(existsSync(marker)).toBe(false);
    expect(journals(state)).toEqual([]);
    // The same package next to the config is loaded.
    fakePlugin(sub, '@remus/nic-decoy');
    const ok = await remus(['plan', '--config', join(sub, 'remus.json')], {}, parent);
    expect(ok.stdout).toMatch(/vif1\.0 \(nic\): fake/);
    expect(existsSync(join(sub, 'LOADED-@remus+nic-decoy'))).toBe(true);
  });

  it.each([
    ['npm/10.8.2 node/v20', undefined, 'npm install @remus/nic-nope'],
    ['yarn/1.22.22 npm/? node/v20', undefined, 'yarn add @remus/nic-nope'],
    ['pnpm/10.0.0 npm/? node/v20', undefined, 'pnpm add @remus/nic-nope'],
    [undefined, 'pnpm-lock.yaml', 'pnpm add @remus/nic-nope'],
    [undefined, 'yarn.lock', 'yarn add @remus/nic-nope'],
    [undefined, undefined, 'npm install @remus/nic-nope'],
  ])('PLUGIN_NOT_FOUND names the install command of the user (agent %s, lockfile %s)', async (agent, lockfile, command) => {
    const dir = temp('cfg');
    if (lockfile) writeFileSync(join(dir, lockfile), '');
    const cfg = { ...GOOD, plugins: [{ package: '@remus/nic-nope', subkinds: { 'nic-nope': {} } }] };
    const r = await remus(['plan', '--config', writeConfig(dir, 'remus.json', cfg)], { npm_config_user_agent: agent });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`install it: ${command}`);
  });
});

describe('remus backup --listen (14.9)', () => {
  it('refuses :PORT (no host: every interface by accident) and garbage, exit 2', async () => {
    for (const bad of [':7788', 'localhost', '1.2.3.4:99999', 'x:y']) {
      const r = await remus(['backup', '--listen', bad]);
      expect(r.code, bad).toBe(2);
      expect(r.stderr).toMatch(/\[INVALID_ARGUMENT\] --listen/);
    }
  });
});
