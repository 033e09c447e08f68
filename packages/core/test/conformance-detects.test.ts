// The kit must fail subkinds that break the contract: run it in a child vitest
// on deliberately flawed subkinds and check which of its tests fail.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const here = new URL('.', import.meta.url).pathname;

function runKit(flaw: string): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'remus-kit-'));
  try {
    const out = join(dir, 'r.json');
    spawnSync('pnpm', ['exec', 'vitest', 'run', '--config', join(here, 'kit-fixtures', 'vitest.config.ts'), '--reporter=json', `--outputFile=${out}`], {
      cwd: join(here, '..'),
      env: { ...process.env, REMUS_FLAW: flaw },
      encoding: 'utf8',
    });
    const r = JSON.parse(readFileSync(out, 'utf8')) as { testResults: { assertionResults: { title: string; status: string }[] }[] };
    return r.testResults.flatMap((f) => f.assertionResults.filter((a) => a.status === 'failed').map((a) => a.title));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the conformance kit catches broken subkinds', () => {
  it('a teardown that is not idempotent fails "teardown twice"', () => {
    expect(runKit('teardown-not-idempotent')).toContain('tolerates teardown twice after a successful setup');
  }, 60_000);

  it('a teardown that needs a completed setup fails "setup never ran" and "aborted setup"', () => {
    expect(runKit('teardown-needs-setup')).toContain('tears down a device whose setup never ran (setup failed before its first step)');
  }, 60_000);

  it('a cleanup that leaks fails the leftover checks', () => {
    expect(runKit('leaks-on-cleanup')).toContain('cleans up right after init, with no device set up');
  }, 60_000);
});
