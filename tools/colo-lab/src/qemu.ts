/**
 * QEMU command lines for a COLO pair (per QEMU's docs/COLO-FT.txt, adapted
 * as shared/design/colo.md records) and launching QEMU inside a namespace.
 *
 * The object ids below are the contract between these command lines and the
 * COLO device params of {@link coloDevices} (see {@link COLO_IDS}).
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { RemusError, runScript, type DeviceSpec } from '@remus/core';
import type { Accel } from './shim.js';

/** TCP ports on the host namespace's loopback. */
export interface ColoPorts {
  /** Primary's filter-mirror output, the secondary's rx redirector connects to it. */
  readonly mirror: number;
  /** Primary's colo-compare secondary input, the secondary's tx redirector connects to it. */
  readonly compare1: number;
  /** Secondary's incoming migration. */
  readonly migration: number;
  /** Secondary's NBD server (block replication). */
  readonly nbd: number;
}

export const DEFAULT_PORTS: ColoPorts = { mirror: 9003, compare1: 9004, migration: 9998, nbd: 9999 };
/** The loopback address every COLO socket uses (both QEMUs share the namespace). */
export const LOOPBACK = '127.0.0.1';

/** Ids the command lines give and the COLO devices name (the proxy and replication pieces themselves are added at run time by @remus/colo). */
export const COLO_IDS = {
  /** The guest NIC's netdev on both sides. */
  netdev: 'hn0',
  /** The guest disk on both sides: a quorum (vote-threshold 1); the primary's replication child becomes its children.1. */
  disk: 'colo-disk0',
  /** Secondary: the copy of the primary's disk under the replication driver, exported over NBD. */
  parent: 'parent0',
} as const;

/** What both sides' command lines need. */
export interface VmSpec {
  readonly accel: Accel;
  /** Guest memory, MiB. */
  readonly memoryMiB: number;
  readonly kernel: string;
  readonly initrd: string;
  /** Kernel command line. */
  readonly append: string;
  /** Tap interface (exists already, in the namespace QEMU runs in). */
  readonly tap: string;
  readonly mac: string;
  /** QMP unix socket for commands, and a second one for events (the watchdog's). */
  readonly qmpSocket: string;
  readonly qmpEventSocket: string;
  /** Serial console log file. */
  readonly serialLog: string;
  readonly ports: ColoPorts;
  /** Address the secondary's -incoming listens on. Default {@link LOOPBACK} (one host). */
  readonly listen?: string;
}

function commonArgs(spec: VmSpec, name: string): string[] {
  return [
    '-name', `${name},debug-threads=on`,
    '-accel', spec.accel,
    '-cpu', 'qemu64',
    '-m', String(spec.memoryMiB),
    '-smp', '1',
    '-nodefaults',
    '-display', 'none',
    '-no-reboot',
    '-kernel', spec.kernel,
    '-initrd', spec.initrd,
    '-append', spec.append,
    '-chardev', `file,id=serial0,path=${spec.serialLog}`,
    '-serial', 'chardev:serial0',
    '-chardev', `socket,id=qmp0,path=${spec.qmpSocket},server=on,wait=off`,
    '-mon', 'chardev=qmp0,mode=control',
    '-chardev', `socket,id=qmp1,path=${spec.qmpEventSocket},server=on,wait=off`,
    '-mon', 'chardev=qmp1,mode=control',
    // Without vhost and without a vnet header: with one, colo-compare logs
    // "unsupported packet in" for every packet and silently stops comparing.
    '-netdev', `tap,id=${COLO_IDS.netdev},ifname=${spec.tap},script=no,downscript=no,vhost=off,vnet_hdr=off`,
    '-device', `virtio-net-pci,netdev=${COLO_IDS.netdev},mac=${spec.mac}`,
  ];
}

/** The primary: a quorum disk over `image`; with `paused`, started with -S. */
export function primaryArgs(spec: VmSpec & { readonly image: string; readonly paused?: boolean }): string[] {
  const id = COLO_IDS;
  return [
    ...commonArgs(spec, 'colo-primary'),
    '-drive', `if=none,id=${id.disk},driver=quorum,read-pattern=fifo,vote-threshold=1,children.0.file.filename=${spec.image},children.0.driver=qcow2`,
    '-device', `virtio-blk-pci,drive=${id.disk}`,
    ...(spec.paused ? ['-S'] : []),
  ];
}

/** The secondary: a replication disk (active and hidden images over parent0, a copy of the primary's image), waiting for migration. */
export function secondaryArgs(spec: VmSpec & { readonly parentImage: string; readonly activeImage: string; readonly hiddenImage: string }): string[] {
  const p = spec.ports;
  const id = COLO_IDS;
  return [
    ...commonArgs(spec, 'colo-secondary'),
    '-drive', `if=none,id=${id.parent},file.filename=${spec.parentImage},driver=qcow2`,
    '-drive',
    `if=none,id=childs0,driver=replication,mode=secondary,file.driver=qcow2,top-id=${id.disk},` +
      `file.file.filename=${spec.activeImage},file.backing.driver=qcow2,file.backing.file.filename=${spec.hiddenImage},file.backing.backing=${id.parent}`,
    '-drive', `if=none,id=${id.disk},driver=quorum,read-pattern=fifo,vote-threshold=1,children.0=childs0`,
    '-device', `virtio-blk-pci,drive=${id.disk}`,
    '-incoming', `tcp:${spec.listen ?? LOOPBACK}:${p.migration}`,
  ];
}

/** The COLO devices of each side, for @remus/colo's ops lists (params as its README documents). */
export function coloDevices(
  ports: ColoPorts,
  dir: string,
  /** The hosts' addresses when the two QEMUs run on two hosts; default both {@link LOOPBACK}. */
  hosts: { readonly primary: string; readonly secondary: string } = { primary: LOOPBACK, secondary: LOOPBACK },
): { primary: DeviceSpec[]; secondary: DeviceSpec[] } {
  const at = (port: number, host = hosts.primary) => ({ host, port });
  const id = COLO_IDS;
  return {
    primary: [
      { id: 'nic0', kind: 'nic', params: { netdev: id.netdev, mirror: at(ports.mirror), compare: at(ports.compare1), primaryIn: { path: join(dir, 'colo-pri-in.sock') }, compareOut: { path: join(dir, 'colo-out.sock') } } },
      { id: 'disk0', kind: 'disk', params: { quorum: id.disk, nbd: at(ports.nbd, hosts.secondary), export: id.parent } },
    ],
    secondary: [
      { id: 'nic0', kind: 'nic', params: { netdev: id.netdev, mirror: at(ports.mirror), compare: at(ports.compare1) } },
      { id: 'disk0', kind: 'disk', params: { node: id.parent, nbd: at(ports.nbd, hosts.secondary), export: id.parent, quorum: id.disk } },
    ],
  };
}

/** Creates the qcow2 images: the primary's, the secondary's copy (parent0), and its active and hidden images. */
export async function createImages(files: { primary: string; parent: string; active: string; hidden: string }, sizeMiB: number): Promise<void> {
  const size = `${sizeMiB}M`;
  for (const f of [files.primary, files.parent, files.active, files.hidden]) {
    await runScript('qemu-img', ['create', '-q', '-f', 'qcow2', f, size], { timeoutMs: 30_000 });
  }
}

/** A QEMU process this module started. */
export interface QemuProcess {
  readonly pid: number;
  /** Resolves with the exit code (or null) and signal when the process is gone. Never rejects. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True once it exited. */
  readonly gone: boolean;
  /** SIGKILL by pid (if still running); resolves once it is gone. Rejects with TIMEOUT naming the pid if it still runs `timeoutMs` (default 10000) after the SIGKILL. */
  kill(timeoutMs?: number): Promise<void>;
}

/**
 * Starts `qemu-system-x86_64 args` inside network namespace `netns` (via
 * `ip netns exec`, which execs QEMU: the pid is QEMU's), stdout and stderr to
 * `logFile`, with `env` added (LD_PRELOAD for the TCG shim).
 */
export function spawnQemu(netns: string, args: readonly string[], logFile: string, env: Record<string, string> = {}): QemuProcess {
  const fd = openSync(logFile, 'a');
  let child;
  try {
    child = spawn('ip', ['netns', 'exec', netns, 'qemu-system-x86_64', ...args], {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...env },
    });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new RemusError('OP_FAILED', 'colo-lab: could not start qemu-system-x86_64 (ip netns exec)');
  let gone = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      gone = true;
      resolve({ code, signal });
    });
    child.on('error', () => {
      gone = true;
      resolve({ code: null, signal: null });
    });
  });
  return {
    pid,
    exited,
    get gone() {
      return gone;
    },
    async kill(timeoutMs = 10_000) {
      if (gone) return;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
      if (!gone) throw new RemusError('TIMEOUT', `colo-lab: QEMU ${pid} still runs ${timeoutMs} ms after its SIGKILL (uninterruptible sleep?); remove it by hand`);
    },
  };
}
