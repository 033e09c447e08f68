// Shared by the kernel-lab bodies (root, in the lab's Debian 6.1 guest): the
// cgroup v1 freezer the domains freeze with, and the kernel modules of
// nic-netbuf (sch_plug on an IFB fed by an ingress redirect).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';

const sh = (...argv) => execFileSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const shOk = (...argv) => {
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
