/**
 * The CLI's criu path on this host: config checks (closest names), and the
 * refusal before anything is touched where criu cannot work (this host:
 * Debian's CRIU 3.17 on kernel 6.13+ -> "CRIU 4.1 or later is needed on
 * kernel 6.13+"). The failover request path of `remus backup --domain criu`
 * (control socket) is driven with a stand-in criu whose `check` passes: the
 * real dump/restore path runs in @remus/domain-criu's kernel-lab test.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { release } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkConfig } from '../src/config.js';
import { Frame, encodeFrame, filePayload } from '@remus/domain-criu';
import { tempDir } from '@remus/test-lab';
import { cgroupsOf, journals, remus, start, writeConfig } from './helpers.js';

const [major, minor] = release().split('.').map(Number) as [number, number];
/** This host's criu cannot work here (Debian 12's 3.17 on 6.13+): what CI and the dev hosts run. */
const criuTooOld = major > 6 || (major === 6 && minor >= 13);

const base = { type: 'criu', pid: 4242, workDir: '/var/lib/remus/svc', backup: '10.0.0.2:7790' };
const problems = (domain: unknown): string[] => checkConfig({ domain }).problems.map((p) => `${p.path}: ${p.message}; ${p.fix}`);

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const temp = (): string => {
  const { dir } = tempDir('rmcriu-cli');
  dirs.push(dir);
  return dir;
};

describe('criu domain in the config', () => {
  it('accepts a criu domain and fills the defaults', () => {
    const r = checkConfig({ domain: { ...base, netns: 'svc', backup: { path: '/run/remus/svc.sock' }, fullEvery: 20 } });
    expect(r.problems).toEqual([]);
    expect(r.config?.domain).toMatchObject({ type: 'criu', pid: 4242, cgroup: 'auto', fullEvery: 20, backup: { path: '/run/remus/svc.sock' } });
  });

  it('names the closest known key, and every problem at once', () => {
    const p = problems({ type: 'criu', pid: 1, wrokDir: '/x', backup: 'nohost', fullEvery: 0 });
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^domain\.wrokDir: is not a known key; did you mean "workDir"/),
        expect.stringMatching(/^domain\.pid: 1 is not a process id/),
        expect.stringMatching(/^domain\.workDir: is missing/),
        expect.stringMatching(/^domain\.backup: "nohost" is not HOST:PORT/),
        expect.stringMatching(/^domain\.fullEvery: /),
      ]),
    );
    expect(p).toHaveLength(5);
  });

  it('refuses a command (a criu domain protects a running tree) and names the closest domain type', () => {
    expect(problems({ ...base, command: ['sleep', '9'] })).toEqual([expect.stringMatching(/^domain\.command: a criu domain protects a running tree; start the service yourself/)]);
    expect(problems({ ...base, type: 'crui' })[0]).toMatch(/^domain\.type: "crui" is not a domain type this remus knows; did you mean "criu"\?/);
  });
});

describe('where criu cannot work (this host and CI: Debian 12\'s CRIU 3.17 on a 6.13+ kernel; pinned, not skipped elsewhere)', () => {
  it('this host is one where criu cannot work: kernel 6.13+', () => {
    expect(criuTooOld).toBe(true);
  });

  it('remus run with a criu domain is refused with the CRIU message; no cgroup, no journal left, the service untouched', async () => {
    const dir = temp();
    const state = join(dir, 'state');
    const file = writeConfig(dir, 'remus.json', { domain: { ...base, pid: process.pid, workDir: join(dir, 'work'), backup: '127.0.0.1:47791' } });
    const r = await remus(['run', '--config', file, '--state-dir', state, '--json']);
    expect(r.code).toBe(1);
    const end = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; operation?: string; error?: { code: string; message: string } }).find((e) => e.type === 'end');
    expect(end?.error?.message).toContain('CRIU 4.1 or later is needed on kernel 6.13+');
    expect(end?.error?.code).toBe('criu/CRIU_TOO_OLD');
    expect(cgroupsOf(end?.operation as string)).toEqual([]);
    expect(journals(state)).toEqual([]);
    expect(existsSync(join(dir, 'work'))).toBe(false);
  });

  it('remus backup --domain criu is refused with the CRIU message before anything is made', async () => {
    const dir = join(temp(), 'backup');
    const r = await remus(['backup', '--domain', 'criu', '--dir', dir, '--listen', '127.0.0.1:47792']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[criu/CRIU_TOO_OLD] CRIU 4.1 or later is needed on kernel 6.13+');
    expect(existsSync(dir)).toBe(false);
  });

  it('remus backup (process or criu) refuses a --listen address other machines can reach, before the CRIU check and before anything is made', async () => {
    const dir = join(temp(), 'backup');
    const c = await remus(['backup', '--domain', 'criu', '--dir', dir, '--listen', '10.1.2.3:7790']);
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/--listen 10\.1\.2\.3:7790: this channel has no authentication, so anyone who reaches it could send checkpoint images that a failover restores as root\. Listen on 127\.0\.0\.1:PORT or a Unix socket path/);
    expect(c.stderr).not.toContain('CRIU_TOO_OLD');
    expect(existsSync(dir)).toBe(false);
    const p = await remus(['backup', '--listen', '0.0.0.0:47793']);
    expect(p.code).toBe(2);
    expect(p.stderr).toMatch(/--listen 0\.0\.0\.0:47793: this channel has no authentication.*remus agent/);
  });

  it('remus failover with no backup running checks first: refused with the CRIU message, no directory or lock made', async () => {
    const dir = join(temp(), 'backup');
    const r = await remus(['failover', '--dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[criu/CRIU_TOO_OLD] CRIU 4.1 or later is needed on kernel 6.13+');
    expect(existsSync(dir)).toBe(false);
  });
});

describe('remus backup --domain criu and remus failover (stand-in criu whose checks pass)', () => {
  it('usage errors name the closest value', async () => {
    const r = await remus(['backup', '--domain', 'crui', '--dir', '/tmp/x', '--listen', '127.0.0.1:1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('did you mean "criu"?');
    const f = await remus(['backup', '--domain', 'criu', '--dir', '/tmp/x', '--listen', '127.0.0.1:1', '--on-primary-lost', 'failvoer']);
    expect(f.code).toBe(2);
    expect(f.stderr).toContain('did you mean "failover"?');
    const s = await remus(['failover', '--dir', '/tmp/x', '--service-address', '10.0.0.100/24']);
    expect(s.code).toBe(2);
    expect(s.stderr).toContain('--service-address and --dev go together');
  });

  it('remus failover reaches the running backup over its control socket; its refusal comes back; SIGTERM stops the backup', async () => {
    const dir = temp();
    const criu = join(dir, 'criu');
    // Checks pass (`--version`, `check`, `check --feature`); nothing else is ever reached here.
    writeFileSync(criu, '#!/bin/sh\ncase "$1" in --version) echo "Version: 3.17.1";; check) echo "Looks good.";; *) echo "unexpected $*" >&2; exit 9;; esac\n');
    chmodSync(criu, 0o755);
    const images = join(dir, 'images');
    const b = start(['backup', '--domain', 'criu', '--dir', images, '--listen', join(dir, 'b.sock'), '--criu', criu, '--json']);
    const listening = await b.waitFor((e) => e.type === 'listening', 30_000);
    expect(listening.dir).toBe(images);
    expect(existsSync(join(images, '.control.sock'))).toBe(true);
    // No checkpoint arrived: the backup's failover refuses with NO_RESTORE_POINT, and goes on running.
    const f = await remus(['failover', '--dir', images, '--json']);
    expect(f.code).toBe(1);
    expect(f.stdout).toContain('asking the backup running on');
    expect(f.stdout).toContain('criu/NO_RESTORE_POINT');
    await b.waitFor((e) => e.type === 'failover-failed', 10_000);
    expect(existsSync(join(images, '.failover'))).toBe(false);
    // A second backup on the same directory is refused while the first runs.
    const second = await remus(['backup', '--domain', 'criu', '--dir', images, '--listen', join(dir, 'b2.sock'), '--criu', criu]);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('a backup already runs on');
    b.child.kill('SIGTERM');
    const done = await b.done;
    expect(done.code).toBe(0);
    expect(existsSync(join(images, '.control.sock'))).toBe(false);
  });

  it('--on-primary-lost failover: a primary that delivered a checkpoint and then closed triggers the failover at once (here criu restore fails: reported, the backup goes on)', async () => {
    const dir = temp();
    const criu = join(dir, 'criu');
    // Checks pass; `restore` (reached only through the trigger) logs its arguments and fails.
    writeFileSync(criu, `#!/bin/sh\ncase "$1" in --version) echo "Version: 3.17.1";; check) echo "Looks good.";; restore) echo "$*" > ${join(dir, 'restore-args')}; echo "Error: stand-in" >&2; exit 1;; *) exit 9;; esac\n`);
    chmodSync(criu, 0o755);
    const images = join(dir, 'images');
    const sock = join(dir, 'b.sock');
    const b = start(['backup', '--domain', 'criu', '--dir', images, '--listen', sock, '--criu', criu, '--on-primary-lost', 'failover', '--json']);
    await b.waitFor((e) => e.type === 'listening', 30_000);
    // One complete checkpoint over the real wire protocol, then the primary's connection closes.
    const s = connect(sock);
    await new Promise((r, j) => s.once('connect', r).once('error', j));
    const payload = filePayload('pages-1.img', Buffer.alloc(4096, 7));
    s.write(encodeFrame(Frame.BEGIN, 1, Buffer.from(JSON.stringify({ parent: null, epoch: 0 }))));
    s.write(encodeFrame(Frame.FILE, 1, payload));
    s.write(encodeFrame(Frame.END, 1, createHash('sha256').update(payload).digest()));
    await b.waitFor((e) => e.type === 'checkpoint' && e.checkpoint === 1, 10_000);
    s.destroy();
    const lost = await b.waitFor((e) => e.type === 'primary-lost', 10_000);
    expect(lost).toMatchObject({ kind: 'closed', restorePoint: 1 });
    const failed = await b.waitFor((e) => e.type === 'failover-failed', 30_000);
    expect((failed.error as { code: string }).code).toBe('criu/RESTORE_FAILED');
    expect(readFileSync(join(dir, 'restore-args'), 'utf8')).toContain('--tcp-established');
    expect(existsSync(join(images, '.failover'))).toBe(false);
    b.child.kill('SIGTERM');
    expect((await b.done).code).toBe(0);
  });
});
