// Kernel lab self-test: boots the real 6.1 kernel under QEMU (needs root and
// `pnpm lab:setup`; fails loudly without them). One shared boot for most
// tests; crash and timeout tests reboot on purpose.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRemusError, processAlive, procStat } from '@remus/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertLabReady,
  expectLabPass,
  formatLabResult,
  repoRoot,
  runInLab,
  setupLab,
  startLab,
  type LabResult,
  type LabSession,
} from '../src/index.js';

const nodeBody = fileURLToPath(new URL('./fixtures/node-body.mjs', import.meta.url));
const distIndex = fileURLToPath(new URL('../dist/index.js', import.meta.url));
/** A child program that prints `CODE message` of assertLabReady's error (needs the built dist). */
const probe = `import(${JSON.stringify(distIndex)}).then((m) => m.assertLabReady()).then(() => console.log('READY'), (e) => console.log(e.code + ' ' + e.message));`;

/** QEMU processes that are children of this process (setpriv execs QEMU in place). */
function ourQemuPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry)); // undefined: the process ended while we looked
    if (stat?.comm.startsWith('qemu-system') && stat.ppid === process.pid) pids.push(stat.pid);
  }
  return pids;
}

function show(r: LabResult): string {
  return formatLabResult(r);
}

describe('kernel lab (boots QEMU)', () => {
  let lab: LabSession;
  const hostTmp = mkdtempSync(join(tmpdir(), 'kernel-lab-test-'));

  beforeAll(async () => {
    lab = await startLab();
  });

  afterAll(async () => {
    const pid = lab?.pid;
    await lab?.close();
    rmSync(hostTmp, { recursive: true, force: true });
    if (pid !== undefined) expect(() => process.kill(pid, 0)).toThrow();
    expect(ourQemuPids()).toEqual([]);
  });

  it('autoloads veth and sch_plug, loads ifb, act_mirred, cls_u32, sch_ingress and drbd, and a plug qdisc attaches', async () => {
    const r = await lab.run({
      script: `set -e
# The kernel loads veth and sch_plug by itself (request_module through busybox modprobe).
ip link add klab0 type veth peer name klab1
tc qdisc add dev klab0 root handle 1: plug limit 10000
grep -q '^sch_plug ' /proc/modules
for m in sch_plug ifb veth act_mirred cls_u32 sch_ingress drbd; do modprobe "$m"; done
for m in sch_plug ifb veth act_mirred cls_u32 sch_ingress drbd; do grep -q "^$m " /proc/modules || { echo "$m not loaded"; exit 1; }; done
tc qdisc show dev klab0 | grep -q 'qdisc plug 1:'
test "$(hostname)" = remus-lab
head -1 /proc/drbd
echo modules-ok
`,
    });
    expectLabPass(r);
    expect(r.exitCode).toBe(0);
    expect(r.output).toContain('modules-ok');
    expect(r.output).toMatch(/version: 8\.4/);
  });

  it('reports a failing script as fail with its exit code and its stdout and stderr', async () => {
    const r = await lab.run({ script: 'echo to-stdout\necho to-stderr >&2\nexit 7\n' });
    expect(r.outcome, show(r)).toBe('fail');
    expect(r.exitCode).toBe(7);
    expect(r.output).toContain('to-stdout');
    expect(r.output).toContain('to-stderr');
    expect(() => expectLabPass(r)).toThrow(/fail \(exit code 7\)[\s\S]*to-stderr[\s\S]*console tail/);
  });

  it('reports a body killed by a signal as fail with 128 + the signal, and kills what it left running', async () => {
    const r = await lab.run({ script: 'sleep 300 &\necho $! > /tmp/kl-left-behind\nkill -KILL $$' });
    expect(r.outcome, show(r)).toBe('fail');
    expect(r.exitCode).toBe(137);
    // What the body left running in its process group is gone, and the control line was never the body's.
    const after = await lab.run({ script: 'if kill -0 "$(cat /tmp/kl-left-behind)" 2>/dev/null; then echo still-running; exit 1; fi\nif [ -e /proc/self/fd/3 ]; then echo fd3-open; exit 1; fi' });
    expectLabPass(after);
  });

  it('runs a compiled node program from the checkout with args and env, as root in the 6.1 kernel', async () => {
    const r = await lab.run({ node: { file: nodeBody, args: ['a b', "it's"] }, env: { KL_FIXTURE: 'from-host' } });
    expectLabPass(r);
    const line = r.output.trim().split('\n').at(-1) ?? '';
    expect(JSON.parse(line)).toEqual({ args: ['a b', "it's"], env: 'from-host', release: expect.stringMatching(/^6\.1\./), code: 'STATE', uid: 0 });
    const failing = await lab.run({ node: { file: nodeBody }, env: { KL_EXIT: '4' } });
    expect(failing.outcome, show(failing)).toBe('fail');
    expect(failing.exitCode).toBe(4);
  });

  it('shows the checkout read-only at its host path, host folders under /tmp, and a private guest /tmp', async () => {
    writeFileSync(join(hostTmp, 'from-host.txt'), 'hello from the host\n');
    const root = repoRoot();
    const r = await lab.run({
      script: `set -e
test -f ${JSON.stringify(join(root, 'pnpm-workspace.yaml'))}
if touch ${JSON.stringify(join(root, 'kernel-lab-write-probe'))} 2>/dev/null; then echo "checkout is writable"; exit 1; fi
cat ${JSON.stringify(join(hostTmp, 'from-host.txt'))}
echo guest-only > /tmp/guest-file
pwd
`,
      shares: [hostTmp],
    });
    expectLabPass(r);
    expect(r.output).toContain('hello from the host');
    expect(r.output).toContain(root);
    // A new file written after the boot is seen.
    writeFileSync(join(hostTmp, 'later.txt'), 'written later\n');
    const later = await lab.run({ script: `cat ${JSON.stringify(join(hostTmp, 'later.txt'))}`, shares: [hostTmp] });
    expectLabPass(later);
    expect(later.output).toContain('written later');
  });

  it('reports a body that outlives its timeout as timeout and kills the guest', async () => {
    const r = await lab.run({ script: 'echo started; sleep 600', timeoutMs: 5000 });
    expect(r.outcome, show(r)).toBe('timeout');
    expect(r.exitCode).toBeUndefined();
    expect(r.output).toContain('started');
    expect(lab.pid).toBeUndefined();
  });

  it('boots a new guest for the run after a timeout, and reports a guest that powers off without reporting as crash', async () => {
    const pidBefore = lab.pid;
    const r = await lab.run({ script: 'echo going-down; poweroff -f; sleep 60' });
    expect(r.outcome, show(r)).toBe('crash');
    expect(r.exitCode).toBeUndefined();
    expect(r.output).toContain('going-down');
    expect(r.output).toMatch(/without reporting/);
    expect(lab.pid).toBeUndefined();
    if (pidBefore !== undefined) expect(() => process.kill(pidBefore, 0)).toThrow();
  });



});

describe('kernel lab one-shot runs and errors', () => {
  it('runInLab boots, runs one body, reports a kernel crash (sysrq c) as crash and leaves no QEMU behind', async () => {
    const r = await runInLab({ script: 'echo crashing\necho c > /proc/sysrq-trigger\nsleep 60' });
    expect(r.outcome, show(r)).toBe('crash');
    expect(r.exitCode).toBeUndefined();
    expect(r.output).toContain('crashing');
    expect(r.console).toMatch(/sysrq|Kernel panic/i);
    expect(ourQemuPids()).toEqual([]);
  });

  it('a process SIGKILLed with a guest up leaves no QEMU, and the next boot removes its temp folder', async () => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(distIndex)}).then(async (m) => { const l = await m.startLab(); console.log('PID', l.pid); setInterval(() => {}, 1000); });`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const qemuPid = await new Promise<number>((resolvePid, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /PID (\d+)/.exec(out);
        if (m) resolvePid(Number(m[1]));
      });
      child.once('exit', (code) => reject(new Error(`child exited with ${code} before booting: ${out}`)));
    });
    const runDirs = () => readdirSync(tmpdir()).filter((d) => d.startsWith('remus-lab-') && readFileSync(join(tmpdir(), d, 'owner'), 'utf8').split(' ')[0] === String(child.pid));
    expect(runDirs()).toHaveLength(1);
    child.kill('SIGKILL');
    const gone = () => !processAlive(qemuPid);
    for (let i = 0; i < 100 && !gone(); i++) await new Promise((r) => setTimeout(r, 100));
    expect(gone()).toBe(true);
    await startLab({ bootTimeoutMs: 1 }).catch(() => undefined);
    expect(runDirs()).toEqual([]);
  });

  it('reports a boot that does not finish in time as timeout, with the console tail', async () => {
    const r = await runInLab({ script: 'true', bootTimeoutMs: 500 });
    expect(r.outcome, show(r)).toBe('timeout');
    expect(r.output).toMatch(/did not (boot|open)/);
    expect(typeof r.console).toBe('string');
    expect(ourQemuPids()).toEqual([]);
    const err = await startLab({ bootTimeoutMs: 500 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isRemusError(err, 'TIMEOUT'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/console tail/);
    expect(ourQemuPids()).toEqual([]);
  });

  it('rejects a run with both or neither of script and node', async () => {
    await expect(runInLab({})).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(runInLab({ script: 'true', node: { file: nodeBody } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('says the lab needs root when run as another user', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', probe], {
      encoding: 'utf8',
    });
    expect(r.stdout, r.stderr).toMatch(/^UNSUPPORTED_HOST .*needs root/);
  });

  it('says QEMU is missing when qemu-system-x86_64 is not on PATH', () => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', env: { ...process.env, PATH: '/nonexistent' } });
    expect(r.stdout, r.stderr).toMatch(/^UNSUPPORTED_HOST .*needs QEMU.*pnpm lab:setup/);
  });

  it('tells to run pnpm lab:setup when the cache is not set up', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'kernel-lab-empty-'));
    const saved = process.env.REMUS_LAB_CACHE;
    process.env.REMUS_LAB_CACHE = empty;
    try {
      await expect(assertLabReady()).rejects.toMatchObject({ code: 'STATE', message: expect.stringContaining('pnpm lab:setup') });
      await expect(runInLab({ script: 'true' })).rejects.toMatchObject({ code: 'STATE' });
    } finally {
      if (saved === undefined) delete process.env.REMUS_LAB_CACHE;
      else process.env.REMUS_LAB_CACHE = saved;
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('setup says when the kernel package is gone from the mirror, and leaves no download behind', async () => {
    const { stamp } = await setupLab();
    const cache = mkdtempSync(join(tmpdir(), 'kernel-lab-gone-'));
    const saved = process.env.REMUS_LAB_CACHE;
    process.env.REMUS_LAB_CACHE = cache;
    try {
      const err = await setupLab({ kernelPackage: { name: stamp.package, version: '0.0.0-gone' } }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isRemusError(err, 'OP_FAILED'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/could not download .*0\.0\.0-gone.*gone from the mirror/);
      expect(readdirSync(cache)).toEqual([]);
    } finally {
      if (saved === undefined) delete process.env.REMUS_LAB_CACHE;
      else process.env.REMUS_LAB_CACHE = saved;
      rmSync(cache, { recursive: true, force: true });
    }
  });

  it('setup says apt is unreachable when the mirror cannot be reached', async () => {
    const { stamp } = await setupLab();
    const dir = mkdtempSync(join(tmpdir(), 'kernel-lab-noapt-'));
    // apt reads APT_CONFIG: a proxy on a closed loopback port makes every fetch fail.
    writeFileSync(join(dir, 'apt.conf'), 'Acquire::http::Proxy "http://127.0.0.1:9";\nAcquire::https::Proxy "http://127.0.0.1:9";\nAcquire::Retries "0";\n');
    const saved = { cache: process.env.REMUS_LAB_CACHE, apt: process.env.APT_CONFIG };
    process.env.REMUS_LAB_CACHE = join(dir, 'cache');
    process.env.APT_CONFIG = join(dir, 'apt.conf');
    try {
      const err = await setupLab({ kernelPackage: { name: stamp.package, version: '0.0.0-gone' } }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isRemusError(err, 'OP_FAILED'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/apt is unreachable[\s\S]*127\.0\.0\.1:9/);
    } finally {
      for (const [k, v] of [['REMUS_LAB_CACHE', saved.cache], ['APT_CONFIG', saved.apt]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('setup is idempotent: run again on a set-up cache it downloads and builds nothing', async () => {
    const before = await assertLabReady();
    const r = await setupLab();
    expect(r.cached).toBe(true);
    expect(r.steps).toEqual([]);
    expect(r.stamp).toEqual(before);
  });
});
