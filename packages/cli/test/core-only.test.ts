// @remus/cli installed with @remus/core alone (issue 13): every command that
// needs another package names it, with the install command, exit 2, before
// anything is touched. The install is a temp project whose node_modules holds
// a copy of this package's dist and a link to the workspace's core, as npm
// would lay them out.
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linkedProject, tempDir } from '@remus/test-lab';
import { journals, writeConfig } from './helpers.js';
import { spawnSync } from 'node:child_process';

const CLI = fileURLToPath(new URL('..', import.meta.url));
const CORE = fileURLToPath(new URL('../../core', import.meta.url));
let project: string;
let bin: string;

let removeProject: () => void;

beforeAll(() => {
  // A user's project with @remus/core installed (linked), and a copy of the cli beside it (a link would resolve its workspace devDependencies).
  ({ dir: project, remove: removeProject } = linkedProject('@remus/core', CORE));
  const cli = join(project, 'node_modules', '@remus', 'cli');
  mkdirSync(cli, { recursive: true });
  cpSync(join(CLI, 'dist'), join(cli, 'dist'), { recursive: true });
  cpSync(join(CLI, 'package.json'), join(cli, 'package.json'));
  bin = join(cli, 'dist', 'bin.js');
});
afterAll(() => removeProject());

function remus(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: project, encoding: 'utf8', env: { ...process.env, npm_config_user_agent: 'npm/10.8.2 node/v20' }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('remus with @remus/core alone', () => {
  it('--version and help work', () => {
    expect(remus(['--version']).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it.each([
    ['demo', ['demo', '--duration', '100'], '@remus/domain-process'],
    ['backup', ['backup', '--listen', '127.0.0.1:7788'], '@remus/domain-process'],
  ])('remus %s names the package to install', (_name, args, pkg) => {
    const state = tempDir('state').dir;
    try {
      const r = remus([...args, ...(args[0] === 'demo' ? ['--state-dir', state] : [])]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`[PLUGIN_NOT_FOUND] remus ${args[0]}`);
      expect(r.stderr).toContain(`needs ${pkg}, which is not installed`);
      expect(r.stderr).toContain(`npm install ${pkg}`);
      expect(r.stderr).toContain('npm install @remus/all');
      expect(journals(state)).toEqual([]);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  it('remus run names @remus/domain-process before writing a journal', () => {
    const state = tempDir('state').dir;
    try {
      const file = writeConfig(project, 'remus.json', { domain: { type: 'process', command: ['sleep', '1'] } });
      const r = remus(['run', '--config', file, '--state-dir', state]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/\[PLUGIN_NOT_FOUND\] remus run \(the process domain\) needs @remus\/domain-process.*npm install @remus\/domain-process/);
      expect(journals(state)).toEqual([]);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  it('remus colo start names @remus/colo', () => {
    const state = tempDir('state').dir;
    try {
      const dev = (kind: string, params: Record<string, unknown>) => ({ id: `${kind}0`, kind, params });
      const pair = {
        primary: { qmp: '/tmp/none-p.qmp', devices: [dev('nic', { netdev: 'hn0', mirror: '127.0.0.1:9003', compare: '127.0.0.1:9004', primaryIn: { path: '/tmp/in.sock' }, compareOut: { path: '/tmp/out.sock' } }), dev('disk', { quorum: 'q0', nbd: '127.0.0.1:9999', export: 'p0' })] },
        secondary: { qmp: '/tmp/none-s.qmp', devices: [dev('nic', { netdev: 'hn0', mirror: '127.0.0.1:9003', compare: '127.0.0.1:9004' }), dev('disk', { node: 'p0', nbd: '127.0.0.1:9999' })] },
        migrationUri: 'tcp:127.0.0.1:9998',
      };
      const r = remus(['colo', 'start', writeConfig(project, 'web.json', pair), '--state-dir', state]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/\[PLUGIN_NOT_FOUND\] remus colo start needs @remus\/colo.*npm install @remus\/colo/);
      expect(journals(state)).toEqual([]);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});
