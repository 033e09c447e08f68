/**
 * Reprotect in the one-host lab: after a failover, a fresh secondary QEMU
 * (new parent/active/hidden images, the COLO secondary command line,
 * `-incoming`) on the tap the dead side left, and `@remus/colo`'s
 * `reprotect` making the survivor its primary. The lab's own QEMUs stay the
 * lab's; the fresh ones are the caller's (kill them before `lab.close()`:
 * they use a tap in the lab's namespace).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runScript } from '@remus/core';
import { reprotect, type ColoDriverEvent, type ColoPair, type ColoPairOptions, type ColoReprotectRunOptions } from '@remus/colo';
import { findGuestKernel } from './guest.js';
import { GUEST_MAC } from './guest.js';
import type { ColoLab } from './lab.js';
import { attachTap, detachTap } from './net.js';
import { DEFAULT_PORTS, LOOPBACK, coloDevices, secondaryArgs, spawnQemu, type QemuProcess } from './qemu.js';

/** A QEMU of one lab role: its process, QMP sockets and tap. */
export interface LabVm {
  readonly qemu: QemuProcess;
  readonly qmp: string;
  readonly qmpEvents: string;
  readonly tap: string;
  /** Folder of its images, sockets and logs (inside the lab's). */
  readonly dir: string;
  readonly name: string;
}

/** The lab's survivor after a failover to its secondary, as a {@link LabVm}. */
export function labSecondaryVm(lab: ColoLab, tap: string): LabVm {
  return labVm(lab, 'secondary', tap);
}

/** The lab's survivor after a failover to its primary (its secondary lost), as a {@link LabVm}. */
export function labPrimaryVm(lab: ColoLab, tap: string): LabVm {
  return labVm(lab, 'primary', tap);
}

function labVm(lab: ColoLab, side: 'primary' | 'secondary', tap: string): LabVm {
  return { qemu: lab[side], qmp: join(lab.dir, `${side}.qmp`), qmpEvents: join(lab.dir, `${side}-events.qmp`), tap, dir: lab.dir, name: side };
}

/**
 * Starts a fresh COLO secondary named `name` on `tap` (not on the bridge:
 * the caller made sure of that) in the lab's host namespace, with the shim
 * under TCG (role secondary). Images of the lab's disk size (16 MiB).
 */
export async function startFreshSecondary(lab: ColoLab, name: string, tap: string, memoryMiB = 256): Promise<LabVm> {
  const dir = join(lab.dir, name);
  await mkdir(dir, { recursive: true });
  const img = (f: string) => join(dir, f);
  for (const f of ['parent.qcow2', 'active.qcow2', 'hidden.qcow2']) await runScript('qemu-img', ['create', '-q', '-f', 'qcow2', img(f), '16M'], { timeoutMs: 30_000 });
  const kernel = await findGuestKernel();
  const qmp = img('qmp.sock');
  const qmpEvents = img('qmp-events.sock');
  const args = secondaryArgs({
    accel: lab.accel,
    memoryMiB,
    kernel: kernel.kernel,
    initrd: join(lab.dir, 'initramfs.cpio'),
    append: 'console=ttyS0 panic=-1 ipv6.disable=1 quiet',
    tap,
    mac: GUEST_MAC,
    qmpSocket: qmp,
    qmpEventSocket: qmpEvents,
    serialLog: img('serial'),
    ports: DEFAULT_PORTS,
    parentImage: img('parent.qcow2'),
    activeImage: img('active.qcow2'),
    hiddenImage: img('hidden.qcow2'),
  });
  const env: Record<string, string> =
    lab.accel === 'tcg' ? { LD_PRELOAD: join(lab.dir, 'colo-tcg-shim.so'), COLO_SHIM_ROLE: 'secondary', COLO_SHIM_STATS: img('shim.stats') } : {};
  const qemu = spawnQemu(lab.net.hostNs, args, img('qemu.log'), env);
  return { qemu, qmp, qmpEvents, tap, dir, name };
}

/**
 * Reprotects `survivor` (serving, after a failover) onto `fresh`: the new
 * pair's fence moves the survivor's and the fresh VM's taps (only one on
 * the bridge at a time). Its primary's proxy sockets live in `fresh.dir`.
 */
export function reprotectInLab(
  lab: ColoLab,
  survivor: LabVm,
  fresh: LabVm,
  o: { readonly onEvent?: (e: ColoDriverEvent) => void; readonly watchdog?: ColoPairOptions['watchdog']; readonly checkpointDelayMs?: number; readonly run?: ColoReprotectRunOptions } = {},
): Promise<ColoPair> {
  const devices = coloDevices(DEFAULT_PORTS, fresh.dir);
  const tap = (side: 'primary' | 'secondary') => (side === 'primary' ? survivor.tap : fresh.tap);
  return reprotect(
    {
      survivor: { qmp: survivor.qmp, qmpEvents: survivor.qmpEvents, pid: survivor.qemu.pid, devices: devices.primary },
      secondary: { qmp: fresh.qmp, qmpEvents: fresh.qmpEvents, pid: fresh.qemu.pid, devices: devices.secondary },
      migrationUri: `tcp:${LOOPBACK}:${DEFAULT_PORTS.migration}`,
      checkpointDelayMs: o.checkpointDelayMs ?? 2000,
      ...(o.onEvent ? { onEvent: o.onEvent } : {}),
      ...(o.watchdog !== undefined ? { watchdog: o.watchdog } : {}),
      fence: {
        attach: (side) => attachTap(lab.net, tap(side)),
        detach: (side) => detachTap(lab.net, tap(side)),
      },
    },
    o.run ?? {},
  );
}
