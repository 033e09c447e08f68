// A `remus colo start` that dies half-way (SIGKILL while it waits for the
// secondary's proxy, both sides set up) leaves its journal; `remus cleanup`
// then reaps what it added to both real QEMUs (everything tagged with its
// operation) and deletes the journal. A start that fails on its own removes
// what it set up and exits 1. QEMUs (-S, no guest) are killed by pid.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { connectQmp } from '@remus/qmp';
import { afterEach, describe, expect, it } from 'vitest';
import { qemuPair, stopQemus, type Qemu } from './colo-env.js';
import { tempDir } from '@remus/test-lab';
import { events, journals, killRunning, remus, start, writeConfig, type Running } from './helpers.js';

let dir: string | undefined;
let running: Running | undefined;
afterEach(async () => {
  await killRunning(running);
  running = undefined;
  await stopQemus();
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** What COLO set-up added to a QEMU: `colo.`-tagged objects, chardevs and exports, `colo-...` block nodes. */
async function coloThings(q: Qemu): Promise<string[]> {
  const c = await connectQmp(q.qmp[1], { timeoutMs: 10_000 });
  try {
    const objects = await c.execute<{ name: string }[]>('qom-list', { path: '/objects' });
    const chardevs = await c.execute<{ label: string }[]>('query-chardev');
    const exports = await c.execute<{ id: string }[]>('query-block-exports');
    const nodes = await c.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true });
    return [...objects.map((o) => o.name), ...chardevs.map((x) => x.label), ...exports.map((e) => e.id), ...nodes.map((n) => n['node-name'])].filter((n) => /^colo[.-]/.test(n) && n !== 'colo-disk0');
  } finally {
    await c.close();
  }
}

/** A pair whose secondary proxy points where nothing listens: start waits (10 s) for it after both sides are set up. */
async function stuckPair(): Promise<{ pri: Qemu; sec: Qemu; file: string; state: string }> {
  dir = tempDir('colo-cleanup').dir;
  const { pri, sec, pair } = await qemuPair();
  const s = pair.secondary as { devices: { kind: string; params: Record<string, unknown> }[] };
  s.devices[0]!.params.mirror = { path: join(dir, 'nobody-listens.sock') };
  return { pri, sec, file: writeConfig(dir, 'web.json', pair), state: join(dir, 'state') };
}

describe('a colo start that does not finish (real QEMUs)', () => {
  it('SIGKILL half-way leaves the journal; remus cleanup reaps both QEMUs and deletes it', async () => {
    const { pri, sec, file, state } = await stuckPair();
    running = start(['colo', 'start', file, '--json', '--state-dir', state]);
    const run = running;
    const first = await run.waitFor((e) => e.type === 'start');
    await run.waitFor((e) => e.type === 'step' && e.side === 'primary' && e.step === 'set up devices (@remus/colo)', 30_000);
    run.child.kill('SIGKILL');
    await run.done;
    expect(journals(state)).toEqual([`${String(first.operation)}.json`]);
    expect(await coloThings(pri)).not.toEqual([]);
    expect(await coloThings(sec)).not.toEqual([]);

    const c = await remus(['cleanup', '--json', '--state-dir', state]);
    expect(c.code, c.stdout + c.stderr).toBe(0);
    const [ev] = events(c.stdout) as [{ results: { status: string; removed: string[] }[] }];
    expect(ev.results).toHaveLength(1);
    expect(ev.results[0]).toMatchObject({ status: 'cleaned' });
    expect(ev.results[0]!.removed.some((l) => /colo-primary-nic: removed object colo\./.test(l))).toBe(true);
    expect(ev.results[0]!.removed.some((l) => /colo-secondary-disk: removed NBD export colo\./.test(l))).toBe(true);
    expect(await coloThings(pri)).toEqual([]);
    expect(await coloThings(sec)).toEqual([]);
    expect(journals(state)).toEqual([]);
  });

  it('a start that fails on its own removes what it set up and exits 1', async () => {
    const { pri, sec, file, state } = await stuckPair();
    const r = await remus(['colo', 'start', file, '--state-dir', state]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^failed: \[OP_FAILED\] colo secondary: proxy connected failed: .*no result within 10000 ms/m);
    expect(await coloThings(pri)).toEqual([]);
    expect(await coloThings(sec)).toEqual([]);
    expect(journals(state)).toEqual([]);
  });
});
