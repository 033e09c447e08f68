// `remus colo reprotect` on real QEMUs (no guest, -S): a pair started with
// `remus colo start` fails over to its secondary and is stopped; a fresh
// secondary QEMU is started and `remus colo reprotect` makes the survivor
// the primary of a new pair (disk mirrored, COLO); the driver process serves
// status and stop like `remus colo start`'s. QEMUs are killed by pid after.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '@remus/test-lab';
import { freshSecondary, qemuPair, stopQemus } from './colo-env.js';
import { killRunning, remus, start, writeConfig, type Running } from './helpers.js';

let dir: string | undefined;
const runs: Running[] = [];
afterEach(async () => {
  for (const r of runs.splice(0)) await killRunning(r);
  await stopQemus();
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('remus colo reprotect (real QEMUs)', () => {
  it('after a failover to the secondary, reprotects it onto a fresh secondary: the new pair replicates, status shows the bytes mirrored, stop ends it', async () => {
    dir = tempDir('colo-reprotect').dir;
    const state = join(dir, 'state');
    const { sec, pair } = await qemuPair();
    const first = start(['colo', 'start', writeConfig(dir, 'web.json', pair), '--json', '--state-dir', state]);
    runs.push(first);
    await first.waitFor((e) => e.type === 'replicating', 60_000);
    const f = await remus(['colo', 'failover', '--to', 'secondary', '--name', 'web', '--state-dir', state]);
    expect(f.code, f.stdout + f.stderr).toBe(0);
    const s = await remus(['colo', 'stop', '--name', 'web', '--state-dir', state]);
    expect(s.code, s.stdout + s.stderr).toBe(0);
    expect((await first.done).code).toBe(0);

    const fresh = await freshSecondary();
    const at = (name: string) => ({ path: join(fresh.dir, `${name}.sock`) });
    const proxy = { netdev: 'hn0', mirror: at('mirror'), compare: at('compare') };
    const survivor = pair.secondary as { qmp: string; qmpEvents: string; pid: number };
    const file2 = writeConfig(dir, 'web2.json', {
      primary: {
        qmp: survivor.qmp,
        qmpEvents: survivor.qmpEvents,
        pid: sec.pid,
        devices: [
          { id: 'nic0', kind: 'nic', params: { ...proxy, primaryIn: at('pri-in'), compareOut: at('compare-out') } },
          { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: at('nbd'), export: 'parent0' } },
        ],
      },
      secondary: {
        qmp: fresh.sec.qmp[0],
        qmpEvents: fresh.sec.qmp[1],
        pid: fresh.sec.pid,
        devices: [
          { id: 'nic0', kind: 'nic', params: proxy },
          { id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at('nbd'), export: 'parent0', quorum: 'colo-disk0' } },
        ],
      },
      migrationUri: fresh.incoming,
      checkpointDelayMs: 600_000,
    });
    const second = start(['colo', 'reprotect', file2, '--json', '--state-dir', state]);
    runs.push(second);
    const rep = await second.waitFor((e) => e.type === 'replicating', 60_000);
    expect(rep).toMatchObject({ status: { state: 'replicating', active: 'primary', resync: { bytes: 16 * 1024 * 1024 } } });
    expect(second.stdout()).toMatch(/"step":"blockdev-mirror \(sync full\)"/);

    const st = await remus(['colo', 'status', '--name', 'web2', '--state-dir', state]);
    expect(st.code, st.stdout + st.stderr).toBe(0);
    expect(st.stdout).toMatch(/^state: replicating, serving: primary$/m);
    expect(st.stdout).toMatch(/^reprotected: 16777216 disk bytes mirrored in .*, guest paused .*$/m);

    const end = await remus(['colo', 'stop', '--name', 'web2', '--state-dir', state]);
    expect(end.code, end.stdout + end.stderr).toBe(0);
    expect((await second.done).code).toBe(0);
  });
});
