// The script runner, with real scripts in a temp dir.
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RemusError, processAlive, runScript } from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'remus-script-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

async function failure(p: Promise<unknown>): Promise<RemusError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(RemusError);
  return e as RemusError;
}

/** Running (a zombie waiting for a reaper counts as gone). */
const alive = (pid: number): boolean => processAlive(pid);

describe('runScript', () => {
  it('passes arguments as a vector (no shell) and the environment, and returns stdout', async () => {
    const s = script('echo.sh', 'printf "%s|" "$@"; printf "%s" "$vifname"');
    const r = await runScript(s, ['a b', '$(touch /tmp/remus-pwned)', ';x'], { env: { vifname: 'vif1.0' } });
    expect(r.stdout).toBe('a b|$(touch /tmp/remus-pwned)|;x|vif1.0');
    expect(r.exitCode).toBe(0);
    expect(existsSync('/tmp/remus-pwned')).toBe(false);
  });

  it('a non-zero exit is SCRIPT_FAILED carrying the exit code and the tail of stderr', async () => {
    const s = script('fail.sh', 'echo "first line" >&2; echo "cannot find ifb" >&2; exit 3');
    const e = await failure(runScript(s, []));
    expect(e.code).toBe('SCRIPT_FAILED');
    expect(e.details['exitCode']).toBe(3);
    expect(e.details['stderrTail']).toContain('cannot find ifb');
    expect(e.message).toContain('exited with code 3');
  });

  it('accepts chosen exit codes as success (probe conventions)', async () => {
    const s = script('probe.sh', 'exit 1');
    expect((await runScript(s, [], { okExitCodes: [0, 1] })).exitCode).toBe(1);
  });

  it('a timeout kills the whole process group, children included', async () => {
    const pidFile = join(dir, 'child.pid');
    const s = script('hang.sh', `sleep 30 & echo $! > ${pidFile}; wait`);
    const e = await failure(runScript(s, [], { timeoutMs: 300, killGraceMs: 100 }));
    expect(e.code).toBe('SCRIPT_TIMEOUT');
    const child = Number(readFileSync(pidFile, 'utf8'));
    expect(child).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(child)).toBe(false);
  });

  it('an abort kills the process group and rejects ABORTED', async () => {
    const s = script('abort.sh', 'sleep 30');
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stop')), 100);
    const e = await failure(runScript(s, [], { signal: ac.signal, killGraceMs: 100 }));
    expect(e.code).toBe('ABORTED');
  });

  it('a missing script is SCRIPT_FAILED naming it', async () => {
    const e = await failure(runScript(join(dir, 'nope.sh'), []));
    expect(e.code).toBe('SCRIPT_FAILED');
    expect(e.message).toContain('nope.sh');
  });
});
