/**
 * Doctor checks and the checks before anything is touched, on this host's
 * real criu and kernel. The expectation follows the facts of criu.md: CRIU
 * before 4.1 fails `criu check` on the vDSO of kernels 6.13+.
 */
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CRIU_TOO_OLD_MESSAGE, CriuErrors, criuDomain, doctorChecks, failover } from '../src/index.js';

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
    if (checks.find((x) => x.name === 'criu')?.status !== 'ok' || process.getuid?.() !== 0) return;
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
