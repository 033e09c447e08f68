import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { waitFor } from './misc.js';

/** A QEMU started by {@link startQemu}: no guest (`-S`), TCG, 64 MiB, two QMP monitors. */
export interface TestQemu {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Its folder (images, sockets). */
  readonly dir: string;
  /** QMP unix sockets: [0] for the code under test, [1] for events, probes and inspection. */
  readonly qmp: readonly [string, string];
  stderr(): string;
  /** SIGKILLs it by its pid (if it still runs) and waits for its exit. Idempotent. */
  stop(): Promise<void>;
}

/** The guest disk's quorum on both sides of a COLO pair (`colo-disk0`, vote-threshold 1). */
export const COLO_QUORUM = 'if=none,id=colo-disk0,driver=quorum,read-pattern=fifo,vote-threshold=1';

/** Creates a 16 MiB qcow2 image `name` in `dir` and returns its path. */
export function qcow2(dir: string, name: string): string {
  const path = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '16M']);
  return path;
}

/**
 * The machine of a COLO primary without a guest: netdev `hn0` (user) and the
 * guest disk `colo-disk0`, a quorum over a fresh `primary.qcow2` in `dir`
 * (prefixed with `imagePrefix`, so two sides can share a folder).
 */
export function coloPrimaryMachine(dir: string, imagePrefix = ''): string[] {
  return ['-netdev', 'user,id=hn0', '-drive', `${COLO_QUORUM},children.0.file.filename=${qcow2(dir, `${imagePrefix}primary.qcow2`)},children.0.driver=qcow2`];
}

/**
 * The machine of a COLO secondary per QEMU's COLO-FT.txt: netdev `hn0`,
 * `parent0` (the copy of the primary's disk, exported over NBD),
 * replication (secondary) over fresh active/hidden images, quorum
 * `colo-disk0`; with `incoming` it waits for the migration there.
 */
export function coloSecondaryMachine(dir: string, options: { incoming?: string; imagePrefix?: string } = {}): string[] {
  const p = options.imagePrefix ?? '';
  const [parent, active, hidden] = ['parent', 'active', 'hidden'].map((n) => qcow2(dir, `${p}${n}.qcow2`));
  return [
    ...(options.incoming ? ['-incoming', options.incoming] : []),
    '-netdev', 'user,id=hn0',
    '-drive', `if=none,id=parent0,file.filename=${parent},driver=qcow2`,
    '-drive', `if=none,id=childs0,driver=replication,mode=secondary,file.driver=qcow2,top-id=colo-disk0,file.file.filename=${active},file.backing.driver=qcow2,file.backing.file.filename=${hidden},file.backing.backing=parent0`,
    '-drive', `${COLO_QUORUM},children.0=childs0`,
  ];
}

function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The argument vector {@link startQemu} runs `qemu-system-x86_64` with (for a program that starts QEMU itself, e.g. detached). */
export function qemuArgv(options: { dir: string; name: string; machine: readonly string[] }): { argv: string[]; qmp: readonly [string, string] } {
  const qmp = [join(options.dir, `${options.name}-qmp0.sock`), join(options.dir, `${options.name}-qmp1.sock`)] as const;
  const argv = ['-S', '-nodefaults', '-display', 'none', '-machine', 'pc', '-accel', 'tcg', '-m', '64', ...qmp.flatMap((s) => ['-qmp', `unix:${s},server=on,wait=off`]), ...options.machine];
  return { argv, qmp };
}

/** Resolves once both QMP monitors accept a connection (bounded by `ms`); `exited()` says whether QEMU is gone (then it throws). */
export async function waitQmpReady(qmp: readonly [string, string], ms: number, what: string, exited: () => string | undefined, describe: () => string): Promise<void> {
  await waitFor(
    async () => {
      const gone = exited();
      if (gone !== undefined) throw new Error(`${what}: QEMU ${gone} before its QMP monitors listened: ${describe()}`);
      return qmp.every(existsSync) && (await accepts(qmp[0])) && (await accepts(qmp[1]));
    },
    ms,
    what,
    describe,
  );
}

/**
 * Starts `qemu-system-x86_64 -S -nodefaults -display none -machine pc -accel tcg -m 64`
 * with two QMP monitors `<dir>/<name>-qmp0.sock` and `-qmp1.sock` plus
 * `machine`, in `dir`; resolves when both monitors accept a connection
 * (bounded: 20 s; QEMU's exit or stderr is in the error otherwise).
 */
export async function startQemu(options: { dir: string; name: string; machine: readonly string[] }): Promise<TestQemu> {
  const { dir, name } = options;
  const { argv, qmp } = qemuArgv(options);
  const child = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const q: TestQemu = {
    pid: child.pid!,
    child,
    dir,
    qmp,
    stderr: () => err,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid!, 'SIGKILL');
        await exited;
      }
    },
  };
  try {
    // The socket file appears at bind(), a moment before QEMU listens: wait until both accept.
    await waitQmpReady(qmp, 20_000, `QEMU (${name}) QMP monitors`, () => (child.exitCode !== null ? `exited ${child.exitCode}` : undefined), () => err);
  } catch (e) {
    await q.stop();
    throw e;
  }
  return q;
}
