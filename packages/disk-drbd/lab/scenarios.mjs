// Kernel-lab scenarios for @remus/disk-drbd, run as root in the guest:
// `node scenarios.mjs up match loop ... down`. Each prints one line
// `RESULT NAME {json}` with what the host-side test asserts. Every scenario
// leaves the pair Connected, r0 Primary, UpToDate/UpToDate, as it found it.
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, ftruncateSync, openSync, readdirSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { createCheckpointDevices } from '@remus/core';
import { diskDrbd } from '../dist/index.js';
import { DIR, DRBDSETUP, down, drbdsetup, minorLine, pair, run, SIDES, snapshot, up, waitFor } from './pair.mjs';

const t0 = performance.now();
/** Progress on stderr, so a hung scenario shows where it stopped. */
const trace = (what) => console.error(`[${(performance.now() - t0).toFixed(0)} ms] ${what}`);
const ctx = { signal: new AbortController().signal, checkpoint: 0, epoch: 0, operation: 'disk-drbd-lab' };
const disk = (params, id = 'xvda') => ({ id, kind: 'disk', params });

/** Runs match through init/cleanup; returns the verdict or the error as plain data. */
async function match(ops, device) {
  const shared = await ops.init(ctx);
  try {
    return { verdict: await ops.match({ device, shared, data: undefined }, ctx) };
  } catch (e) {
    return { error: { code: e.code, message: e.message } };
  } finally {
    await ops.cleanup(shared, ctx);
  }
}

function errorOf(e) {
  return { code: e.code, message: e.message, failures: (e.failures ?? []).map((f) => ({ code: f.code, device: f.device, message: f.message })) };
}

/** Writers: `n` loops of O_DIRECT dd into disjoint regions of /dev/drbd0, one process group ("the domain"). */
function startWriters(n = 3) {
  const seed = `${DIR}/seed.bin`;
  writeFileSync(seed, Buffer.from(Array.from({ length: 1024 * 1024 }, () => Math.floor(Math.random() * 256))));
  const loops = Array.from(
    { length: n },
    (_, k) =>
      `(while :; do dd if=${seed} of=/dev/drbd0 bs=4k count=64 skip=$((RANDOM % 192)) seek=$((${k * 1024} + RANDOM % 960)) oflag=direct conv=notrunc status=none || exit 1; done) &`,
  ).join('\n');
  const child = spawn('bash', ['-c', `${loops}\nwait`], { detached: true, stdio: 'ignore' });
  return child.pid;
}

function groupMembers(pgid) {
  const out = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid) out.push({ pid: Number(pid), state: fields[0] });
    } catch {
      // gone
    }
  }
  return out;
}

/** "Suspend the domain": stop the writers' group (returns at once; writes may still be in flight). */
const suspend = (pgid) => process.kill(-pgid, 'SIGSTOP');
const resume = (pgid) => process.kill(-pgid, 'SIGCONT');
async function waitStopped(pgid) {
  for (let i = 0; i < 2000; i++) {
    if (groupMembers(pgid).every((m) => m.state === 'T' || m.state === 'Z')) return;
    await sleep(5);
  }
  throw new Error('writers did not stop');
}

/** The data area (not the meta-data at the end) of each side's backing file. */
function dataOf(side, size) {
  const fd = openSync(side.file, 'r');
  try {
    const buf = Buffer.alloc(size);
    for (let off = 0; off < size; ) {
      const n = readSync(fd, buf, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

function firstDifference(a, b) {
  for (let i = 0; i < a.length; i += 4096) {
    if (!a.subarray(i, i + 4096).equals(b.subarray(i, i + 4096))) return i;
  }
  return -1;
}

const scenarios = {
  /** Makes the DRBD pair (lab/pair.mjs), unless this guest already has it. */
  async up() {
    return up();
  },

  /** Removes the pair. */
  async down() {
    down();
    return {};
  },

  /** A DRBD disk given by path, by resource, or both matches; one given by the backup's Secondary minor fails with the fix. */
  async match() {
    const ops = diskDrbd();
    return {
      byPath: await match(ops, disk({ path: '/dev/drbd0' })),
      byResource: await match(ops, disk({ resource: 'r0' })),
      byBoth: await match(ops, disk({ path: '/dev/drbd0', resource: 'r0' })),
      secondary: await match(ops, disk({ path: '/dev/drbd1' })),
      unknown: await match(ops, disk({ resource: 'nosuch' })),
      mismatch: await match(ops, disk({ path: '/dev/drbd0', resource: 'r1' })),
    };
  },

  /** A loop device that is not DRBD is "not mine", in a kernel that has DRBD. */
  async loop() {
    const file = `${DIR}/plain.img`;
    const fd = openSync(file, 'w');
    ftruncateSync(fd, 4 * 1024 * 1024);
    closeSync(fd);
    const loop = run('losetup', ['--find', '--show', file]).stdout.trim();
    try {
      return { loop, ...(await match(diskDrbd(), disk({ path: loop }))) };
    } finally {
      run('losetup', ['-d', loop]);
    }
  },

  /** Setup, checkpoints while data is written, the peer's data checked at each checkpoint, teardown leaves the resource as found. */
  async checkpoints() {
    const { size } = pair();
    const before = snapshot();
    const n = Number(process.env.CHECKPOINTS ?? 8);
    const layer = createCheckpointDevices({ ops: [diskDrbd({ barrierTimeoutMs: 20_000 })], devices: [disk({ path: '/dev/drbd0' })] });
    await layer.setup();
    trace('set up');
    const dw = () => Number(/dw:(\d+)/.exec(readFileSync('/proc/drbd', 'utf8'))?.[1] ?? 0);
    const written = dw();
    const pgid = startWriters();
    // dd comes over 9p and starts slowly in the guest: checkpoint only once data flows.
    for (let i = 0; i < 1200 && dw() === written; i++) await sleep(50);
    trace(`writers started, dw ${written} -> ${dw()}`);
    const checkpoints = [];
    try {
      for (let i = 1; i <= n; i++) {
        await sleep(300);
        suspend(pgid);
        const started = performance.now();
        await layer.postsuspend();
        await layer.preresume();
        const barrierMs = performance.now() - started;
        // The domain is paused: nothing may change on either side until it resumes.
        await waitStopped(pgid);
        const primary = dataOf(SIDES[0], size);
        const backup = dataOf(SIDES[1], size);
        const stats = layer.stats()[0]?.stats ?? {};
        checkpoints.push({
          checkpoint: i,
          barrierMs,
          nonZeroBlocks: countNonZero(primary),
          firstDifference: firstDifference(primary, backup),
          line: minorLine(0),
          pendingAtSuspend: stats.pendingAtSuspend,
        });
        await layer.commit();
        trace(`checkpoint ${i}: barrier ${barrierMs.toFixed(1)} ms, pending at suspend ${stats.pendingAtSuspend}`);
        resume(pgid);
      }
    } finally {
      process.kill(-pgid, 'SIGKILL');
      resume(pgid);
    }
    const deviceStats = layer.stats();
    await layer.teardown();
    await waitFor(0, /ap:0/, 10_000).catch(() => undefined);
    return { checkpoints, deviceStats, before, after: snapshot() };
  },

  /** Disconnecting the peer makes the next checkpoint fail, with the error users see. Leaves the pair disconnected: run it last. */
  async disconnect() {
    const before = snapshot();
    const layer = createCheckpointDevices({ ops: [diskDrbd()], devices: [disk({ resource: 'r0' })] });
    await layer.setup();
    trace('set up');
    await layer.postsuspend();
    await layer.preresume();
    await layer.commit();
    trace('checkpoint 1 passed');
    // The backup leaves: DRBD 8.4 names a connection by its two endpoints.
    drbdsetup('disconnect', SIDES[1].local, SIDES[1].peer);
    trace('disconnected');
    const line = await waitFor(0, /cs:(WFConnection|StandAlone)/);
    const backupLine = minorLine(1);
    trace(`${line} | ${backupLine}`);
    let error;
    try {
      await layer.postsuspend();
      await layer.preresume();
    } catch (e) {
      error = errorOf(e);
    }
    const beforeTeardown = snapshot();
    await layer.teardown();
    const afterTeardown = snapshot();
    trace('torn down');
    // The pair stays apart: `down` follows (lab.test.ts runs this scenario last).
    return { line, backupLine, error, before, beforeTeardown, afterTeardown };
  },

  /** The operator's probe (Xen's exit codes), here a real script asking drbdsetup-84. */
  async probe() {
    const probe = `${DIR}/block-drbd-probe`;
    writeFileSync(
      probe,
      `#!/bin/bash
dev=$1
[[ $dev =~ ^/dev/drbd([0-9]+)$ ]] || exit 1
m=\${BASH_REMATCH[1]}
role=$(${DRBDSETUP} role $m 2>/dev/null) || exit 2
cs=$(${DRBDSETUP} cstate $m 2>/dev/null) || exit 2
[[ $cs == Connected && $role == Primary/Secondary ]] || { echo "cs:$cs ro:$role" >&2; exit 4; }
exit 0
`,
    );
    chmodSync(probe, 0o755);
    trace('probe written');
    const ops = diskDrbd({ probe });
    return {
      primary: await match(ops, disk({ path: '/dev/drbd0' })),
      secondary: await match(ops, disk({ path: '/dev/drbd1' })),
    };
  },
};

function countNonZero(buf) {
  let n = 0;
  for (let i = 0; i < buf.length; i += 4096) if (buf.subarray(i, i + 4096).some((b) => b !== 0)) n++;
  return n;
}

// Every scenario named on the command line runs in this one process (Node
// starts slowly in the guest: its modules come over 9p). A scenario that
// throws is reported as `{ crashed }` and the next one still runs.
const names = process.argv.slice(2);
for (const name of names) {
  if (!scenarios[name]) {
    console.error(`unknown scenario ${name}; have: ${Object.keys(scenarios).join(', ')}`);
    process.exit(2);
  }
}
for (const name of names) {
  trace(`scenario ${name}`);
  let result;
  try {
    result = await scenarios[name]();
  } catch (e) {
    result = { crashed: String(e?.stack ?? e), procDrbd: readFileSync('/proc/drbd', 'utf8') };
  }
  console.log(`RESULT ${name} ${JSON.stringify(result ?? null)}`);
}
