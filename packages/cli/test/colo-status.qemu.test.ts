// `remus colo status` with no driver running: it asks both real QEMUs
// (query-colo-status, query-migrate, query-status) over QMP. QEMUs are
// started with -S (no guest) in temp dirs and killed by pid afterwards.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { qemuPair, stopQemus } from './colo-env.js';
import { tempDir } from '@remus/test-lab';
import { events, remus, writeConfig } from './helpers.js';

let dir: string | undefined;
afterEach(async () => {
  await stopQemus();
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('remus colo status without a driver (real QEMUs)', () => {
  it('reports each side from its QEMU; a dead side is named and the exit code is 1', async () => {
    dir = tempDir('colo-status').dir;
    const { pri, sec, pair } = await qemuPair();
    const file = writeConfig(dir, 'web.json', pair);
    const state = join(dir, 'state');

    const j = await remus(['colo', 'status', file, '--json', '--state-dir', state]);
    expect(j.stderr).toBe('');
    expect(j.code).toBe(0);
    const [ev, ...more] = events(j.stdout);
    expect(more).toEqual([]);
    expect(ev).toMatchObject({
      type: 'status',
      driver: false,
      name: 'web',
      sides: {
        primary: { ok: true, pid: pri.pid, pidAlive: true, colo: { mode: 'none' }, run: { status: 'prelaunch', running: false } },
        secondary: { ok: true, colo: { mode: 'none' }, run: { status: 'inmigrate', running: false } },
      },
    });

    const h = await remus(['colo', 'status', file, '--state-dir', state]);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/^pair web: no driver runs \(no answer on .*colo-web\.sock\); asking the QEMUs$/m);
    expect(h.stdout).toMatch(/^primary \(unix:.*qmp1\.sock\): COLO mode none, migration none, VM prelaunch$/m);
    expect(h.stdout).toMatch(/^secondary \(unix:.*qmp1\.sock\): COLO mode none, migration none, VM inmigrate$/m);

    process.kill(sec.pid, 'SIGKILL');
    await new Promise((r) => sec.child.once('exit', r));
    const d = await remus(['colo', 'status', file, '--state-dir', state]);
    expect(d.code).toBe(1);
    expect(d.stdout).toMatch(/^primary .*: COLO mode none/m);
    expect(d.stdout).toMatch(new RegExp(`^secondary \\(unix:.*\\): no answer: .* \\(process ${sec.pid} is gone\\)$`, 'm'));
  });
});
