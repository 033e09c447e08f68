// `remus plan` and `remus run` on this package's remus.json, as a user runs
// them: a project directory whose node_modules holds this package (linked, as
// an install would place it), the built CLI in a child process. `run` needs
// root (the process domain's cgroup freezer).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const here = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(dirname(createRequire(import.meta.url).resolve('@remus/cli/package.json')), 'dist', 'bin.js');
const project = mkdtempSync(join(tmpdir(), 'remus-template-'));
const markers = join(project, 'markers');
afterAll(() => rmSync(project, { recursive: true, force: true }));

mkdirSync(join(project, 'node_modules'), { recursive: true });
mkdirSync(markers);
symlinkSync(here, join(project, 'node_modules', 'remus-subkind-template'));
const config = JSON.parse(readFileSync(join(here, 'remus.json'), 'utf8'));
config.devices[0].params.dir = markers;
writeFileSync(join(project, 'remus.json'), JSON.stringify(config));

function remus(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [BIN, ...args], { cwd: project, encoding: 'utf8', timeout: 50_000 });
}

describe('the template with the remus CLI', () => {
  it('remus plan loads the plugin from the config directory and assigns the device to marker', () => {
    const r = remus(['plan', '--config', join(project, 'remus.json')]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('notes (marker): marker');
  });

  it('remus run protects a process for 3 checkpoints with the marker device, and leaves no marker (as root)', () => {
    const state = join(project, 'state');
    const r = remus(['run', '--config', join(project, 'remus.json'), '--checkpoints', '3', '--json', '--state-dir', state]);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; ok?: boolean; assignments?: unknown });
    expect(r.status, r.stderr).toBe(0);
    expect(events.find((e) => e.type === 'setup')?.assignments).toEqual([{ device: 'notes', subkind: 'marker' }]);
    expect(events.filter((e) => e.type === 'checkpoint')).toHaveLength(3);
    expect(events.at(-1)).toMatchObject({ type: 'end', ok: true });
    expect(readdirSync(markers)).toEqual([]);
    expect(readdirSync(state)).toEqual([]);
  });
});
