/**
 * One COLO lab: namespaces, images, the guest, both QEMUs (with the TCG
 * workaround shim when the accelerator is TCG), and a client. `close()`
 * kills both QEMUs by pid and removes the namespaces and every file.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RemusError, pollUntil, runScript } from '@remus/core';
import { ColoPair, type ColoDriverEvent, type ColoPairOptions } from '@remus/colo';
import { GUEST_IP, GUEST_MAC, GUEST_READY_LINE, buildGuestInitramfs, findGuestKernel } from './guest.js';
import { PRIMARY_TAP, SECONDARY_TAP, attachTap, createLabNetwork, detachTap, removeLabNetwork, type LabNetwork } from './net.js';
import { DEFAULT_PORTS, LOOPBACK, coloDevices, createImages, primaryArgs, secondaryArgs, spawnQemu, type QemuProcess, type VmSpec } from './qemu.js';
import { SHIM_BANNER, buildShim, detectAccel, readShimStats, type Accel, type ShimStats } from './shim.js';

export interface ColoLabOptions {
  /** Unique name prefix (namespaces); default `colo-<pid>`. */
  readonly prefix?: string;
  readonly accel?: Accel;
  /** x-checkpoint-delay, ms. Default 2000. */
  readonly checkpointDelayMs?: number;
  readonly memoryMiB?: number;
  readonly onEvent?: (e: ColoDriverEvent) => void;
  readonly watchdog?: ColoPairOptions['watchdog'];
}

/** The answer of the guest's counter service. */
export interface CounterAnswer {
  count: number;
  rand: string;
}

export class ColoLab {
  readonly dir: string;
  readonly net: LabNetwork;
  readonly accel: Accel;
  readonly primary: QemuProcess;
  readonly secondary: QemuProcess;
  readonly pair: ColoPair;
  /** Where each side's shim counters live (TCG only). */
  readonly shimStats?: { primary: string; secondary: string };
  #closed = false;

  private constructor(f: { dir: string; net: LabNetwork; accel: Accel; primary: QemuProcess; secondary: QemuProcess; pair: ColoPair; shimStats?: { primary: string; secondary: string } }) {
    this.dir = f.dir;
    this.net = f.net;
    this.accel = f.accel;
    this.primary = f.primary;
    this.secondary = f.secondary;
    this.pair = f.pair;
    this.shimStats = f.shimStats;
  }

  /**
   * Builds the guest, the network and the images, starts both QEMUs and
   * connects the driver (replication not started: call `lab.pair.start()`).
   * On failure everything made so far is removed.
   */
  static async create(options: ColoLabOptions = {}): Promise<ColoLab> {
    if (process.getuid?.() !== 0) throw new RemusError('UNSUPPORTED_HOST', 'colo-lab needs root (network namespaces, taps)');
    const accel = options.accel ?? detectAccel();
    const prefix = options.prefix ?? `colo-${process.pid}`;
    const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
    let net: LabNetwork | undefined;
    const procs: QemuProcess[] = [];
    try {
      const kernel = await findGuestKernel();
      const initrd = join(dir, 'initramfs.cpio');
      await buildGuestInitramfs(kernel, dir, initrd);
      const images = { primary: join(dir, 'primary.qcow2'), parent: join(dir, 'parent.qcow2'), active: join(dir, 'active.qcow2'), hidden: join(dir, 'hidden.qcow2') };
      await createImages(images, 16);
      let shimStats: { primary: string; secondary: string } | undefined;
      let shim: string | undefined;
      if (accel === 'tcg') {
        shim = await buildShim(join(dir, 'colo-tcg-shim.so'));
        shimStats = { primary: join(dir, 'shim-primary.stats'), secondary: join(dir, 'shim-secondary.stats') };
      }
      net = await createLabNetwork(prefix);
      const base = (side: 'primary' | 'secondary', tap: string): VmSpec => ({
        accel,
        memoryMiB: options.memoryMiB ?? 256,
        kernel: kernel.kernel,
        initrd,
        append: 'console=ttyS0 panic=-1 ipv6.disable=1 quiet',
        tap,
        mac: GUEST_MAC,
        qmpSocket: join(dir, `${side}.qmp`),
        qmpEventSocket: join(dir, `${side}-events.qmp`),
        serialLog: join(dir, `${side}.serial`),
        ports: DEFAULT_PORTS,
      });
      const shimEnv = (side: 'primary' | 'secondary'): Record<string, string> =>
        shim === undefined || shimStats === undefined ? {} : { LD_PRELOAD: shim, COLO_SHIM_ROLE: side, COLO_SHIM_STATS: shimStats[side] };
      const sSpec = base('secondary', SECONDARY_TAP);
      const secondary = spawnQemu(net.hostNs, secondaryArgs({ ...sSpec, parentImage: images.parent, activeImage: images.active, hiddenImage: images.hidden }), join(dir, 'secondary.log'), shimEnv('secondary'));
      procs.push(secondary);
      const pSpec = base('primary', PRIMARY_TAP);
      const primary = spawnQemu(net.hostNs, primaryArgs({ ...pSpec, image: images.primary }), join(dir, 'primary.log'), shimEnv('primary'));
      procs.push(primary);
      const theNet = net;
      const devices = coloDevices(DEFAULT_PORTS, dir);
      const pair = await ColoPair.connect({
        primary: { qmp: pSpec.qmpSocket, qmpEvents: pSpec.qmpEventSocket, pid: primary.pid, devices: devices.primary },
        secondary: { qmp: sSpec.qmpSocket, qmpEvents: sSpec.qmpEventSocket, pid: secondary.pid, devices: devices.secondary },
        migrationUri: `tcp:${LOOPBACK}:${DEFAULT_PORTS.migration}`,
        checkpointDelayMs: options.checkpointDelayMs ?? 2000,
        onEvent: options.onEvent,
        watchdog: options.watchdog,
        fence: {
          attach: (side) => attachTap(theNet, side === 'primary' ? PRIMARY_TAP : SECONDARY_TAP),
          detach: (side) => detachTap(theNet, side === 'primary' ? PRIMARY_TAP : SECONDARY_TAP),
        },
      });
      return new ColoLab({ dir, net, accel, primary, secondary, pair, shimStats });
    } catch (e) {
      for (const p of procs) await p.kill().catch(() => {}); // the start's own error is the one to report
      if (net) await removeLabNetwork(net);
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** One request to the counter service from the client namespace, bounded by `timeoutMs`. Throws SCRIPT_FAILED/SCRIPT_TIMEOUT when no answer. */
  request(timeoutMs = 10_000): Promise<CounterAnswer> {
    return requestCounter(this.net.clientNs, timeoutMs);
  }

  /**
   * Boots the guest on the primary alone, pauses it, then starts COLO (the
   * migration of a paused VM sends every page: no write can slip past
   * software emulation's dirty tracking before replication starts).
   */
  async start(timeoutMs = 150_000): Promise<void> {
    await this.waitGuestReady(timeoutMs);
    await this.pair.qmp('primary').execute('stop');
    await this.pair.start({ timeoutMs });
  }

  /** Sends `text` to the guest's TCP echo and returns what came back (bounded). */
  async echo(text: string, timeoutMs = 10_000): Promise<string> {
    const r = await runScript('ip', ['netns', 'exec', this.net.clientNs, 'busybox', 'nc', '-w', String(Math.ceil(timeoutMs / 1000)), GUEST_IP, '7'], {
      input: text,
      timeoutMs: timeoutMs + 2000,
    });
    return r.stdout;
  }

  /** Waits until the guest on the primary printed its ready line (bounded). */
  async waitGuestReady(timeoutMs: number): Promise<void> {
    const file = join(this.dir, 'primary.serial');
    await pollUntil(
      () => {
        if (existsSync(file) && readFileSync(file, 'utf8').includes(GUEST_READY_LINE)) return true;
        if (this.primary.gone) throw new RemusError('STATE', `colo-lab: the primary QEMU exited while the guest booted:\n${this.logs()}`);
        return false;
      },
      { what: 'colo-lab: the guest to be ready', timeoutMs, intervalMs: 200, describe: () => `\n${this.logs()}` },
    );
  }

  /** The shim's counters per side (TCG only). */
  shim(): { primary?: ShimStats; secondary?: ShimStats } {
    if (!this.shimStats) return {};
    return { primary: readShimStats(this.shimStats.primary), secondary: readShimStats(this.shimStats.secondary) };
  }

  /** Whether the shim announced itself in each QEMU's log. */
  shimAnnounced(): { primary: boolean; secondary: boolean } {
    const has = (f: string): boolean => existsSync(f) && readFileSync(f, 'utf8').includes(SHIM_BANNER);
    return { primary: has(join(this.dir, 'primary.log')), secondary: has(join(this.dir, 'secondary.log')) };
  }

  /**
   * What a failed request's error should carry: the driver's status, each
   * side's run state and COLO mode (QMP, 5 s bound each), the shim's
   * counters, and the tails of the QEMU logs and consoles.
   */
  async diagnose(max = 3000): Promise<string> {
    const side = async (role: 'primary' | 'secondary'): Promise<string> => {
      try {
        const c = this.pair.qmp(role);
        const o = { timeoutMs: 5000 };
        return JSON.stringify({ run: await c.execute('query-status', undefined, o), colo: await c.execute('query-colo-status', undefined, o) });
      } catch (e) {
        return `(no answer: ${String(e)})`;
      }
    };
    return [
      `status: ${JSON.stringify(this.pair.status())}`,
      `primary: ${await side('primary')}`,
      `secondary: ${await side('secondary')}`,
      `shim: ${JSON.stringify(this.shim())}`,
      this.logs(max),
    ].join('\n');
  }

  /** Tails of both QEMU logs and serial consoles, for failure messages. */
  logs(max = 1500): string {
    const t = (name: string): string => {
      const f = join(this.dir, name);
      const s = existsSync(f) ? readFileSync(f, 'utf8') : '(none)';
      return `--- ${name}\n${s.length > max ? s.slice(-max) : s}`;
    };
    return ['primary.log', 'secondary.log', 'primary.serial', 'secondary.serial'].map(t).join('\n');
  }

  /** Kills both QEMUs by pid, removes namespaces and files. Idempotent, best effort. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.pair.close().catch(() => {});
    // Everything is removed that can be; a QEMU that outlived its SIGKILL is reported after.
    const stuck: unknown[] = [];
    for (const q of [this.primary, this.secondary]) await q.kill().catch((e: unknown) => void stuck.push(e));
    await removeLabNetwork(this.net);
    if (process.env.REMUS_COLO_KEEP !== '1') await rm(this.dir, { recursive: true, force: true });
    if (stuck.length > 0) throw stuck[0];
  }
}

/** One request to the guest's counter service from `clientNs`, bounded by `timeoutMs`. Throws SCRIPT_FAILED/SCRIPT_TIMEOUT when no answer, OP_FAILED for an unexpected one. */
export async function requestCounter(clientNs: string, timeoutMs = 10_000): Promise<CounterAnswer> {
  const secs = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
  const r = await runScript('ip', ['netns', 'exec', clientNs, 'busybox', 'nc', '-w', secs, GUEST_IP, '80'], {
    input: 'GET /cgi-bin/count HTTP/1.0\r\n\r\n',
    timeoutMs,
  });
  const m = /count=(\d+) rand=(\S+)/.exec(r.stdout);
  if (!m) throw new RemusError('OP_FAILED', `colo-lab: unexpected answer from the guest: ${JSON.stringify(r.stdout)}`);
  return { count: Number(m[1]), rand: m[2]! };
}
