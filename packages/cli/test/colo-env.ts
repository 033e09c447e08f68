// Real QEMUs for the `remus colo` tests (no guest, -S), each with two QMP
// sockets. `stopQemus()` kills every one by pid and removes their folder.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { coloPrimaryMachine, coloSecondaryMachine, startQemu, tempDir, type TestQemu } from '@remus/test-lab';

/** A QEMU of test-lab: qmp [0] commands, [1] events and probes. */
export type Qemu = TestQemu;

const started: TestQemu[] = [];
const dirs: string[] = [];

/** Kills every QEMU started here (by pid) and removes the pair folders. */
export async function stopQemus(): Promise<void> {
  for (const q of started.splice(0)) await q.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** One QEMU of the pair, tracked for {@link stopQemus}. */
async function qemu(dir: string, name: 'pri' | 'sec', machine: readonly string[]): Promise<Qemu> {
  const q = await startQemu({ dir, name, machine });
  started.push(q);
  return q;
}

/**
 * A fresh secondary-shaped QEMU (for `remus colo reprotect`) in a folder of
 * its own, waiting for the migration on `<dir>/migration.sock`; `dir` holds
 * the new pair's sockets too.
 */
export async function freshSecondary(): Promise<{ sec: Qemu; dir: string; incoming: string }> {
  const dir = tempDir(`cli-colo-fresh-${process.pid}`).dir;
  dirs.push(dir);
  const incoming = `unix:${join(dir, 'migration.sock')}`;
  return { sec: await qemu(dir, 'sec', coloSecondaryMachine(dir, { incoming })), dir, incoming };
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
  const sock = (name: string) => ({ path: join(dir, `${name}.sock`) });
  const incoming = `unix:${join(dir, 'migration.sock')}`;
  const [sec, pri] = await Promise.all([qemu(dir, 'sec', coloSecondaryMachine(dir, { incoming })), qemu(dir, 'pri', coloPrimaryMachine(dir))]);
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
