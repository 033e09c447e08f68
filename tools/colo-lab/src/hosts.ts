/**
 * The two-host COLO lab: hosts `ha` and `hb` are namespaces of an etcd-lab
 * network (its switch carries migration, NBD and proxy traffic between the
 * hosts' addresses and can cut them apart), a three-member etcd on the same
 * switch, a client namespace joined to a bridge in each host
 * (net.ts `createClientLan`), one QEMU per host, and on each host its own
 * side process: the product's `remus colo side SIDE.json --json`
 * (`ColoSideDriver` over its own QMP, the etcd arbiter). `close()` kills every process it started by pid and removes
 * the namespaces and files.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RemusError, newOperationId, pollUntil, runScript } from '@remus/core';
import type { ColoRole } from '@remus/colo';
import { connectQmp } from '@remus/qmp';
import { createLabNet, startEtcdCluster, type EtcdCluster, type LabNet } from '@remus/etcd-lab';
import { GUEST_MAC, GUEST_READY_LINE, buildGuestInitramfs, findGuestKernel } from './guest.js';
import { requestCounter, type CounterAnswer } from './lab.js';
import { BRIDGE, HOST_TAP, attachTap, createClientLan, detachTap } from './net.js';
import { DEFAULT_PORTS, coloDevices, createImages, primaryArgs, secondaryArgs, spawnQemu, type QemuProcess, type VmSpec } from './qemu.js';
import { buildShim, detectAccel, type Accel } from './shim.js';

export type HostName = 'ha' | 'hb';
export const HOSTS: readonly HostName[] = ['ha', 'hb'];

/** One line a side process printed (`remus colo side --json`: `type`, `time`, `t` in wall-clock ms). */
export interface SideLine {
  readonly t: number;
  readonly type: string;
  readonly [k: string]: unknown;
}

/** A side process this lab started. */
export interface SideProcess {
  readonly host: HostName;
  readonly role: ColoRole;
  readonly child: ChildProcess;
  readonly lines: SideLine[];
  /** Resolves with the first line (already printed or to come) that `match`es; TIMEOUT after `timeoutMs`. */
  waitFor(match: (l: SideLine) => boolean, what: string, timeoutMs: number): Promise<SideLine>;
}

export interface TwoHostLabOptions {
  readonly prefix?: string;
  readonly accel?: Accel;
  readonly checkpointDelayMs?: number;
  /** Lease TTL of the etcd arbiter, s. Default 2. */
  readonly ttlSeconds?: number;
  /** `autoReprotect` of every side file (`remus colo side`): the command run after a side went on alone. */
  readonly autoReprotect?: { readonly command: readonly string[]; readonly timeoutMs: number };
}

interface Host {
  readonly name: HostName;
  readonly netns: string;
  readonly ip: string;
  qmp: string;
  qmpEvents: string;
  qemu: QemuProcess;
  side?: SideProcess;
}

/** net.ipv4.tcp_retries2 in each host's namespace: 3 = about 3 s of retransmissions. */
export const TCP_RETRIES2 = 3;

/** The remus command of this checkout (built): the sides run as `remus colo side`. */
const REMUS_BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'packages', 'cli', 'dist', 'bin.js');

export class TwoHostLab {
  readonly dir: string;
  readonly net: LabNet;
  readonly etcd: EtcdCluster;
  readonly clientNs: string;
  readonly accel: Accel;
  readonly operationId = newOperationId();
  /** The election prefix both sides use (and `remus colo status --prefix`). */
  get etcdPrefix(): string {
    return `/remus/colo-lab/${this.operationId}`;
  }
  readonly hosts: Record<HostName, Host>;
  readonly #opts: TwoHostLabOptions;
  #closed = false;
  #generation = 0;

  private constructor(f: { dir: string; net: LabNet; etcd: EtcdCluster; clientNs: string; accel: Accel; hosts: Record<HostName, Host>; opts: TwoHostLabOptions }) {
    this.dir = f.dir;
    this.net = f.net;
    this.etcd = f.etcd;
    this.clientNs = f.clientNs;
    this.accel = f.accel;
    this.hosts = f.hosts;
    this.#opts = f.opts;
  }

  /** Builds network, etcd, guest and images; starts the secondary QEMU on `hb` and the primary on `ha` (guest booting). */
  static async create(options: TwoHostLabOptions = {}): Promise<TwoHostLab> {
    if (process.getuid?.() !== 0) throw new RemusError('UNSUPPORTED_HOST', 'colo-lab needs root (network namespaces, taps)');
    const accel = options.accel ?? detectAccel();
    const prefix = options.prefix ?? `colo-${process.pid}-2h`;
    const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
    const clientNs = `${prefix}-c`;
    let net: LabNet | undefined;
    const procs: QemuProcess[] = [];
    try {
      net = await createLabNet();
      const etcd = await startEtcdCluster(net);
      for (const h of HOSTS) {
        await net.addNode(h);
        // The replication link's TCP gives up after ~3 s of silence (default: ~15 min). QEMU's NBD
        // client has no I/O timeout: across a cut link a write in flight would hang the primary's
        // drain (x-blockdev-change) and with it its monitor. A real deployment needs the same.
        await net.run(h, 'sysctl', ['-q', '-w', `net.ipv4.tcp_retries2=${TCP_RETRIES2}`]);
      }
      await createClientLan(clientNs, HOSTS.map((h) => net!.node(h).netns));
      await attachTap({ hostNs: net.node('ha').netns, clientNs }, HOST_TAP);
      const kernel = await findGuestKernel();
      const initrd = join(dir, 'initramfs.cpio');
      await buildGuestInitramfs(kernel, dir, initrd);
      const images = { primary: join(dir, 'primary.qcow2'), parent: join(dir, 'parent.qcow2'), active: join(dir, 'active.qcow2'), hidden: join(dir, 'hidden.qcow2') };
      await createImages(images, 16);
      const shim = accel === 'tcg' ? await buildShim(join(dir, 'colo-tcg-shim.so')) : undefined;
      const spec = (h: HostName): VmSpec => ({
        accel,
        memoryMiB: 256,
        kernel: kernel.kernel,
        initrd,
        append: 'console=ttyS0 panic=-1 ipv6.disable=1 quiet',
        tap: HOST_TAP,
        mac: GUEST_MAC,
        qmpSocket: join(dir, `${h}.qmp`),
        qmpEventSocket: join(dir, `${h}-events.qmp`),
        serialLog: join(dir, `${h}.serial`),
        ports: DEFAULT_PORTS,
        listen: net!.node(h).ip,
      });
      const env = (role: ColoRole, h: HostName): Record<string, string> =>
        shim === undefined ? {} : { LD_PRELOAD: shim, COLO_SHIM_ROLE: role, COLO_SHIM_STATS: join(dir, `shim-${h}.stats`) };
      const b = spec('hb');
      const qb = spawnQemu(net.node('hb').netns, secondaryArgs({ ...b, parentImage: images.parent, activeImage: images.active, hiddenImage: images.hidden }), join(dir, 'hb.log'), env('secondary', 'hb'));
      procs.push(qb);
      const a = spec('ha');
      const qa = spawnQemu(net.node('ha').netns, primaryArgs({ ...a, image: images.primary }), join(dir, 'ha.log'), env('primary', 'ha'));
      procs.push(qa);
      const host = (h: HostName, s: VmSpec, qemu: QemuProcess): Host => ({ name: h, netns: net!.node(h).netns, ip: net!.node(h).ip, qmp: s.qmpSocket, qmpEvents: s.qmpEventSocket, qemu });
      return new TwoHostLab({ dir, net, etcd, clientNs, accel, hosts: { ha: host('ha', a, qa), hb: host('hb', b, qb) }, opts: options });
    } catch (e) {
      for (const p of procs) await p.kill().catch(() => {}); // the start's own error is the one to report
      await runScript('ip', ['netns', 'del', clientNs], { timeoutMs: 10_000 }).catch(() => {});
      await net?.destroy();
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * Waits for the guest on `ha`, pauses it, starts the secondary's side on
   * `hb`, after its `ready` the primary's on `ha`, and waits until both
   * sides replicate.
   */
  async start(timeoutMs = 150_000): Promise<void> {
    const serial = join(this.dir, 'ha.serial');
    await pollUntil(() => existsSync(serial) && readFileSync(serial, 'utf8').includes(GUEST_READY_LINE), {
      what: 'colo-lab: the guest on ha to be ready',
      timeoutMs,
      intervalMs: 200,
      describe: () => `\n${this.logs()}`,
    });
    const q = await connectQmp(this.hosts.ha.qmp, { timeoutMs: 5000 });
    try {
      await q.execute('stop');
    } finally {
      await q.close();
    }
    const sb = this.startSide('hb', 'secondary');
    await sb.waitFor((l) => l.type === 'ready', 'hb ready', timeoutMs);
    const sa = this.startSide('ha', 'primary');
    for (const s of [sa, sb]) await s.waitFor((l) => l.type === 'started' || l.type === 'start-failed' || l.type === 'crash', `${s.host} started`, timeoutMs);
    for (const s of [sa, sb]) {
      const bad = s.lines.find((l) => l.type === 'start-failed' || l.type === 'crash');
      if (bad) throw new RemusError('OP_FAILED', `colo-lab: the side on ${s.host} did not start: ${JSON.stringify(bad)}\n${this.logs()}`);
    }
  }

  /** Starts the side process of `host` in `role` (inside the host's namespace). */
  startSide(h: HostName, role: ColoRole): SideProcess {
    const host = this.hosts[h];
    const peer = this.hosts[h === 'ha' ? 'hb' : 'ha'];
    const devices = coloDevices(DEFAULT_PORTS, this.dir, role === 'primary' ? { primary: host.ip, secondary: peer.ip } : { primary: peer.ip, secondary: host.ip });
    // The side file of `remus colo side` (validated by it like a pair file).
    const cfg = {
      role,
      host: h,
      peer: peer.name,
      qemu: { qmp: host.qmp, qmpEvents: host.qmpEvents, pid: host.qemu.pid, devices: role === 'primary' ? devices.primary : devices.secondary },
      ...(role === 'primary' ? { migrationUri: `tcp:${peer.ip}:${DEFAULT_PORTS.migration}` } : {}),
      checkpointDelayMs: this.#opts.checkpointDelayMs ?? 2000,
      operationId: this.operationId,
      etcd: { endpoints: this.etcd.endpoints, prefix: this.etcdPrefix, ttlSeconds: this.#opts.ttlSeconds ?? 2 },
      epochStore: join(this.dir, `${h}-epoch.json`),
      fence: { tap: HOST_TAP, bridge: BRIDGE },
      statusEveryMs: 1000,
      ...(this.#opts.autoReprotect ? { autoReprotect: this.#opts.autoReprotect } : {}),
      // Going on alone across a cut link, x-blockdev-change waits for the in-flight NBD write until the
      // link's TCP gives up (tcp_retries2=3: ~3 s, several times that under load). The role watch
      // still fences the side at once if the role lapses meanwhile.
      commandTimeoutMs: 30_000,
      // The same for the watchdog over the side's own QEMU: while the drain waits, QEMU's monitor is
      // silent too, and the default bound (3 probes of 1.5 s) fenced a healthy ha once in CI.
      watchdog: { intervalMs: 500, probeTimeoutMs: 5000, misses: 4 },
    };
    const file = join(this.dir, `${h}-side-${Date.now()}.json`);
    writeFileSync(file, JSON.stringify(cfg));
    const child = spawn('ip', ['netns', 'exec', host.netns, process.execPath, REMUS_BIN, 'colo', 'side', file, '--json'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const lines: SideLine[] = [];
    const waiters = new Set<() => void>();
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          lines.push(JSON.parse(line) as SideLine);
        } catch {
          lines.push({ t: Date.now(), type: 'text', text: line });
        }
      }
      for (const w of waiters) w();
    });
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => void (err = (err + d).slice(-4000)));
    child.on('exit', (code, sig) => {
      lines.push({ t: Date.now(), type: 'exit', code, signal: sig, stderr: err });
      for (const w of waiters) w();
    });
    const side: SideProcess = {
      host: h,
      role,
      child,
      lines,
      waitFor: (match, what, timeoutMs) =>
        new Promise<SideLine>((resolve, reject) => {
          const check = (): void => {
            const l = lines.find(match);
            if (!l) return;
            cleanup();
            resolve(l);
          };
          const timer = setTimeout(() => {
            cleanup();
            reject(new RemusError('TIMEOUT', `colo-lab: ${what}: not within ${timeoutMs} ms; ${h} printed:\n${lines.slice(-15).map((l) => JSON.stringify(l)).join('\n')}`));
          }, timeoutMs);
          const cleanup = (): void => {
            clearTimeout(timer);
            waiters.delete(check);
          };
          waiters.add(check);
          check();
        }),
    };
    host.side = side;
    return side;
  }

  /**
   * A fresh secondary QEMU on `h` (after its old QEMU died): new images
   * (their content does not matter: reprotect overwrites them), new QMP
   * sockets, its tap off the bridge. Start its side with
   * `startSide(h, 'secondary')`, then `reprotect(peer)`.
   */
  async newSecondary(h: HostName): Promise<void> {
    const host = this.hosts[h];
    await host.qemu.kill();
    await detachTap({ hostNs: host.netns, clientNs: this.clientNs }, HOST_TAP);
    const g = `${h}-g${++this.#generation}`;
    const images = { primary: join(this.dir, `${g}-unused.qcow2`), parent: join(this.dir, `${g}-parent.qcow2`), active: join(this.dir, `${g}-active.qcow2`), hidden: join(this.dir, `${g}-hidden.qcow2`) };
    await createImages(images, 16);
    const kernel = await findGuestKernel();
    const spec: VmSpec = {
      accel: this.accel,
      memoryMiB: 256,
      kernel: kernel.kernel,
      initrd: join(this.dir, 'initramfs.cpio'),
      append: 'console=ttyS0 panic=-1 ipv6.disable=1 quiet',
      tap: HOST_TAP,
      mac: GUEST_MAC,
      qmpSocket: join(this.dir, `${g}.qmp`),
      qmpEventSocket: join(this.dir, `${g}-events.qmp`),
      serialLog: join(this.dir, `${g}.serial`),
      ports: DEFAULT_PORTS,
      listen: host.ip,
    };
    const shim = join(this.dir, 'colo-tcg-shim.so');
    const env: Record<string, string> = this.accel === 'tcg' ? { LD_PRELOAD: shim, COLO_SHIM_ROLE: 'secondary', COLO_SHIM_STATS: join(this.dir, `shim-${g}.stats`) } : {};
    host.qemu = spawnQemu(host.netns, secondaryArgs({ ...spec, parentImage: images.parent, activeImage: images.active, hiddenImage: images.hidden }), join(this.dir, `${g}.log`), env);
    host.qmp = spec.qmpSocket;
    host.qmpEvents = spec.qmpEventSocket;
  }

  /** Tells `h`'s side (serving alone) to reprotect onto the other host's fresh secondary (whose side said `ready`). */
  reprotect(h: HostName): void {
    this.side(h).child.stdin!.write(`${this.reprotectCommand(h)}\n`);
  }

  /** The reprotect command (one JSON line) that makes `h`, serving alone, protect onto the other host's fresh secondary. */
  reprotectCommand(h: HostName): string {
    const host = this.hosts[h];
    const peer = this.hosts[h === 'ha' ? 'hb' : 'ha'];
    const devices = coloDevices(DEFAULT_PORTS, this.dir, { primary: host.ip, secondary: peer.ip }).primary;
    return JSON.stringify({ command: 'reprotect', devices, migrationUri: `tcp:${peer.ip}:${DEFAULT_PORTS.migration}` });
  }

  /** Removes every partition (a killed host reachable again). */
  heal(): Promise<void> {
    return this.net.heal();
  }

  /** The host's side process (started). */
  side(h: HostName): SideProcess {
    const s = this.hosts[h].side;
    if (!s) throw new RemusError('STATE', `colo-lab: no side process on ${h}`);
    return s;
  }

  /** The primary host dies: its side process and its QEMU SIGKILLed, and it is cut off from everyone. */
  async killHost(h: HostName): Promise<void> {
    const host = this.hosts[h];
    if (host.side?.child.pid !== undefined && host.side.child.exitCode === null) process.kill(host.side.child.pid, 'SIGKILL');
    process.kill(host.qemu.pid, 'SIGKILL');
    await this.net.isolate(h);
    await host.qemu.kill();
  }

  /** A partition between the two hosts only: both still reach every etcd member and the clients. */
  cutHosts(): Promise<void> {
    return this.net.cut(['ha'], ['hb']);
  }

  request(timeoutMs = 10_000): Promise<CounterAnswer> {
    return requestCounter(this.clientNs, timeoutMs);
  }

  /** Tails of the QEMU logs, consoles and side processes' last lines, for failure messages. */
  logs(max = 1500): string {
    const t = (name: string): string => {
      const f = join(this.dir, name);
      const s = existsSync(f) ? readFileSync(f, 'utf8') : '(none)';
      return `--- ${name}\n${s.length > max ? s.slice(-max) : s}`;
    };
    const sides = HOSTS.map((h) => `--- side ${h}\n${(this.hosts[h].side?.lines ?? []).slice(-12).map((l) => JSON.stringify(l).slice(0, 400)).join('\n')}`);
    return [...['ha.log', 'hb.log', 'ha.serial', 'hb.serial'].map(t), ...sides].join('\n');
  }

  /** Kills side processes and QEMUs by pid, removes etcd, namespaces and files. Idempotent, best effort. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Everything is removed that can be; a QEMU that outlived its SIGKILL is reported after.
    const stuck: unknown[] = [];
    for (const h of HOSTS) {
      const s = this.hosts[h].side;
      if (s?.child.pid !== undefined && s.child.exitCode === null && s.child.signalCode === null) {
        try {
          process.kill(s.child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await this.hosts[h].qemu.kill().catch((e: unknown) => void stuck.push(e));
    }
    await this.etcd.stop().catch(() => {});
    await runScript('ip', ['netns', 'del', this.clientNs], { timeoutMs: 10_000 }).catch(() => {});
    await this.net.destroy();
    if (process.env.REMUS_COLO_KEEP !== '1') await rm(this.dir, { recursive: true, force: true });
    if (stuck.length > 0) throw stuck[0];
  }
}
