// Real QEMUs for the `remus colo` tests (no guest): a primary-shaped and a
// secondary-shaped QEMU per COLO-FT.txt, started with -S in temp dirs, each
// with two QMP sockets. `stopQemus()` kills every one by pid and removes the dirs.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Qemu {
  readonly pid: number;
  readonly dir: string;
  /** [0] commands, [1] events and probes. */
  readonly qmp: readonly [string, string];
  readonly child: ChildProcess;
  stderr(): string;
}

const started: Qemu[] = [];

/** Kills every QEMU started here (by pid) and removes its dir. */
export async function stopQemus(): Promise<void> {
  for (const q of started.splice(0)) {
    if (q.child.exitCode === null && q.child.signalCode === null) {
      const exited = new Promise((r) => q.child.once('exit', r));
      q.child.kill('SIGKILL');
      await exited;
    }
    rmSync(q.dir, { recursive: true, force: true });
  }
}

function image(dir: string, name: string): string {
  const path = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '16M']);
  return path;
}

async function startQemu(tag: string, extra: (dir: string) => string[]): Promise<Qemu> {
  const dir = mkdtempSync(join(tmpdir(), `remus-cli-colo-${tag}-${process.pid}-`));
  const qmp: [string, string] = [join(dir, 'qmp0.sock'), join(dir, 'qmp1.sock')];
  const args = ['-S', '-nodefaults', '-display', 'none', '-machine', 'pc', '-accel', 'tcg', '-m', '64'];
  for (const s of qmp) args.push('-qmp', `unix:${s},server=on,wait=off`);
  let child: ChildProcess;
  try {
    args.push(...extra(dir));
    child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const q: Qemu = { pid: child.pid!, dir, qmp, child, stderr: () => err };
  started.push(q);
  for (let i = 0; i < 400 && !qmp.every((s) => existsSync(s)); i++) {
    if (child.exitCode !== null) break;
    await sleep(25);
  }
  if (!qmp.every((s) => existsSync(s))) throw new Error(`QEMU did not start: ${err}`);
  return q;
}

/** Netdev `hn0`, guest disk `colo-disk0` = quorum over a qcow2 image. */
export function startPrimary(): Promise<Qemu> {
  return startQemu('pri', (dir) => [
    '-netdev',
    'user,id=hn0',
    '-drive',
    `if=none,id=colo-disk0,driver=quorum,read-pattern=fifo,vote-threshold=1,children.0.file.filename=${image(dir, 'primary.qcow2')},children.0.driver=qcow2`,
  ]);
}

/** Netdev `hn0`, `parent0`, replication (secondary) over active/hidden images, quorum `colo-disk0`, waiting for the migration on `incoming`. */
export function startSecondary(incoming: string): Promise<Qemu> {
  return startQemu('sec', (dir) => [
    '-incoming',
    incoming,
    '-netdev',
    'user,id=hn0',
    '-drive',
    `if=none,id=parent0,file.filename=${image(dir, 'parent.qcow2')},driver=qcow2`,
    '-drive',
    `if=none,id=childs0,driver=replication,mode=secondary,file.driver=qcow2,top-id=colo-disk0,file.file.filename=${image(dir, 'active.qcow2')},file.backing.driver=qcow2,file.backing.file.filename=${image(dir, 'hidden.qcow2')},file.backing.backing=parent0`,
    '-drive',
    'if=none,id=colo-disk0,driver=quorum,read-pattern=fifo,vote-threshold=1,children.0=childs0',
  ]);
}

/** Free TCP ports on 127.0.0.1. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, async () => {
      const s = createServer();
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** Starts a primary and a secondary and returns the pair file's content for them (devices `nic0` and `disk0`). */
export async function qemuPair(extra: Record<string, unknown> = {}): Promise<{ pri: Qemu; sec: Qemu; pair: Record<string, unknown> }> {
  const [mirror, compare, nbd, migration] = (await freePorts(4)) as [number, number, number, number];
  const incoming = `tcp:127.0.0.1:${migration}`;
  const [sec, pri] = await Promise.all([startSecondary(incoming), startPrimary()]);
  const at = (port: number) => ({ host: '127.0.0.1', port });
  const pair = {
    primary: {
      qmp: pri.qmp[0],
      qmpEvents: pri.qmp[1],
      pid: pri.pid,
      devices: [
        { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(mirror), compare: at(compare), primaryIn: { path: join(pri.dir, 'pri.sock') }, compareOut: { path: join(pri.dir, 'out.sock') } } },
        { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: at(nbd), export: 'parent0' } },
      ],
    },
    secondary: {
      qmp: sec.qmp[0],
      qmpEvents: sec.qmp[1],
      pid: sec.pid,
      devices: [
        { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(mirror), compare: at(compare) } },
        { id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at(nbd), export: 'parent0', quorum: 'colo-disk0' } },
      ],
    },
    migrationUri: incoming,
    checkpointDelayMs: 600_000,
    ...extra,
  };
  return { pri, sec, pair };
}
