// Real QEMUs for the `remus colo` tests (no guest, -S), each with two QMP
// sockets. `stopQemus()` kills every one by pid and removes their folder.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, waitFor } from '@remus/test-lab';

export interface Qemu {
  readonly pid: number;
  /** [0] commands, [1] events and probes. */
  readonly qmp: readonly [string, string];
  readonly child: ChildProcess;
  stderr(): string;
}

const started: ChildProcess[] = [];
const dirs: string[] = [];

/** Kills every QEMU started here (by pid) and removes the pair folders. */
export async function stopQemus(): Promise<void> {
  for (const child of started.splice(0)) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((r) => child.once('exit', r));
    process.kill(child.pid!, 'SIGKILL');
    await exited;
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** One QEMU of the pair; its files in `dir` are named after `side`. */
async function qemu(dir: string, side: 'pri' | 'sec', machine: readonly string[]): Promise<Qemu> {
  const qmp = [join(dir, `${side}-qmp0.sock`), join(dir, `${side}-qmp1.sock`)] as const;
  const argv = ['-S', '-nodefaults', '-display', 'none', '-machine', 'pc', '-accel', 'tcg', '-m', '64', ...qmp.flatMap((s) => ['-qmp', `unix:${s},server=on,wait=off`]), ...machine];
  const child = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  started.push(child);
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`QEMU (${side}) did not start: ${err}`);
      return qmp.every(existsSync);
    },
    10_000,
    `QEMU (${side}) QMP sockets`,
    () => err,
  );
  return { pid: child.pid!, qmp, child, stderr: () => err };
}

const QUORUM = 'if=none,id=colo-disk0,driver=quorum,read-pattern=fifo,vote-threshold=1';

/** A secondary's machine per COLO-FT.txt (`parent0`, replication over active/hidden images, quorum `colo-disk0`), waiting for the migration at `incoming`. */
function secondaryMachine(file: (name: string) => string, incoming: string): string[] {
  return [
    '-incoming', incoming,
    '-netdev', 'user,id=hn0',
    '-drive', `if=none,id=parent0,file.filename=${file('parent.qcow2')},driver=qcow2`,
    '-drive', `if=none,id=childs0,driver=replication,mode=secondary,file.driver=qcow2,top-id=colo-disk0,file.file.filename=${file('active.qcow2')},file.backing.driver=qcow2,file.backing.file.filename=${file('hidden.qcow2')},file.backing.backing=parent0`,
    '-drive', `${QUORUM},children.0=childs0`,
  ];
}

/**
 * A fresh secondary-shaped QEMU (for `remus colo reprotect`) in a folder of
 * its own, waiting for the migration on `<dir>/migration.sock`; `dir` holds
 * the new pair's sockets too.
 */
export async function freshSecondary(): Promise<{ sec: Qemu; dir: string; incoming: string }> {
  const dir = tempDir(`cli-colo-fresh-${process.pid}`).dir;
  dirs.push(dir);
  const file = (name: string): string => join(dir, name);
  for (const img of ['parent', 'active', 'hidden']) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file(`${img}.qcow2`), '16M']);
  const incoming = `unix:${file('migration.sock')}`;
  return { sec: await qemu(dir, 'sec', secondaryMachine(file, incoming)), dir, incoming };
}

/**
 * Starts a primary-shaped QEMU (netdev `hn0`, quorum `colo-disk0` over a
 * qcow2) and a secondary-shaped one (per COLO-FT.txt: `parent0`, replication
 * over active/hidden images, quorum `colo-disk0`, waiting for the migration)
 * in one temp folder, and returns the pair file's content for them (devices
 * `nic0` and `disk0`). Every socket (proxy, NBD, migration) is a unix socket
 * in that folder: no TCP port to pick or collide on.
 */
export async function qemuPair(extra: Record<string, unknown> = {}): Promise<{ pri: Qemu; sec: Qemu; pair: Record<string, unknown> }> {
  const dir = tempDir(`cli-colo-${process.pid}`).dir;
  dirs.push(dir);
  const file = (name: string): string => join(dir, name);
  for (const img of ['primary', 'parent', 'active', 'hidden']) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file(`${img}.qcow2`), '16M']);
  const sock = (name: string) => ({ path: file(`${name}.sock`) });
  const incoming = `unix:${file('migration.sock')}`;
  const quorum = QUORUM;
  const [sec, pri] = await Promise.all([
    qemu(dir, 'sec', secondaryMachine(file, incoming)),
    qemu(dir, 'pri', ['-netdev', 'user,id=hn0', '-drive', `${quorum},children.0.file.filename=${file('primary.qcow2')},children.0.driver=qcow2`]),
  ]);
  const proxy = { netdev: 'hn0', mirror: sock('mirror'), compare: sock('compare') };
  const side = (q: Qemu, devices: unknown[]) => ({ qmp: q.qmp[0], qmpEvents: q.qmp[1], pid: q.pid, devices });
  const pair = {
    primary: side(pri, [
      { id: 'nic0', kind: 'nic', params: { ...proxy, primaryIn: sock('pri-in'), compareOut: sock('compare-out') } },
      { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: sock('nbd'), export: 'parent0' } },
    ]),
    secondary: side(sec, [
      { id: 'nic0', kind: 'nic', params: proxy },
      { id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: sock('nbd'), export: 'parent0', quorum: 'colo-disk0' } },
    ]),
    migrationUri: incoming,
    checkpointDelayMs: 600_000,
    ...extra,
  };
  return { pri, sec, pair };
}
