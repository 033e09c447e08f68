/**
 * Doctor checks and the checks before anything is touched, on this host's
 * real criu and kernel. The expectation follows the facts of criu.md: CRIU
 * before 4.1 fails `criu check` on the vDSO of kernels 6.13+.
 */
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CRIU_TOO_OLD_MESSAGE, CriuErrors, assertCriuReady, criuDomain, doctorChecks, failover } from '../src/index.js';

const [major, minor] = release().split('.').map(Number) as [number, number];
const newKernel = major > 6 || (major === 6 && minor >= 13);

describe('doctor', () => {
  it('says criu is missing, with the install hint, when the program is not there', async () => {
    const checks = await doctorChecks({ criuPath: '/nonexistent/criu' });
    const c = checks.find((x) => x.name === 'criu');
    expect(c).toMatchObject({ status: 'error', code: CriuErrors.CRIU_MISSING });
    expect(c?.message).toContain('apt-get install criu');
  });

  it(`reports the host's criu against its kernel ${release()}`, async () => {
    const checks = await doctorChecks();
    expect(checks.find((x) => x.name === 'root')?.status).toBe(process.getuid?.() === 0 ? 'ok' : 'error');
    const check = checks.find((x) => x.name === 'criu-check');
    // CI installs criu (.ci/run) and runs as root: both are required here, not skipped.
    expect(checks.find((x) => x.name === 'criu')?.status).toBe('ok');
    expect(process.getuid?.()).toBe(0);
    const version = checks.find((x) => x.name === 'criu')?.message ?? '';
    const old = /\s3\.|\s4\.0/.test(version);
    if (newKernel && old) {
      expect(check).toMatchObject({ status: 'error', code: CriuErrors.CRIU_TOO_OLD });
      expect(check?.message).toContain(CRIU_TOO_OLD_MESSAGE);
    } else {
      expect(check?.status).toBe('ok');
    }
  });
});

/** A stand-in criu (fault injection only): prints the given `check` outputs and exit codes. */
function fakeCriu(o: { check: string; checkCode: number; dirtyCode: number }): { path: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'rmcriu-fake-'));
  const path = join(dir, 'criu');
  writeFileSync(
    path,
    [
      '#!/bin/sh',
      'if [ "$1" = --version ]; then echo "Version: 3.17.1"; exit 0; fi',
      'if [ "$1" = check ] && [ "$2" = --feature ]; then exit ' + String(o.dirtyCode) + '; fi',
      `if [ "$1" = check ]; then printf '%s\\n' ${JSON.stringify(o.check).replace(/"/g, "'")} >&2; exit ${o.checkCode}; fi`,
      'exit 1',
      '',
    ].join('\n'),
  );
  chmodSync(path, 0o755);
  return { path, dir };
}

describe('doctor on a faked criu check output', () => {
  it('names the vDSO failure as "CRIU 4.1 or later is needed on kernel 6.13+"', async () => {
    const f = fakeCriu({ check: 'Error (criu/vdso.c:262): vdso: Unexpected rt vDSO area bounds', checkCode: 1, dirtyCode: 0 });
    const checks = await doctorChecks({ criuPath: f.path });
    const c = checks.find((x) => x.name === 'criu-check');
    expect(c).toMatchObject({ status: 'error', code: CriuErrors.CRIU_TOO_OLD });
    expect(c?.message).toContain(CRIU_TOO_OLD_MESSAGE);
    expect(c?.message).toContain('Unexpected rt vDSO area bounds');
    await expect(assertCriuReady({ criuPath: f.path })).rejects.toMatchObject({ code: CriuErrors.CRIU_TOO_OLD });
    rmSync(f.dir, { recursive: true, force: true });
  });

  it('another check failure is CRIU_UNUSABLE with criu\'s own words, not the version hint', async () => {
    const f = fakeCriu({ check: 'Error (criu/cr-check.c:1): seccomp is not supported', checkCode: 1, dirtyCode: 0 });
    const c = (await doctorChecks({ criuPath: f.path })).find((x) => x.name === 'criu-check');
    expect(c).toMatchObject({ status: 'error', code: CriuErrors.CRIU_UNUSABLE });
    expect(c?.message).toContain('seccomp is not supported');
    expect(c?.message).not.toContain(CRIU_TOO_OLD_MESSAGE);
    rmSync(f.dir, { recursive: true, force: true });
  });

  it('soft-dirty missing is a warning (full dumps), not an error', async () => {
    const f = fakeCriu({ check: 'Looks good.', checkCode: 0, dirtyCode: 1 });
    const checks = await doctorChecks({ criuPath: f.path });
    expect(checks.find((x) => x.name === 'criu-check')?.status).toBe('ok');
    expect(checks.find((x) => x.name === 'soft-dirty')).toMatchObject({ status: 'warning' });
    expect(checks.find((x) => x.name === 'soft-dirty')?.message).toContain('full dump');
    await expect(assertCriuReady({ criuPath: f.path })).resolves.toMatchObject({ softDirty: false });
    rmSync(f.dir, { recursive: true, force: true });
  });
});

describe('checks before anything is touched', () => {
  it('a domain with a missing criu refuses at start and creates no cgroup or work dir', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rmcriu-doc-'));
    const d = criuDomain({ pid: process.pid, workDir: join(dir, 'w'), backup: { path: join(dir, 'none.sock') }, criuPath: '/nonexistent/criu', operation: 'rmcriu-doctor' });
    await expect(d.start()).rejects.toMatchObject({ code: CriuErrors.CRIU_MISSING });
    expect(d.cgroupPath).toBeUndefined();
    expect(existsSync(join(dir, 'w'))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a failover with a missing criu refuses, adds nothing and can be retried', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rmcriu-doc-'));
    await expect(failover({ restorePoint: dir, criuPath: '/nonexistent/criu' })).rejects.toMatchObject({ code: CriuErrors.CRIU_MISSING });
    expect(existsSync(join(dir, '.failover'))).toBe(false);
    await expect(failover({ restorePoint: dir, criuPath: '/nonexistent/criu' })).rejects.toMatchObject({ code: CriuErrors.CRIU_MISSING });
    rmSync(dir, { recursive: true, force: true });
  });

  it('a second failover while one runs is refused with STATE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rmcriu-doc-'));
    const first = failover({ restorePoint: dir });
    await expect(failover({ restorePoint: dir })).rejects.toMatchObject({ code: 'STATE' });
    await first.catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a bad service address before touching anything', async () => {
    await expect(failover({ restorePoint: '/nonexistent', serviceAddress: { address: '10.0.0.1', dev: 'eth0' } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
