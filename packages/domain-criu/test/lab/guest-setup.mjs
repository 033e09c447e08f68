// Shared by the kernel-lab bodies (root, in the lab's Debian 6.1 guest): the
// cgroup v1 freezer the domains freeze with, the kernel modules of nic-netbuf
// (sch_plug on an IFB fed by an ingress redirect), commands, the progress
// log with its checks, and the run of a body (exit 0 only if it passed).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';

/** Runs argv, resolves with its stdout; throws on a non-zero exit. */
export const sh = (...argv) => execFileSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
/** `sh`, or undefined when it fails. */
export const shOk = (...argv) => {
  try {
    return sh(...argv);
  } catch {
    return undefined;
  }
};

/** Mounts a v1 freezer hierarchy at /sys/fs/cgroup/freezer unless one is there. */
export function setupFreezer() {
  if (existsSync('/sys/fs/cgroup/freezer/freezer.state') || existsSync('/sys/fs/cgroup/freezer/cgroup.procs')) return;
  if (!shOk('mountpoint', '-q', '/sys/fs/cgroup')) sh('mount', '-t', 'tmpfs', 'cgroup', '/sys/fs/cgroup');
  mkdirSync('/sys/fs/cgroup/freezer', { recursive: true });
  sh('mount', '-t', 'cgroup', '-o', 'freezer', 'freezer', '/sys/fs/cgroup/freezer');
}

/** Loads nic-netbuf's modules (missing ones are left for its match to report). */
export function loadNetbufModules() {
  for (const m of ['sch_plug', 'ifb', 'sch_ingress', 'cls_u32', 'act_mirred']) shOk('modprobe', m);
}

/** `log(m)` prints `[tag +Ns] m`; `check(cond, what, error?)` logs `ok: what` or throws `FAILED: what`. */
export function labLog(tag) {
  const t0 = Date.now();
  const log = (m) => console.log(`[${tag} +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  const check = (cond, what, error) => {
    if (!cond) throw new Error(`FAILED: ${what}${error ? `: ${error.code ?? ''} ${error.message ?? error}` : ''}`);
    log(`ok: ${what}`);
  };
  return { log, check };
}

/** SIGKILLs `children` (ChildProcess) and `pids`, then runs `cleanups` last first; errors ignored. */
export async function killAndClean({ children = [], pids = [], cleanups = [] }) {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {}
  }
  for (const f of [...cleanups].reverse()) {
    try {
      await f();
    } catch {}
  }
}

/** Runs `main`, prints its error, runs `cleanup` either way, and exits 0 only if `main` resolved. */
export async function runBody(main, cleanup) {
  let code = 0;
  try {
    await main();
  } catch (e) {
    console.log(e?.stack ?? String(e));
    code = 1;
  } finally {
    try {
      await cleanup();
    } catch {}
  }
  process.exit(code);
}
