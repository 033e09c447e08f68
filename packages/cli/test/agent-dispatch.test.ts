import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));

describe('remus agent dispatch', () => {
  it('names the package to install when @remus/agent is not installed next to the CLI (the CLI does not depend on it)', () => {
    // Node's own resolution from the built CLI: in this workspace @remus/agent is not a dependency of @remus/cli.
    const r = spawnSync(process.execPath, [BIN, 'agent', 'run', '--config', 'x.json', '--host', 'ha'], { cwd: tmpdir(), encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('npm install @remus/agent');
  });
});
