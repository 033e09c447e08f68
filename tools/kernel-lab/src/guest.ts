/**
 * One QEMU guest of the lab: boot, the control line, jobs, and making sure
 * no QEMU process or temp folder outlives it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { AGENT_SCRIPT, QUIT_EXIT_STATUS } from './guest-scripts.js';
import type { LabStamp } from './paths.js';
import { BUSYBOX } from './setup.js';
import { processAlive, startTimeOf } from '@remus/test-lab';

/** How much of the kernel console a guest keeps (and a result carries). */
export const CONSOLE_TAIL_CHARS = 16_384;

/** How much of a body's output a result carries (the end of it). */
const OUTPUT_MAX_CHARS = 1_000_000;

/**
 * 9p cache mode of the host root in the guest. `none` costs 60-80 ms per
 * lookup under emulation (Node loading a package took 20-90 s); `loose`
 * caches lookups and data, so a file changed in place on the host after the
 * guest read it may look stale (new files are seen).
 */
const ROOT_9P_CACHE = 'loose';

/** Name of the QEMU binary. */
export const QEMU = 'qemu-system-x86_64';

/** Every guest not yet disposed of in this process (QEMU and its temp folder), cleaned up when the process exits. */
const liveGuests = new Map<ChildProcess, string>();
process.once('exit', () => {
  for (const [child, runDir] of liveGuests) {
    child.kill('SIGKILL');
    rmSync(runDir, { recursive: true, force: true });
  }
});

/** Prefix of the per-boot temp folders in the OS temp dir. */
const RUN_DIR_PREFIX = 'remus-lab-';

/**
 * Removes per-boot temp folders whose owning process is gone (it was
 * SIGKILLed before it could clean up; its QEMU died with it via pdeathsig).
 * The owner file holds the owner's pid and start time, so a reused pid is
 * not taken for the owner; a zombie owner (SIGKILLed, not yet reaped) counts
 * as gone (test-lab's processAlive).
 */
async function sweepStaleRunDirs(): Promise<void> {
  const entries = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const entry of entries.filter((e) => e.startsWith(RUN_DIR_PREFIX))) {
    const dir = join(tmpdir(), entry);
    const [pidText, startText] = (await readFile(join(dir, 'owner'), 'utf8').catch(() => 'NaN')).trim().split(/\s+/);
    const owner = Number(pidText);
    if (!Number.isInteger(owner) || owner <= 0 || owner === process.pid) continue;
    if (!processAlive(owner, startText)) await rm(dir, { recursive: true, force: true });
  }
}

/** Absolute path of `name` on PATH, or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    const p = join(dir, name);
    if (dir !== '' && existsSync(p)) return p;
  }
  return undefined;
}

/** Shell single-quoting for bash (used for generated job files, never for host commands). */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** A job as the agent takes it. */
export interface GuestJob {
  /** Host paths to bind (read-only, from the 9p host root) at the same path before the body runs. */
  binds: string[];
  cwd: string;
  env: Record<string, string>;
  /** Bash script text. */
  body: string;
}

export type GuestRunResult =
  | { outcome: 'pass' | 'fail'; exitCode: number; output: string }
  | { outcome: 'crash' | 'timeout'; output: string };

export type BootFailure = { outcome: 'crash' | 'timeout'; message: string; console: string };

type Waited = { kind: 'line'; line: string } | { kind: 'exit' } | { kind: 'timeout' };

/** How the QEMU process ended. */
export interface GuestExit {
  status: number | null;
  signal: NodeJS.Signals | null;
}

export class Guest {
  /** Everything QEMU printed: the kernel console (ttyS0) and QEMU's own messages. */
  private consoleText = '';
  private ctl: Socket | undefined;
  private ctlBuffer = '';
  private readonly lines: string[] = [];
  private readonly waiters = new Set<() => void>();
  private exitInfo: GuestExit | undefined;
  private jobSeq = 0;
  /** Resolves when QEMU has exited. */
  readonly exited: Promise<GuestExit>;

  private constructor(
    private readonly child: ChildProcess,
    /** Per-boot temp folder: control socket, writable share. Removed by dispose(). */
    readonly runDir: string,
  ) {
    liveGuests.set(child, runDir);
    const t0 = Date.now();
    const onData = (d: Buffer) => {
      if (process.env.REMUS_LAB_TRACE === '1') process.stderr.write(`[remus-lab +${Date.now() - t0} ms] ${d.toString('utf8')}`);
      this.consoleText = (this.consoleText + d.toString('utf8')).slice(-4 * CONSOLE_TAIL_CHARS);
    };
    child.stdout?.on('data', onData);
    // QEMU's own notice that it waits for the control socket is noise in a console tail.
    child.stderr?.on('data', (d: Buffer) => onData(Buffer.from(d.toString('utf8').replace(/^.*QEMU waiting for connection.*\n?/gm, ''))));
    this.exited = new Promise((resolveExit) => {
      const done = (status: number | null, signal: NodeJS.Signals | null) => {
        if (this.exitInfo !== undefined) return;
        this.exitInfo = { status, signal };
        this.wake();
        resolveExit(this.exitInfo);
      };
      child.on('exit', done);
      child.on('error', (e) => {
        this.consoleText += `\n[remus-lab] could not start ${QEMU}: ${e.message}\n`;
        done(null, null);
      });
    });
  }

  /** QEMU's pid while it runs. */
  get pid(): number | undefined {
    return this.exitInfo === undefined ? this.child.pid : undefined;
  }

  /** True once QEMU has exited. */
  get dead(): boolean {
    return this.exitInfo !== undefined;
  }

  /** The last {@link CONSOLE_TAIL_CHARS} characters of the console. */
  consoleTail(): string {
    return this.consoleText.slice(-CONSOLE_TAIL_CHARS);
  }

  /**
   * Boots a guest and waits for its agent's READY. On failure the guest is
   * already disposed of and the failure says why (with the console tail).
   */
  static async boot(stamp: LabStamp, bootTimeoutMs: number): Promise<Guest | BootFailure> {
    const deadline = Date.now() + bootTimeoutMs;
    await sweepStaleRunDirs();
    const runDir = await mkdtemp(join(tmpdir(), RUN_DIR_PREFIX));
    await writeFile(join(runDir, 'owner'), `${process.pid} ${startTimeOf(process.pid) ?? ''}`);
    const share = join(runDir, 'share');
    await mkdir(join(share, 'jobs'), { recursive: true });
    await writeFile(join(share, 'agent.sh'), AGENT_SCRIPT, { mode: 0o755 });
    await writeFile(
      join(share, 'boot.conf'),
      `KVER=${shellQuote(stamp.release)}\nMODULES_DIR=${shellQuote(stamp.modulesDir)}\nBUSYBOX=${shellQuote(BUSYBOX)}\n` +
        `ROOT_CACHE=${ROOT_9P_CACHE}\n`,
    );
    const sock = join(runDir, 'ctl.sock');
    const qemuArgs = [
      '-nodefaults', '-no-user-config', '-machine', 'pc',
      '-accel', 'tcg,thread=multi', '-cpu', 'max', '-smp', '2', '-m', '1G',
      '-display', 'none', '-monitor', 'none', '-no-reboot',
      '-chardev', 'stdio,id=con,signal=off', '-serial', 'chardev:con',
      '-chardev', `socket,id=ctl,path=${sock},server=on,wait=on`, '-serial', 'chardev:ctl',
      '-kernel', stamp.kernel, '-initrd', stamp.initramfs,
      // REMUS_LAB_TRACE=1 also shows the kernel's boot messages.
      '-append', `console=ttyS0 panic=-1 ${process.env.REMUS_LAB_TRACE === '1' ? 'loglevel=7' : 'quiet loglevel=4'} mitigations=off rdinit=/init`,
      '-fsdev', 'local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap',
      '-device', 'virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot',
      '-fsdev', `local,id=labshare,path=${share},security_model=none,multidevs=remap`,
      '-device', 'virtio-9p-pci,fsdev=labshare,mount_tag=labshare',
      '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04',
    ];
    // setpriv makes the kernel kill QEMU if this process dies without cleaning up.
    const setpriv = findOnPath('setpriv');
    const [file, args] =
      setpriv !== undefined ? [setpriv, ['--pdeathsig', 'KILL', '--', QEMU, ...qemuArgs]] : [QEMU, qemuArgs];
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const guest = new Guest(child, runDir);
    const failure = await guest.connectAndWaitReady(sock, deadline);
    if (failure === undefined) return guest;
    await guest.dispose();
    const result: BootFailure = { ...failure, console: guest.consoleTail() };
    return result;
  }

  private async connectAndWaitReady(sock: string, deadline: number): Promise<Omit<BootFailure, 'console'> | undefined> {
    const ms = () => Math.max(0, deadline - Date.now());
    while (!existsSync(sock)) {
      if (this.dead) return { outcome: 'crash', message: `${QEMU} exited before the guest booted (${describeExit(this.exitInfo)})` };
      if (ms() === 0) return { outcome: 'timeout', message: `${QEMU} did not open its control socket in time` };
      await new Promise((r) => setTimeout(r, 20));
    }
    // The socket file appears at bind(), before QEMU listens: retry a refused connect.
    let socket: Socket | undefined;
    while (socket === undefined) {
      const attempt = connect(sock);
      const ok = await new Promise<boolean>((resolveConnect) => {
        const timer = setTimeout(() => resolveConnect(false), Math.max(ms(), 1));
        attempt.once('connect', () => (clearTimeout(timer), resolveConnect(true)));
        attempt.once('error', () => (clearTimeout(timer), resolveConnect(false)));
      });
      if (ok) {
        socket = attempt;
        break;
      }
      attempt.destroy();
      if (this.dead) return { outcome: 'crash', message: `${QEMU} exited before the guest booted (${describeExit(this.exitInfo)})` };
      if (ms() === 0) return { outcome: 'timeout', message: `could not connect to ${QEMU}'s control socket in time` };
      await new Promise((r) => setTimeout(r, 20));
    }
    this.ctl = socket;
    socket.on('data', (d: Buffer) => {
      this.ctlBuffer += d.toString('utf8');
      let nl: number;
      while ((nl = this.ctlBuffer.indexOf('\n')) >= 0) {
        const line = this.ctlBuffer.slice(0, nl).replace(/\r$/, '');
        this.ctlBuffer = this.ctlBuffer.slice(nl + 1);
        this.lines.push(line);
      }
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => this.wake());
    const w = await this.waitFor((l) => l === 'READY', ms());
    if (w.kind === 'line') return undefined;
    if (w.kind === 'exit') {
      return { outcome: 'crash', message: `the guest died during boot (${describeExit(this.exitInfo)})` };
    }
    return { outcome: 'timeout', message: 'the guest did not boot within the boot timeout (REMUS_LAB_TRACE=1 shows the kernel boot messages)' };
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Waits for a control line matching `match` (consuming it), QEMU's exit, or `timeoutMs`. */
  private waitFor(match: (line: string) => boolean, timeoutMs: number): Promise<Waited> {
    return new Promise((resolveWait) => {
      const check = () => {
        const i = this.lines.findIndex(match);
        if (i >= 0) return finish({ kind: 'line', line: this.lines.splice(i, 1)[0] });
        if (this.dead) return finish({ kind: 'exit' });
      };
      const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs);
      const finish = (w: Waited) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolveWait(w);
      };
      this.waiters.add(check);
      check();
    });
  }

  /**
   * Runs one job. 'crash': QEMU ended before the agent reported (the guest is
   * dead). 'timeout': no report within `timeoutMs` (the guest is killed).
   */
  async run(job: GuestJob, timeoutMs: number): Promise<GuestRunResult> {
    const id = ++this.jobSeq;
    const dir = join(this.runDir, 'share', 'jobs', String(id));
    await mkdir(dir);
    await writeFile(join(dir, 'binds'), job.binds.map((b) => `${b}\n`).join(''));
    await writeFile(join(dir, 'cwd'), job.cwd);
    await writeFile(join(dir, 'env'), Object.entries(job.env).map(([k, v]) => `${k}=${shellQuote(v)}\n`).join(''));
    await writeFile(join(dir, 'body'), job.body);
    await writeFile(join(dir, 'output'), '');
    if (this.dead || this.ctl === undefined) return { outcome: 'crash', output: '' };
    this.ctl.write(`RUN ${id}\n`);
    const w = await this.waitFor((l) => l.startsWith(`DONE ${id} `), timeoutMs);
    if (w.kind === 'timeout') await this.kill();
    const output = await readFile(join(dir, 'output'), 'utf8').catch(() => '');
    const trimmed = output.length > OUTPUT_MAX_CHARS ? `...${output.slice(-OUTPUT_MAX_CHARS)}` : output;
    await rm(dir, { recursive: true, force: true });
    if (w.kind === 'exit') return { outcome: 'crash', output: trimmed };
    if (w.kind === 'timeout') return { outcome: 'timeout', output: trimmed };
    const exitCode = Number(w.line.split(' ')[2]);
    return { outcome: exitCode === 0 ? 'pass' : 'fail', exitCode, output: trimmed };
  }

  /** Describes how QEMU ended (for crash messages). */
  exitDescription(): string {
    return describeExit(this.exitInfo);
  }

  /** SIGKILLs QEMU and waits for it to be gone. */
  async kill(): Promise<void> {
    if (!this.dead) this.child.kill('SIGKILL');
    await this.exited;
  }

  /**
   * Asks the agent to power off through isa-debug-exit; kills QEMU if it is
   * not gone within `graceMs`. Resolves true when the exit was the clean one.
   */
  async quit(graceMs = 3000): Promise<boolean> {
    if (!this.dead && this.ctl !== undefined) {
      this.ctl.write('QUIT\n');
      const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(t);
    }
    await this.kill();
    return this.exitInfo?.status === QUIT_EXIT_STATUS;
  }

  /** Kills QEMU if needed, closes the control line, removes the temp folder. Idempotent. */
  async dispose(): Promise<void> {
    await this.kill();
    this.ctl?.destroy();
    await rm(this.runDir, { recursive: true, force: true });
    liveGuests.delete(this.child);
  }
}

function describeExit(e: GuestExit | undefined): string {
  if (e === undefined) return 'still running';
  if (e.signal !== null) return `QEMU killed by ${e.signal}`;
  if (e.status === 0) return 'QEMU exited with status 0: the guest powered off or rebooted without reporting';
  if (e.status === QUIT_EXIT_STATUS) return 'QEMU exited after QUIT';
  if (e.status !== null && (e.status & 1) === 1) return `QEMU exited with status ${e.status}: isa-debug-exit written with ${e.status >> 1}`;
  return `QEMU exited with status ${e.status}`;
}
