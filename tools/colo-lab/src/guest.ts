/**
 * The small guest of the COLO lab: the kernel lab's Debian 6.1 kernel and a
 * busybox initramfs with an HTTP counter service and a TCP echo.
 *
 * The service (`GET /cgi-bin/count`) answers `count=N rand=R`: N is a counter
 * kept in sector 0 of the virtio disk and read and written with O_DIRECT, so
 * every value lives on the replicated disk (continuity across failover is
 * visible); R is fresh randomness and the guest clock in nanoseconds (from /proc/timer_list), so
 * the primary's and the secondary's answers differ and colo-compare forces a
 * checkpoint per answer. Port 7 echoes.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, readdir, symlink, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RemusError, runScript } from '@remus/core';
import { moduleLoadOrder, readLabStamp } from '@remus/kernel-lab';

/** The guest's address inside the lab network (a /24), and the client's. */
export const GUEST_IP = '10.77.0.2';
export const CLIENT_IP = '10.77.0.1';
/** The MAC both VMs share (the secondary takes over the primary's identity). */
export const GUEST_MAC = '52:54:00:c0:10:02';
/** The line the guest prints on its serial console once its services listen. */
export const GUEST_READY_LINE = 'colo-guest: ready';

const BUSYBOX = '/bin/busybox';
/** Modules the guest loads, their dependencies first (from modules.dep). */
const GUEST_MODULES = ['virtio_pci', 'virtio_net', 'virtio_blk'];

/** A kernel and its modules, as the kernel lab's setup unpacks them. */
export interface GuestKernel {
  /** Path of the vmlinuz. */
  kernel: string;
  /** Folder holding `modules.dep` and `kernel/` for this release. */
  modulesDir: string;
}

/**
 * The kernel lab's kernel (`pnpm lab:setup` downloads the Debian 6.1 package
 * once per machine and records it in its stamp); no second download. Throws
 * STATE when the lab is not set up.
 */
export async function findGuestKernel(): Promise<GuestKernel> {
  const stamp = await readLabStamp();
  if (!stamp) {
    throw new RemusError('STATE', 'colo-lab: no guest kernel: the kernel lab is not set up; run `pnpm lab:setup` first');
  }
  if (!existsSync(stamp.kernel) || !existsSync(join(stamp.modulesDir, 'modules.dep'))) {
    throw new RemusError('STATE', 'colo-lab: the kernel lab names a kernel or modules that are gone; run `pnpm lab:setup` again');
  }
  return { kernel: stamp.kernel, modulesDir: stamp.modulesDir };
}

const INIT = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m" || echo "colo-guest: insmod $m failed"; done
n=0
while [ ! -e /sys/class/net/eth0 ] || [ ! -b /dev/vda ]; do
  n=$((n + 1)); [ "$n" -lt 200 ] || { echo "colo-guest: no eth0 or vda"; break; }; sleep 0.05
done
ip link set lo up
ip addr add ${GUEST_IP}/24 dev eth0
ip link set eth0 up
mkdir -p /www/cgi-bin
cp /count.cgi /www/cgi-bin/count
httpd -p 80 -h /www
nc -ll -p 7 -e /bin/cat &
echo "${GUEST_READY_LINE}"
while true; do sleep 3600; done
`;

const COUNT_CGI = `#!/bin/sh
# The counter lives in sector 0 of /dev/vda; O_DIRECT so each value is on the (replicated) disk.
# One request at a time: mkdir is the lock.
while ! mkdir /run/count.lock 2>/dev/null; do usleep 10000; done
trap 'rmdir /run/count.lock' EXIT
n=$(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 20 | tr -dc 0-9)
[ -n "$n" ] || n=0
n=$((n + 1))
printf '%-511s\\n' "$n" | dd of=/dev/vda bs=512 count=1 oflag=direct conv=notrunc 2>/dev/null
r=$(xxd -p -l 8 /dev/urandom)-$(sed -n 's/^now at \\([0-9]*\\) nsecs$/\\1/p' /proc/timer_list)
printf 'Content-Type: text/plain\\r\\n\\r\\ncount=%s rand=%s\\n' "$n" "$r"
`;

const APPLETS = ['sh', 'mount', 'insmod', 'ip', 'httpd', 'nc', 'cat', 'echo', 'sleep', 'mkdir', 'cp', 'dd', 'head', 'tr', 'printf', 'xxd', 'sed', 'usleep', 'rmdir'];

/**
 * Writes the guest initramfs (newc cpio) to `file`, staging it in `workDir`
 * (which must not exist yet or be empty). Throws STATE when a module is
 * missing, SCRIPT_FAILED when busybox cpio fails.
 */
export async function buildGuestInitramfs(kernel: GuestKernel, workDir: string, file: string): Promise<void> {
  const root = join(workDir, 'initramfs');
  for (const d of ['bin', 'dev', 'proc', 'sys', 'modules', 'www', 'run']) await mkdir(join(root, d), { recursive: true });
  await copyFile(BUSYBOX, join(root, 'bin', 'busybox'));
  await chmod(join(root, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) await symlink('busybox', join(root, 'bin', a));
  await writeFile(join(root, 'init'), INIT, { mode: 0o755 });
  await writeFile(join(root, 'count.cgi'), COUNT_CGI, { mode: 0o755 });
  const modules = await moduleLoadOrder(kernel.modulesDir, GUEST_MODULES);
  const names: string[] = [];
  for (const m of modules) {
    const base = `${m.name}.ko`;
    await copyFile(m.path, join(root, 'modules', base));
    names.push(base);
  }
  await writeFile(join(root, 'modules', 'order'), names.join('\n') + '\n');
  const list = await listTree(root);
  await runScript(BUSYBOX, ['cpio', '-o', '-H', 'newc', '-F', file], { cwd: root, input: list.join('\n') + '\n', timeoutMs: 60_000 });
}

/** Every path under `root`, relative, parents before children. */
async function listTree(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const p = rel === '' ? e.name : `${rel}/${e.name}`;
    out.push(p);
    if (e.isDirectory()) out.push(...(await listTree(root, p)));
  }
  return out;
}
