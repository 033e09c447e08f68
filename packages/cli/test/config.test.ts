// Config validation: every wrong key or value is reported with its JSON path
// and a fix, all at once, before anything on the host is touched. The unit
// checks call validateConfig; the CLI checks run the built `remus` on real
// files and look that no journal (the first thing a run writes) appeared.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { validateConfig, type ConfigProblem } from '../src/config.js';
import { tempDir } from '@remus/test-lab';
import { journals, remus, writeConfig } from './helpers.js';

const GOOD = {
  intervalMs: 100,
  domain: { type: 'process', command: ['sleep', '10'] },
  plugins: [{ package: '@remus/nic-nfqueue', subkinds: { 'nic-nfqueue': {} } }],
  devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: 'vif1.0' } }],
};

function problems(raw: unknown): ConfigProblem[] {
  try {
    validateConfig(raw);
  } catch (e) {
    return (e as { details: { problems: ConfigProblem[] } }).details.problems;
  }
  throw new Error('config was accepted');
}

describe('validateConfig', () => {
  it('accepts a good config and fills in the defaults', () => {
    const c = validateConfig(GOOD);
    expect(c).toMatchObject({ intervalMs: 100, schedule: 'after-commit', realtime: 'auto', onFailure: 'resume', domainTimeoutMs: 30_000 });
    expect(validateConfig({ ...GOOD, realtime: 'off' }).realtime).toBe('off');
    expect(c.domain).toMatchObject({ cgroup: 'auto', ack: { type: 'local' } });
    expect(c.maxCheckpoints).toBeUndefined();
  });

  it('names an unknown key and suggests the near one', () => {
    expect(problems({ ...GOOD, intervalMS: 5 })).toEqual([{ path: 'intervalMS', message: 'is not a known key', fix: 'did you mean "intervalMs"?' }]);
    expect(problems({ ...GOOD, devices: [{ id: 'a', kind: 'nic', parmas: {} }] })[0]).toMatchObject({ path: 'devices[0].parmas', fix: 'did you mean "params"?' });
  });

  it('names a wrong value with its path and the allowed values', () => {
    const [p] = problems({ ...GOOD, onFailure: 'resum' });
    expect(p?.path).toBe('onFailure');
    expect(p?.fix).toMatch(/"resume", "leave-suspended" \(did you mean "resume"\?\)/);
    expect(problems({ ...GOOD, intervalMs: -1 })[0]).toMatchObject({ path: 'intervalMs' });
    expect(problems({ ...GOOD, realtime: true })[0]).toMatchObject({ path: 'realtime', fix: expect.stringMatching(/"auto", "on", "off"/) });
    expect(problems({ ...GOOD, maxCheckpoints: 1.5 })[0]).toMatchObject({ path: 'maxCheckpoints', message: expect.stringMatching(/whole number/) });
    expect(problems({ ...GOOD, timeouts: { commitx: 5 } })[0]).toMatchObject({ path: 'timeouts.commitx', fix: 'did you mean "commit"?' });
  });

  it('reports every problem at once, in order', () => {
    const ps = problems({
      ...GOOD,
      schedule: 'often',
      devices: [{ id: 'a', kind: 'nic' }, { id: 'a', kind: '' }, 'eth0'],
    });
    expect(ps.map((p) => p.path)).toEqual(['schedule', 'devices[1].id', 'devices[1].kind', 'devices[2]']);
    expect(ps[1]?.message).toMatch(/already the id of devices\[0\]/);
  });

  it('checks the domain: exactly one of command and pid, an argument vector, a known ack', () => {
    expect(problems({ ...GOOD, domain: { type: 'process' } })[0]).toMatchObject({ path: 'domain', message: 'has neither command nor pid' });
    expect(problems({ ...GOOD, domain: { type: 'process', command: 'node server.js' } })[0]).toMatchObject({ path: 'domain.command', fix: expect.stringMatching(/no shell text/) });
    expect(problems({ ...GOOD, domain: { type: 'vm', pid: 12 } })[0]).toMatchObject({ path: 'domain.type' });
    expect(problems({ ...GOOD, domain: { type: 'process', pid: 12, ack: { type: 'remote', host: 'b', port: 70000 } } })[0]).toMatchObject({ path: 'domain.ack.port' });
    expect(problems({ ...GOOD, domain: undefined })[0]).toMatchObject({ path: 'domain', message: 'is missing' });
  });

  it('checks plugins: package names, subkinds present and unique', () => {
    expect(problems({ ...GOOD, plugins: [{ package: 'Not a name!', subkinds: { x: {} } }] })[0]).toMatchObject({ path: 'plugins[0].package' });
    expect(problems({ ...GOOD, plugins: [{ package: 'a', subkinds: {} }] })[0]).toMatchObject({ path: 'plugins[0].subkinds' });
    expect(problems({ ...GOOD, plugins: [{ package: 'a', subkinds: { x: {} } }, { package: 'b', subkinds: { x: {} } }] })[0]).toMatchObject({ path: 'plugins[1].subkinds.x' });
  });
});

describe('remus run with a bad config file', () => {
  let dir: string;
  let state: string;
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  });

  const cases: [string, unknown, RegExp][] = [
    ['a misspelt key', { ...GOOD, intervalMS: 5 }, /intervalMS: is not a known key; fix: did you mean "intervalMs"\?/],
    ['a wrong device kind', { ...GOOD, devices: [{ id: 'd', kind: 'nick', params: { ifname: 'x' } }] }, /devices\[0\]\.kind: no subkind in plugins handles kind "nick" \(kinds present: nic\); fix: /],
    ['a plugin that is not installed', { ...GOOD, plugins: [{ package: '@remus/nic-nope', subkinds: { 'nic-nope': {} } }] }, /plugins\[0\]\.package: .*not installed.*pnpm add @remus\/nic-nope/],
    ['a subkind the plugin lacks', { ...GOOD, plugins: [{ package: '@remus/nic-nfqueue', subkinds: { 'nic-nfq': {} } }] }, /plugins\[0\]\.subkinds\.nic-nfq: .*; fix: use one of: nic-nfqueue/],
    ['bad subkind options', { ...GOOD, plugins: [{ package: '@remus/nic-nfqueue', subkinds: { 'nic-nfqueue': { maxPackets: -1 } } }] }, /plugins\[0\]\.subkinds\.nic-nfqueue: .*maxPackets/],
    ['not JSON', '{ "intervalMs": 5, }', /\$: is not valid JSON/],
    // A NIC that exists (lo, in every namespace): the config pass (which looks for interfaces) lets it through to the program check.
    ['a program that does not exist', { ...GOOD, devices: [{ id: 'lo0', kind: 'nic', params: { ifname: 'lo' } }], domain: { type: 'process', command: ['/no/such/program'] } }, /program "\/no\/such\/program" not found/],
  ];

  it.each(cases)('%s: exit 2, the path and the fix on stderr, nothing touched', async (_name, cfg, message) => {
    dir = tempDir('cfg').dir;
    state = tempDir('state').dir;
    const file = writeConfig(dir, 'remus.json', cfg);
    // The install hint follows the user's package manager (pnpm here, as in this workspace).
    const r = await remus(['run', '--config', file, '--state-dir', state], { npm_config_user_agent: 'pnpm/10.0.0 node/v20' });
    expect(r.stderr).toMatch(message);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(journals(state)).toEqual([]);
  });

  it('--json reports the error as a JSON event with the problems', async () => {
    dir = tempDir('cfg').dir;
    state = tempDir('state').dir;
    const file = writeConfig(dir, 'remus.json', { ...GOOD, schedule: 'x' });
    const r = await remus(['run', '--config', file, '--json', '--state-dir', state]);
    expect(r.code).toBe(2);
    const ev = JSON.parse(r.stdout.trim()) as { type: string; error: { code: string; details: { problems: ConfigProblem[] } } };
    expect(ev.type).toBe('error');
    expect(ev.error.code).toBe('INVALID_ARGUMENT');
    expect(ev.error.details.problems[0]?.path).toBe('schedule');
  });

  it('a missing --config, an unknown flag and an unknown command are usage errors', async () => {
    dir = tempDir('cfg').dir;
    state = tempDir('state').dir;
    expect((await remus(['run'])).stderr).toMatch(/--config is required/);
    const flag = await remus(['run', '--confg', 'x']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/\[INVALID_ARGUMENT\] .*confg/);
    // A positional argument to a command that takes none: a coded usage error too (it was an uncoded exit 1).
    const extra = await remus(['doctor', 'extra']);
    expect(extra.code).toBe(2);
    expect(extra.stderr).toMatch(/^remus: \[INVALID_ARGUMENT\] .*'extra'.* \(see remus --help\)/);
    const cmd = await remus(['rnu']);
    expect(cmd.code).toBe(2);
    expect(cmd.stderr).toMatch(/unknown command "rnu"/);
    expect((await remus(['run', '--config', '/no/such.json'])).stderr).toMatch(/cannot read config \/no\/such.json/);
  });
});
