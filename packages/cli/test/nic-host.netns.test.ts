// Issue 14 item 8: the namespace and interface a `nic` device names are
// checked in the config pass of `remus plan/run`, read-only, before anything
// is touched: a missing one is a configuration error (INVALID_ARGUMENT,
// exit 2, every problem at once), with no journal written and the protected
// command never started. Needs root and network namespaces (a host/guest pair
// from @remus/test-lab, removed in afterAll).
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHostPair, netnsList, ownedName, tempDir, type HostPair } from '@remus/test-lab';
import { events, journals, remus, writeConfig } from './helpers.js';

let pair: HostPair;
let dir: string;
let state: string;
/** A namespace name of ours that nobody creates. */
const MISSING_NS = ownedName('rmcli');

beforeAll(() => {
  pair = createHostPair({ prefix: 'rmcli', net: 91 });
});

afterAll(() => {
  pair.destroy();
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(state, { recursive: true, force: true });
});

/** A config whose command would leave `<dir>/STARTED` if it ever ran. */
function configFile(devices: unknown[], plugins?: unknown[]): string {
  dir = tempDir('nic-host').dir;
  state = tempDir('state').dir;
  return writeConfig(dir, 'remus.json', {
    intervalMs: 50,
    domain: { type: 'process', command: ['touch', join(dir, 'STARTED')] },
    plugins: plugins ?? [
      { package: '@remus/nic-netbuf', subkinds: { 'nic-netbuf': {} } },
      { package: '@remus/nic-nfqueue', subkinds: { 'nic-nfqueue': {} } },
    ],
    devices,
  });
}

/** `remus plan` and `remus run` on `file`: both exit 2 with `message`, nothing touched. */
async function refusedByBoth(file: string, message: RegExp): Promise<string> {
  const plan = await remus(['plan', '--config', file]);
  expect(plan.code).toBe(2);
  expect(plan.stderr).toMatch(/\[INVALID_ARGUMENT\]/);
  expect(plan.stderr).toMatch(message);
  expect(plan.stdout).toBe('');
  const run = await remus(['run', '--config', file, '--state-dir', state, '--checkpoints', '1']);
  expect(run.code).toBe(2);
  expect(run.stderr).toMatch(message);
  expect(journals(state)).toEqual([]);
  expect(existsSync(join(dir, 'STARTED')), 'the protected command never ran').toBe(false);
  return run.stderr;
}

/**
 * A third-party plugin `remus-nic-<params>` next to the config: one subkind
 * `fake` of kind `nic` declaring `params`, whose match takes every device.
 */
function nicPlugin(params: readonly string[]): { package: string; subkinds: { fake: Record<string, never> } } {
  const name = `remus-nic-${params.join('-')}`;
  const pkg = join(dir, 'node_modules', name);
  mkdirSync(pkg, { recursive: true });
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name, version: '1.0.0', type: 'module', main: 'index.js', peerDependencies: { '@remus/core': '>=0.1.0 <1.0.0' } }));
  writeFileSync(
    join(pkg, 'index.js'),
    `export const plugin = { name: ${JSON.stringify(name)}, version: '1.0.0', subkinds: { fake: () => ({ name: 'fake', kind: 'nic', params: ${JSON.stringify(params)}, match: () => true, setup() {}, teardown() {} }) } };\n`,
  );
  return { package: name, subkinds: { fake: {} } };
}

describe('nic devices: namespace and interface checked before the host is touched (14.8)', () => {
  it('a namespace that does not exist: exit 2 naming device and namespace', async () => {
    const before = netnsList();
    await refusedByBoth(configFile([{ id: 'guest0', kind: 'nic', params: { ifname: 'vh0', netns: MISSING_NS } }]), new RegExp(`devices\\[0\\]\\.params\\.netns: device guest0: network namespace ${MISSING_NS} does not exist`));
    expect(netnsList()).toEqual(before);
  });

  it('an interface that does not exist in the namespace: exit 2 naming device, interface and namespace', async () => {
    await refusedByBoth(configFile([{ id: 'guest0', kind: 'nic', params: { ifname: 'nosuch0', netns: pair.host } }]), new RegExp(`devices\\[0\\]\\.params\\.ifname: device guest0: interface nosuch0 does not exist in network namespace ${pair.host}`));
  });

  it("an interface that exists only in another namespace is looked for where the device says (default: remus's own)", async () => {
    await refusedByBoth(configFile([{ id: pair.nics[0], kind: 'nic' }]), /device vh0: interface vh0 does not exist in remus's own network namespace \(params\.ifname defaults to the device id\)/);
  });

  it('every problem at once: two bad devices and an unknown param, the good device not mentioned', async () => {
    const stderr = await refusedByBoth(
      configFile([
        { id: 'good', kind: 'nic', params: { ifname: 'vh0', netns: pair.host } },
        { id: 'typo', kind: 'nic', params: { ifname: 'vh1', netns: pair.host } },
        { id: 'nons', kind: 'nic', params: { ifname: 'vh0', netns: MISSING_NS } },
        { id: 'param', kind: 'nic', params: { ifname: 'nosuch1', netns: pair.host, mdoe: 'routed' } },
      ]),
      /3 problem\(s\)/,
    );
    expect(stderr).toMatch(/devices\[1\]\.params\.ifname: device typo: interface vh1 does not exist/);
    expect(stderr).toMatch(/devices\[2\]\.params\.netns: device nons: network namespace \S+ does not exist/);
    expect(stderr).toMatch(/devices\[3\]\.params\.mdoe: .*did you mean "mode"/);
    // A device whose params are wrong is reported for them, not also for its interface.
    expect(stderr).not.toMatch(/nosuch1/);
    expect(stderr).not.toMatch(/device good/);
  });

  it('an interface that exists passes the check: plan assigns it', async () => {
    const r = await remus(['plan', '--config', configFile([{ id: 'guest0', kind: 'nic', params: { ifname: 'vh0', netns: pair.host } }]), '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(events(r.stdout)[0]).toMatchObject({ type: 'plan', devices: [{ device: 'guest0', subkind: 'nic-nfqueue' }] });
    expect(existsSync(join(dir, 'STARTED'))).toBe(false);
  });

  it("a device without params.netns is also looked for in nic-nfqueue's netns option (its default namespace)", async () => {
    const r = await remus(['plan', '--config', configFile([{ id: 'guest0', kind: 'nic', params: { ifname: 'vh0' } }], [{ package: '@remus/nic-nfqueue', subkinds: { 'nic-nfqueue': { netns: pair.host } } }])]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/guest0 \(nic\): nic-nfqueue/);
  });

  it("which subkinds: any that declares core's nic params (ifname, netns, buffer); one with other params is left to its match", async () => {
    const file = configFile([{ id: 'guest0', kind: 'nic', params: { ifname: 'nosuch0', netns: pair.host } }]);
    const base = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    const reader = await remus(['plan', '--config', writeConfig(dir, 'reader.json', { ...base, plugins: [nicPlugin(['ifname', 'netns', 'buffer'])] })]);
    expect(reader.code).toBe(2);
    expect(reader.stderr).toMatch(/device guest0: interface nosuch0 does not exist in network namespace/);
    const other = await remus(['plan', '--config', writeConfig(dir, 'other.json', { ...base, plugins: [nicPlugin(['ifname', 'netns'])] })]);
    expect(other.stderr).toBe('');
    expect(other.stdout).toMatch(/guest0 \(nic\): fake/);
  });

  it('a device with params.buffer: false is not looked for (every NIC subkind declines it)', async () => {
    const r = await remus(['plan', '--config', configFile([{ id: 'guest0', kind: 'nic', params: { ifname: 'nosuch0', netns: pair.host, buffer: false } }])]);
    expect(r.stderr).not.toMatch(/nosuch0 does not exist/);
    expect(r.stdout).toMatch(/guest0 \(nic\): NOT SUPPORTED/);
  });
});
