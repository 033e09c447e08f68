/**
 * Test helper: real QEMU processes with QMP monitors in a temp dir, killed
 * by PID and their dir removed by `stop()` (call it in afterEach/afterAll).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface TestQemu {
  readonly pid: number;
  readonly dir: string;
  /** The QMP monitor sockets, in the order asked for. */
  readonly qmp: readonly string[];
  readonly process: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
}

export interface StartQemuOptions {
  /** Number of unix QMP monitors (default 1). */
  readonly monitors?: number;
  /** Extra QMP monitor on TCP at this port. */
  readonly tcpPort?: number;
  /** `-machine` value (default `none`: no CPU, cheapest). */
  readonly machine?: string;
  /** Extra arguments. */
  readonly args?: readonly string[];
}

export async function startQemu(options: StartQemuOptions = {}): Promise<TestQemu> {
  const dir = mkdtempSync(join(tmpdir(), `remus-qmp-${process.pid}-`));
  const qmp = Array.from({ length: options.monitors ?? 1 }, (_, i) => join(dir, `qmp${i}.sock`));
  const args = ['-S', '-nodefaults', '-display', 'none', '-machine', options.machine ?? 'none', '-accel', 'tcg', '-m', '64'];
  for (const s of qmp) args.push('-qmp', `unix:${s},server=on,wait=off`);
  if (options.tcpPort) args.push('-qmp', `tcp:127.0.0.1:${options.tcpPort},server=on,wait=off`);
  args.push(...(options.args ?? []));
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const ready = async () => qmp.every((s) => existsSync(s));
  for (let i = 0; i < 400 && !(await ready()); i++) {
    if (child.exitCode !== null) break;
    await sleep(25);
  }
  if (!(await ready())) {
    await stop();
    throw new Error(`QEMU did not start: ${err}`);
  }
  return { pid: child.pid!, dir, qmp, process: child, stderr: () => err, stop };
}

