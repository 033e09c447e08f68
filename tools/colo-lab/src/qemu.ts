/**
 * QEMU command lines for a COLO pair (per QEMU's docs/COLO-FT.txt, adapted
 * as shared/design/colo.md records) and launching QEMU inside a namespace.
 *
 * The object ids below are the contract between these command lines and the
 * QMP sequences of the driver (see {@link COLO_IDS}).
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { RemusError, runScript } from '@remus/core';
import type { Accel } from './shim.js';

/** TCP ports on the host namespace's loopback. */
export interface ColoPorts {
  /** Primary's colo-compare primary input (server + client on the primary). */
  readonly compare0: number;
  /** Primary's filter-mirror output to the secondary's rx. */
  readonly mirror: number;
  /** Secondary's tx back into the primary's colo-compare. */
  readonly compare1: number;
  /** colo-compare output back into the primary's rx redirector. */
  readonly compareOut: number;
  /** Secondary's incoming migration. */
  readonly migration: number;
  /** Secondary's NBD server (block replication). */
  readonly nbd: number;
}

export const DEFAULT_PORTS: ColoPorts = { compare0: 9001, mirror: 9003, compare1: 9004, compareOut: 9005, migration: 9998, nbd: 9999 };
/** The loopback address every COLO socket uses (both QEMUs share the namespace). */
export const LOOPBACK = '127.0.0.1';

/** Ids of the QEMU objects the driver's QMP sequences name. */
export const COLO_IDS = {
  /** The guest disk on both sides: a quorum (vote-threshold 1). */
  disk: 'colo-disk0',
  /** Primary: filter-mirror, the two redirectors, colo-compare, its iothread, the replication child. */
  mirror: 'm0',
  redirectIn: 'redire0',
  redirectOut: 'redire1',
  compare: 'comp0',
  iothread: 'iothread1',
  replication: 'replication0',
  /** Secondary: the two redirectors, the rewriter, their chardevs, the disk exported over NBD. */
  secRedirectTx: 'f1',
  secRedirectRx: 'f2',
  rewriter: 'rew0',
  secChardevMirror: 'red0',
  secChardevCompare: 'red1',
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
    '-netdev', `tap,id=hn0,ifname=${spec.tap},script=no,downscript=no,vhost=off,vnet_hdr=off`,
    '-device', `virtio-net-pci,netdev=hn0,mac=${spec.mac}`,
  ];
}

/** The primary: proxy chardevs and filters, colo-compare, a quorum disk over `image`; with `paused`, started with -S. */
export function primaryArgs(spec: VmSpec & { readonly image: string; readonly paused?: boolean }): string[] {
  const p = spec.ports;
  const tcp = (port: number) => `host=${LOOPBACK},port=${port}`;
  const id = COLO_IDS;
  return [
    ...commonArgs(spec, 'colo-primary'),
    '-chardev', `socket,id=mirror0,${tcp(p.mirror)},server=on,wait=off`,
    '-chardev', `socket,id=compare1,${tcp(p.compare1)},server=on,wait=on`,
    '-chardev', `socket,id=compare0,${tcp(p.compare0)},server=on,wait=off`,
    '-chardev', `socket,id=compare0-0,${tcp(p.compare0)}`,
    '-chardev', `socket,id=compare_out,${tcp(p.compareOut)},server=on,wait=off`,
    '-chardev', `socket,id=compare_out0,${tcp(p.compareOut)}`,
    '-object', `filter-mirror,id=${id.mirror},netdev=hn0,queue=tx,outdev=mirror0`,
    '-object', `filter-redirector,netdev=hn0,id=${id.redirectIn},queue=rx,indev=compare_out`,
    '-object', `filter-redirector,netdev=hn0,id=${id.redirectOut},queue=rx,outdev=compare0`,
    '-object', `iothread,id=${id.iothread}`,
    '-object', `colo-compare,id=${id.compare},primary_in=compare0-0,secondary_in=compare1,outdev=compare_out0,iothread=${id.iothread}`,
    '-drive', `if=none,id=${id.disk},driver=quorum,read-pattern=fifo,vote-threshold=1,children.0.file.filename=${spec.image},children.0.driver=qcow2`,
    '-device', `virtio-blk-pci,drive=${id.disk}`,
    ...(spec.paused ? ['-S'] : []),
  ];
}

/** The secondary: redirectors and rewriter, a replication disk (active and hidden images over parent0), waiting for migration. */
export function secondaryArgs(spec: VmSpec & { readonly parentImage: string; readonly activeImage: string; readonly hiddenImage: string }): string[] {
  const p = spec.ports;
  const id = COLO_IDS;
  return [
    ...commonArgs(spec, 'colo-secondary'),
    '-chardev', `socket,id=${id.secChardevMirror},host=${LOOPBACK},port=${p.mirror},reconnect=1`,
    '-chardev', `socket,id=${id.secChardevCompare},host=${LOOPBACK},port=${p.compare1},reconnect=1`,
    '-object', `filter-redirector,id=${id.secRedirectTx},netdev=hn0,queue=tx,indev=${id.secChardevMirror}`,
    '-object', `filter-redirector,id=${id.secRedirectRx},netdev=hn0,queue=rx,outdev=${id.secChardevCompare}`,
    '-object', `filter-rewriter,id=${id.rewriter},netdev=hn0,queue=all`,
    '-drive', `if=none,id=${id.parent},file.filename=${spec.parentImage},driver=qcow2`,
    '-drive',
    `if=none,id=childs0,driver=replication,mode=secondary,file.driver=qcow2,top-id=${id.disk},` +
      `file.file.filename=${spec.activeImage},file.backing.driver=qcow2,file.backing.file.filename=${spec.hiddenImage},file.backing.backing=${id.parent}`,
    '-drive', `if=none,id=${id.disk},driver=quorum,read-pattern=fifo,vote-threshold=1,children.0=childs0`,
    '-device', `virtio-blk-pci,drive=${id.disk}`,
    '-incoming', `tcp:${LOOPBACK}:${p.migration}`,
  ];
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
  /** SIGKILL by pid (if still running); resolves once it is gone, bounded. */
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
    },
  };
}
