/**
 * `pnpm lab:setup`: makes the host able to run the kernel lab. Idempotent;
 * a second run only checks (dpkg, apt-cache) and returns.
 */
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { RemusError } from '@remus/core';
import { buildCpio, type CpioEntry } from './cpio.js';
import { execCommand, tail } from './exec.js';
import { INIT_SCRIPT } from './guest-scripts.js';
import { labCacheDir, stampPath, type LabStamp } from './paths.js';

/**
 * apt packages the lab needs on the host. `criu` and `iputils-arping`: the
 * guest runs the host's criu (Debian 12's 3.17 works on the lab's 6.1 kernel)
 * and arping, for @remus/domain-criu's lab proof.
 */
export const LAB_APT_PACKAGES = ['qemu-system-x86', 'busybox-static', 'drbd-utils', 'xz-utils', 'criu', 'iputils-arping'] as const;

/** Modules /init loads before it can mount the host root; their dependencies come first. */
const BOOT_MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'overlay'];

/** Where busybox-static puts its binary. */
export const BUSYBOX = '/bin/busybox';

/** Identifies the `/init` this version of the lab puts in the initramfs. */
export const INIT_HASH = createHash('sha256').update(INIT_SCRIPT).digest('hex').slice(0, 16);

/** Bumped when the cache layout changes; an older stamp makes setup redo everything. */
const CACHE_FORMAT = 2;

export interface SetupOptions {
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /**
   * Use this kernel package instead of the current one in apt's lists (to
   * reproduce with an older kernel; the self-test pins a missing version to
   * check the "gone from the mirror" error). Default: the current one.
   */
  kernelPackage?: { name: string; version: string };
}

export interface SetupResult {
  stamp: LabStamp;
  /** True when nothing had to be downloaded or unpacked. */
  cached: boolean;
  /** What was done, in order. */
  steps: string[];
}

/** apt's environment, read at call time (APT_CONFIG and the like may change). */
const aptEnv = (): NodeJS.ProcessEnv => ({ ...process.env, DEBIAN_FRONTEND: 'noninteractive' });

/**
 * Runs `apt-get update`. Resolves undefined when every index was fetched,
 * else a description of what failed (apt-get exits 0 even when it could not
 * reach the mirror, so its warnings count).
 */
async function aptUpdate(log: (l: string) => void): Promise<string | undefined> {
  log('apt-get update');
  const r = await execCommand('apt-get', ['update'], { env: aptEnv(), timeoutMs: 300_000 });
  const text = `${r.stdout}\n${r.stderr}`;
  if (r.status === 0 && !/^(W|E): (Failed to fetch|Some index files failed)/m.test(text)) return undefined;
  return tail(text.split('\n').filter((l) => /^(W|E):/.test(l)).join('\n') || text);
}

function unreachable(step: string, problem: string): RemusError {
  return new RemusError('OP_FAILED', `kernel lab setup: apt is unreachable (${step}); apt-get update said:\n${problem}`, {
    details: { step },
  });
}

async function missingPackages(): Promise<string[]> {
  const r = await execCommand('dpkg-query', ['-W', '-f=${Package} ${db:Status-Abbrev}\n', ...LAB_APT_PACKAGES]);
  // One line per known package: `name ii ` when installed.
  const installed = new Set(
    r.stdout
      .split('\n')
      .map((l) => l.split(' '))
      .filter((f) => f[1] === 'ii')
      .map((f) => f[0]),
  );
  return LAB_APT_PACKAGES.filter((p) => !installed.has(p));
}

async function ensurePackages(log: (l: string) => void, steps: string[]): Promise<void> {
  const missing = await missingPackages();
  if (missing.length === 0) return;
  const install = () =>
    execCommand('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { env: aptEnv(), timeoutMs: 600_000 });
  log(`apt-get install ${missing.join(' ')}`);
  let r = await install();
  let problem: string | undefined;
  if (r.status !== 0) {
    problem = await aptUpdate(log);
    r = await install();
  }
  if (r.status !== 0 && problem !== undefined) throw unreachable(`apt-get install ${missing.join(' ')}`, problem);
  if (r.status !== 0) {
    throw new RemusError('OP_FAILED', `kernel lab setup: apt-get install ${missing.join(' ')} failed (apt unreachable?):\n${tail(r.stderr || r.stdout)}`, {
      details: { step: 'apt-get install', packages: missing },
    });
  }
  steps.push(`installed ${missing.join(' ')}`);
}

/**
 * The current 6.1 kernel package and its version per apt's lists (what the
 * `linux-image-amd64` metapackage depends on), or undefined. One apt-cache
 * call when the dependency pins the version (it does on Debian).
 */
async function findKernelPackage(): Promise<{ name: string; version: string } | undefined> {
  const meta = await execCommand('apt-cache', ['show', '--no-all-versions', 'linux-image-amd64']);
  const dep = /^Depends:.*?\b(linux-image-6\.1\.0-\d+-amd64)\b(?:\s*\(=\s*([^)\s]+)\))?/m.exec(meta.stdout);
  if (dep?.[1] === undefined) return undefined;
  if (dep[2] !== undefined) return { name: dep[1], version: dep[2] };
  const show = await execCommand('apt-cache', ['show', '--no-all-versions', dep[1]]);
  const version = /^Version:\s*(\S+)/m.exec(show.stdout)?.[1];
  return version === undefined ? undefined : { name: dep[1], version };
}

async function resolveKernelPackage(log: (l: string) => void): Promise<{ name: string; version: string }> {
  let pkg = await findKernelPackage();
  let problem: string | undefined;
  if (pkg === undefined) {
    problem = await aptUpdate(log);
    pkg = await findKernelPackage();
  }
  if (pkg === undefined && problem !== undefined) throw unreachable('finding the kernel package', problem);
  if (pkg === undefined) {
    throw new RemusError(
      'UNSUPPORTED_HOST',
      'kernel lab setup: apt knows no linux-image-6.1.0-*-amd64 (the dependency of linux-image-amd64); the lab needs Debian 12 (bookworm) package lists',
      { details: { step: 'find kernel package' } },
    );
  }
  return pkg;
}

async function readStamp(cacheDir: string): Promise<LabStamp | undefined> {
  try {
    const stamp = JSON.parse(await readFile(stampPath(cacheDir), 'utf8')) as LabStamp;
    if (stamp.format !== CACHE_FORMAT) return undefined;
    if (![stamp.kernel, stamp.initramfs, join(stamp.modulesDir, 'modules.dep')].every((p) => existsSync(p))) return undefined;
    return stamp;
  } catch {
    return undefined;
  }
}

/** Downloads `pkg` (never installs it) into `dir`; returns the .deb's path. */
async function downloadKernel(pkg: { name: string; version: string }, dir: string): Promise<string> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const r = await execCommand('apt-get', ['download', `${pkg.name}=${pkg.version}`], { cwd: dir, env: aptEnv(), timeoutMs: 600_000 });
  const deb = (await readdir(dir)).find((f) => f.endsWith('.deb'));
  if (r.status !== 0 || deb === undefined) {
    throw new RemusError(
      'OP_FAILED',
      `kernel lab setup: could not download ${pkg.name} ${pkg.version}: the package is gone from the mirror (apt-get update ran and the mirror answered):\n${tail(r.stderr || r.stdout)}`,
      { details: { step: 'apt-get download', package: pkg.name, version: pkg.version } },
    );
  }
  return join(dir, deb);
}

/**
 * Unpacks the ELF vmlinux from the xz-compressed bzImage. QEMU boots it
 * directly through its PVH entry, which skips decompressing the kernel under
 * emulation (about 9 s of a boot on a busy machine).
 */
async function extractVmlinux(vmlinuz: string, out: string): Promise<void> {
  const image = await readFile(vmlinuz);
  const magic = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
  for (let at = image.indexOf(magic); at >= 0; at = image.indexOf(magic, at + 1)) {
    const part = `${out}.xz`;
    await writeFile(part, image.subarray(at));
    const fd = openSync(out, 'w');
    const r = await execCommand('xz', ['-dc', '--single-stream', part], { stdoutFd: fd, timeoutMs: 300_000 }).finally(() => closeSync(fd));
    await rm(part, { force: true });
    const head = await readFile(out).then((b) => b.subarray(0, 4));
    if (r.status === 0 && head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) return;
  }
  await rm(out, { force: true });
  throw new RemusError('OP_FAILED', `kernel lab setup: could not unpack an ELF vmlinux from ${vmlinuz} (xz stream not found)`);
}

/**
 * Kernel modules `names` and their dependencies, in load order (dependencies
 * first), from `modules.dep` in `modulesDir`. Each must be an uncompressed
 * `.ko`. For initramfs builders (this lab's and the COLO lab's guest).
 */
export async function moduleLoadOrder(
  modulesDir: string,
  names: readonly string[],
): Promise<{ name: string; path: string; rel: string }[]> {
  const deps = new Map<string, string[]>();
  for (const line of (await readFile(join(modulesDir, 'modules.dep'), 'utf8')).split('\n')) {
    const [mod, rest] = line.split(':');
    if (mod === undefined || rest === undefined) continue;
    deps.set(mod.trim(), rest.trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map([...deps.keys()].map((p) => [p.replace(/^.*\//, '').replace(/\.ko(\.\w+)?$/, ''), p]));
  const order: { name: string; path: string; rel: string }[] = [];
  const seen = new Set<string>();
  const visit = (rel: string): void => {
    if (seen.has(rel)) return;
    seen.add(rel);
    for (const d of deps.get(rel) ?? []) visit(d);
    order.push({ name: rel.replace(/^.*\//, '').replace(/\.ko$/, ''), path: join(modulesDir, rel), rel });
  };
  for (const m of names) {
    const rel = byName.get(m);
    if (rel === undefined || !rel.endsWith('.ko')) {
      throw new RemusError('OP_FAILED', `kernel lab: module ${m} (uncompressed .ko) not found in ${modulesDir}`);
    }
    visit(rel);
  }
  return order;
}

/** Builds the initramfs (busybox, /init, boot modules) as a newc archive. */
async function buildInitramfs(modulesDir: string): Promise<Buffer> {
  const modules = await moduleLoadOrder(modulesDir, BOOT_MODULES);
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'proc', 'sys', 'modules', 'lower', 'share', 'rw', 'newroot'].map((d) => ({ type: 'dir' as const, path: d })),
    { type: 'char', path: 'dev/console', major: 5, minor: 1 },
    { type: 'file', path: 'bin/busybox', data: await readFile(BUSYBOX), mode: 0o755 },
    { type: 'file', path: 'init', data: Buffer.from(INIT_SCRIPT), mode: 0o755 },
    { type: 'file', path: 'modules/order', data: Buffer.from(modules.map((m) => m.name).join('\n') + '\n') },
  ];
  for (const applet of ['sh', 'mount', 'insmod', 'mkdir', 'sleep', 'cat', 'echo', 'ln', 'ip', 'stty', 'switch_root']) {
    entries.push({ type: 'symlink', path: `bin/${applet}`, target: 'busybox' });
  }
  for (const m of modules) entries.push({ type: 'file', path: `modules/${m.name}.ko`, data: await readFile(m.path) });
  return buildCpio(entries);
}

/**
 * Sets the lab up: apt packages, the current 6.1 kernel package (downloaded
 * and unpacked into the cache, never installed), modules.dep, the initramfs.
 * Throws RemusError: UNSUPPORTED_HOST (not root, no 6.1 kernel in apt's
 * lists), OP_FAILED (apt unreachable, package gone from the mirror, unpack
 * failed). Safe to run again and concurrently with lab runs of the old kernel.
 */
export async function setupLab(options: SetupOptions = {}): Promise<SetupResult> {
  const log = options.log ?? (() => {});
  const steps: string[] = [];
  if (process.getuid?.() !== 0) {
    throw new RemusError('UNSUPPORTED_HOST', 'kernel lab setup must run as root (it installs apt packages and runs QEMU)');
  }
  await ensurePackages(log, steps);
  if (!existsSync(BUSYBOX)) throw new RemusError('UNSUPPORTED_HOST', `kernel lab setup: ${BUSYBOX} is missing although busybox-static is installed`);

  const cacheDir = labCacheDir();
  await mkdir(cacheDir, { recursive: true });
  const pinned = options.kernelPackage;
  if (pinned !== undefined && !/^linux-image-6\.1\.0-\d+-amd64$/.test(pinned.name)) {
    throw new RemusError('INVALID_ARGUMENT', `kernel lab setup: ${pinned.name} is not a linux-image-6.1.0-NN-amd64 package`);
  }
  const pkg = pinned !== undefined ? { ...pinned } : await resolveKernelPackage(log);
  let stamp = await readStamp(cacheDir);
  const kernelCached = stamp !== undefined && stamp.package === pkg.name && stamp.version === pkg.version;

  if (!kernelCached) {
    const dlDir = join(cacheDir, `download.${process.pid}`);
    let deb: string;
    log(`apt-get download ${pkg.name}=${pkg.version}`);
    try {
      deb = await downloadKernel(pkg, dlDir);
    } catch (e) {
      // Lists may be stale (the mirror moved on): refresh once and retry with what is current then.
      const problem = await aptUpdate(log);
      if (problem === undefined && pinned === undefined) Object.assign(pkg, await resolveKernelPackage(log));
      log(`apt-get download ${pkg.name}=${pkg.version} (after apt-get update)`);
      deb = await downloadKernel(pkg, dlDir).catch(async (e2: unknown) => {
        await rm(dlDir, { recursive: true, force: true });
        if (problem !== undefined) throw unreachable(`apt-get download ${pkg.name}`, problem);
        throw e2 instanceof RemusError ? e2 : e;
      });
    }
    const release = pkg.name.replace(/^linux-image-/, '');
    const finalDir = join(cacheDir, 'kernels', `${release}_${pkg.version}`);
    const tmpDir = `${finalDir}.tmp.${process.pid}`;
    await rm(tmpDir, { recursive: true, force: true });
    await mkdir(tmpDir, { recursive: true });
    log(`dpkg-deb -x ${deb}`);
    const x = await execCommand('dpkg-deb', ['-x', deb, tmpDir], { timeoutMs: 300_000 });
    if (x.status !== 0) throw new RemusError('OP_FAILED', `kernel lab setup: dpkg-deb -x failed:\n${tail(x.stderr)}`);
    log('busybox depmod');
    const d = await execCommand(BUSYBOX, ['depmod', '-b', tmpDir, release], { timeoutMs: 300_000 });
    if (d.status !== 0) throw new RemusError('OP_FAILED', `kernel lab setup: depmod failed:\n${tail(d.stderr)}`);
    log('unpacking vmlinux');
    await extractVmlinux(join(tmpDir, 'boot', `vmlinuz-${release}`), join(tmpDir, 'boot', 'vmlinux'));
    await rm(finalDir, { recursive: true, force: true });
    await rename(tmpDir, finalDir);
    await rm(dlDir, { recursive: true, force: true });
    stamp = {
      format: CACHE_FORMAT,
      package: pkg.name,
      version: pkg.version,
      release,
      kernel: join(finalDir, 'boot', 'vmlinux'),
      initramfs: join(cacheDir, `initramfs-${release}.cpio`),
      initHash: INIT_HASH,
      modulesDir: join(finalDir, 'lib', 'modules', release),
    };
    if (!existsSync(stamp.kernel)) throw new RemusError('OP_FAILED', `kernel lab setup: ${stamp.kernel} missing from ${pkg.name}`);
    steps.push(`downloaded and unpacked ${pkg.name} ${pkg.version}`);
  }
  if (stamp === undefined) throw new RemusError('STATE', 'kernel lab setup: no stamp after unpacking (bug)');

  // The initramfs is cheap to build: rebuild it in memory and write it only when it changed.
  const initramfs = await buildInitramfs(stamp.modulesDir);
  const current = existsSync(stamp.initramfs) ? await readFile(stamp.initramfs) : undefined;
  if (current === undefined || !current.equals(initramfs)) {
    log(`writing ${stamp.initramfs}`);
    await writeFile(`${stamp.initramfs}.tmp`, initramfs);
    await rename(`${stamp.initramfs}.tmp`, stamp.initramfs);
    steps.push('built the initramfs');
  }
  stamp.initHash = INIT_HASH;
  await writeFile(`${stampPath(cacheDir)}.tmp`, JSON.stringify(stamp, null, 2) + '\n');
  await rename(`${stampPath(cacheDir)}.tmp`, stampPath(cacheDir));

  // Drop kernels other than the current one.
  const keep = join(cacheDir, 'kernels', `${stamp.release}_${stamp.version}`);
  for (const entry of await readdir(join(cacheDir, 'kernels')).catch(() => [] as string[])) {
    const p = join(cacheDir, 'kernels', entry);
    if (p !== keep && !entry.includes('.tmp.')) await rm(p, { recursive: true, force: true });
  }
  return { stamp, cached: steps.length === 0, steps };
}

/** The stamp of a finished setup, or undefined (not set up, or files missing). */
export function readLabStamp(cacheDir = labCacheDir()): Promise<LabStamp | undefined> {
  return readStamp(cacheDir);
}

