// Kernel-lab body (root, inside the lab's Debian 6.1 guest, where Debian's
// CRIU 3.17 works): Remus with CRIU, end to end, plus its faults.
//
// Hosts are network namespaces: P (primary), B (backup), C (client), joined
// by a bridge in S. A python counter service (state only in memory) runs in
// P on the service address 10.77.0.100; the client in C keeps ONE TCP
// connection and sends requests continuously. P's output is held per epoch
// in a sch_plug qdisc on its interface (released only after the backup
// acknowledged the checkpoint). Checkpoints: CriuDomain (freeze, criu dump
// --track-mem incremental, images to the backup process in B over a Unix
// socket). Faults: a dump killed mid-checkpoint, images damaged in transit
// (a proxy flips one byte), a restore that fails. Then the whole primary is
// killed (link cut, SIGKILL), B fails over, and the client's same
// connection goes on: counters 1, 2, 3, ... with no gap and no repeat.
// A second failover is refused. Prints FIGURES lines and PASS.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { killAndClean, labLog, runBody, setupFreezer, sh, shOk } from './guest-setup.mjs';
import { CriuErrors, Frame, FrameReader, criuDomain, encodeFrame } from '../../dist/index.js';

const here = new URL('.', import.meta.url).pathname;
const T = '/tmp/rmcriu';
const NS = { p: 'rmcriu-p', b: 'rmcriu-b', c: 'rmcriu-c', s: 'rmcriu-s' };
const SVC = '10.77.0.100';
const PORT = 7100;
const { log, check } = labLog('criu-lab');
const children = [];
/** Pids this body started outside `children` (the restored service). */
const pids = [];
const cleanups = [];

function setupNet() {
  for (const n of Object.values(NS)) {
    shOk('ip', 'netns', 'del', n);
    sh('ip', 'netns', 'add', n);
    cleanups.push(() => shOk('ip', 'netns', 'del', n));
  }
  sh('ip', '-n', NS.s, 'link', 'add', 'br0', 'type', 'bridge');
  sh('ip', '-n', NS.s, 'link', 'set', 'br0', 'up');
  const hosts = [
    [NS.c, 'c0', 'sc', '10.77.0.1/24'],
    [NS.p, 'p0', 'sp', '10.77.0.2/24'],
    [NS.b, 'b0', 'sb', '10.77.0.3/24'],
  ];
  for (const [ns, dev, peer, addr] of hosts) {
    sh('ip', 'link', 'add', dev, 'netns', ns, 'type', 'veth', 'peer', 'name', peer, 'netns', NS.s);
    sh('ip', '-n', NS.s, 'link', 'set', peer, 'master', 'br0', 'up');
    sh('ip', '-n', ns, 'addr', 'add', addr, 'dev', dev);
    sh('ip', '-n', ns, 'link', 'set', dev, 'up');
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  }
  sh('ip', '-n', NS.p, 'addr', 'add', `${SVC}/24`, 'dev', 'p0');
  // The primary's output buffer: a plug qdisc on its interface, open until the loop starts.
  sh('modprobe', 'sch_plug');
  sh('tc', '-n', NS.p, 'qdisc', 'add', 'dev', 'p0', 'root', 'handle', '1:', 'plug', 'limit', '100000000');
  sh('tc', '-n', NS.p, 'qdisc', 'change', 'dev', 'p0', 'root', 'handle', '1:', 'plug', 'release_indefinite');
}
const plug = (action) => sh('tc', '-n', NS.p, 'qdisc', 'change', 'dev', 'p0', 'root', 'handle', '1:', 'plug', action);

/** Starts argv in netns `ns` (nsenter: network only), with a line reader on stdout. */
function startIn(ns, argv, o = {}) {
  const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', ...argv], { stdio: o.stdio ?? ['pipe', 'pipe', 'inherit'], detached: o.detached ?? false, env: { ...process.env, ...o.env } });
  children.push(child);
  const lines = [];
  const waiters = [];
  if (child.stdout) {
    createInterface({ input: child.stdout }).on('line', (l) => {
      lines.push(l);
      if (o.echo) console.log(`  [${o.echo}] ${l}`);
      for (const w of [...waiters]) if (w.test(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    });
  }
  const waitLine = (re, ms = 60_000, from = 0) => {
    const found = lines.slice(from).find((l) => re.test(l));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no line ${re} within ${ms} ms; last: ${lines.slice(-5).join(' | ')}`)), ms);
      waiters.push({ test: (l) => re.test(l), resolve: (l) => { clearTimeout(t); resolve(l); } });
    });
  };
  return { child, lines, waitLine };
}

/** A Unix-socket proxy between the domain and the backup that can flip one byte of a FILE frame of a chosen checkpoint. */
async function startProxy(listenPath, targetPath) {
  const state = { damage: undefined };
  const server = createServer((down) => {
    const up = connect(targetPath);
    const reader = new FrameReader();
    down.on('data', (chunk) => {
      for (const f of reader.push(chunk)) {
        let payload = f.payload;
        if (f.type === Frame.FILE && state.damage === f.checkpoint && payload.length > 64) {
          payload = Buffer.from(payload);
          payload[payload.length - 1] ^= 0x5a;
          state.damage = undefined;
          log(`proxy: flipped one byte of checkpoint ${f.checkpoint}`);
        }
        up.write(encodeFrame(f.type, f.checkpoint, payload));
      }
    });
    up.pipe(down);
    up.on('error', () => down.destroy());
    down.on('error', () => up.destroy());
    up.on('close', () => down.destroy());
    down.on('close', () => up.destroy());
  });
  await new Promise((r) => server.listen(listenPath, r));
  cleanups.push(() => server.close());
  return state;
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};

async function main() {
  rmSync(T, { recursive: true, force: true });
  mkdirSync(T, { recursive: true });
  setupFreezer();
  setupNet();
  log('namespaces, bridge, plug qdisc and freezer ready');

  const backup = startIn(NS.b, [process.execPath, `${here}backup-agent.mjs`, `${T}/backup`, `${T}/backup.sock`], { echo: 'backup' });
  await backup.waitLine(/^READY/, 120_000);
  const proxy = await startProxy(`${T}/proxy.sock`, `${T}/backup.sock`);

  const svc = startIn(NS.p, ['python3', `${here}counter_service.py`, SVC, String(PORT)], { stdio: 'ignore', detached: true });
  const svcPid = svc.child.pid;
  await new Promise((r) => setTimeout(r, 1500));
  const client = startIn(NS.c, ['python3', '-u', `${here}client.py`, SVC, String(PORT)]);
  await client.waitLine(/^CONNECTED/, 60_000);
  await client.waitLine(/^REPLY/, 30_000);
  check(true, 'client connected over one TCP connection and gets replies');

  const dumps = [];
  const domain = criuDomain({
    pid: svcPid,
    workDir: `${T}/primary`,
    backup: { path: `${T}/proxy.sock` },
    netns: NS.p,
    criuPath: `${here}criu-faulty.sh`,
    operation: 'rmcriu-lab',
    onDump: (f) => dumps.push(f),
    onWarning: (w) => log(`warning: ${w}`),
  });
  process.env.FAIL_FLAG = `${T}/fail-dump`;
  await domain.start();
  cleanups.push(() => domain.stop().catch(() => undefined));
  check(domain.cgroupPath?.endsWith('remus-rmcriu-lab'), 'service tree moved into its freezer cgroup');

  // Output buffering from here: epoch 1 starts.
  plug('block');
  let held = 1; // epochs whose output is held
  const pauses = [];
  const point = async () => {
    backup.child.stdin.write('point\n');
    const from = backup.lines.length;
    const l = await backup.waitLine(/^POINT /, 30_000, from);
    return l.split(' ')[1];
  };
  /** One checkpoint as core's loop runs it; returns true when committed. */
  const checkpoint = async (n) => {
    const ctx = { checkpoint: n, epoch: 0, signal: AbortSignal.timeout(120_000) };
    const s0 = performance.now();
    await domain.suspend(ctx);
    plug('block');
    held++;
    let saveError;
    try {
      await domain.save(ctx);
    } catch (e) {
      saveError = e;
    }
    await domain.resume(ctx);
    pauses.push({ n, ms: performance.now() - s0, ok: !saveError });
    if (saveError) return saveError;
    try {
      await domain.waitAck(ctx);
    } catch (e) {
      return e;
    }
    // Commit: release every held epoch up to this checkpoint's boundary.
    for (; held > 1; held--) plug('release');
    return undefined;
  };

  let n = 0;
  for (let i = 0; i < 3; i++) {
    const e = await checkpoint(++n);
    check(e === undefined, `checkpoint ${n} committed`, e);
  }
  check((await point()) === String(n), `backup restore point is ${n}`);

  // Fault: dump killed mid-checkpoint.
  const beforeFail = n;
  execFileSync('touch', [`${T}/fail-dump`]);
  const e1 = await checkpoint(++n);
  check(e1?.code === CriuErrors.DUMP_FAILED, `a dump killed mid-checkpoint fails checkpoint ${n} with ${CriuErrors.DUMP_FAILED}`);
  check((await point()) === String(beforeFail), `restore point stays ${beforeFail} after the failed dump`);
  const e6 = await checkpoint(++n);
  check(e6 === undefined, `checkpoint ${n} (full again) committed after the failed one`, e6);
  check(dumps.at(-1).parent === null, 'the first dump after a failure is full');

  // Fault: images damaged in transit.
  const beforeDamage = n;
  proxy.damage = n + 1;
  const e2 = await checkpoint(++n);
  check(e2?.code === CriuErrors.TRANSFER_REFUSED && /CHECKSUM_MISMATCH/.test(e2.message), `damaged images of checkpoint ${n} refused by checksum (${e2?.code})`);
  check((await point()) === String(beforeDamage), `restore point stays ${beforeDamage} after the damaged transfer`);
  for (let i = 0; i < 3; i++) {
    const e = await checkpoint(++n);
    check(e === undefined, `checkpoint ${n} committed`, e);
  }
  const last = n;
  check((await point()) === String(last), `backup restore point is ${last}`);

  // Fault: a restore that fails (the primary still runs: its pid is taken, no service address here).
  backup.child.stdin.write('failover {}\n');
  const fr = await backup.waitLine(/^FAILOVER_(OK|ERR)/, 120_000);
  check(fr.startsWith(`FAILOVER_ERR ${CriuErrors.RESTORE_FAILED}`), `a failing restore is a clear ${CriuErrors.RESTORE_FAILED}: ${fr.slice(0, 300)}`);
  const pythons = () => sh('pgrep', '-f', 'counter_service.py').trim().split('\n').filter(Boolean);
  check(pythons().length === 1, 'nothing half-started: only the primary service runs');
  check(!existsSync(`${T}/backup/.failover`), 'the failed failover released its lock (it may be retried)');

  // Figures of the run.
  const full = dumps.filter((d) => d.parent === null);
  const inc = dumps.filter((d) => d.parent !== null);
  const okPauses = pauses.filter((p) => p.ok).map((p) => p.ms);
  console.log(`FIGURES checkpoints=${dumps.length} full=${full.length} incremental=${inc.length}`);
  console.log(`FIGURES pause_ms median=${median(okPauses).toFixed(0)} min=${Math.min(...okPauses).toFixed(0)} max=${Math.max(...okPauses).toFixed(0)}`);
  console.log(`FIGURES dump_ms full_median=${median(full.map((d) => d.dumpMs)).toFixed(0)} incremental_median=${median(inc.map((d) => d.dumpMs)).toFixed(0)}`);
  console.log(`FIGURES bytes full_median=${median(full.map((d) => d.bytes))} incremental_median=${median(inc.map((d) => d.bytes))} pages_full=${median(full.map((d) => d.pageBytes))} pages_incremental=${median(inc.map((d) => d.pageBytes))} ratio=${(median(inc.map((d) => d.bytes)) / median(full.map((d) => d.bytes))).toFixed(3)}`);
  check(inc.length > 0 && median(inc.map((d) => d.pageBytes)) < median(full.map((d) => d.pageBytes)) / 4, 'incremental dumps write far fewer page bytes than full ones');

  // Kill the whole primary: cut its link, SIGKILL the service, stop its loop.
  const seenBefore = client.lines.filter((l) => l.startsWith('REPLY')).length;
  const killedAt = Date.now();
  sh('ip', '-n', NS.p, 'link', 'set', 'p0', 'down');
  process.kill(svcPid, 'SIGKILL');
  await domain.stop();
  log(`primary killed; client had ${seenBefore} replies`);

  backup.child.stdin.write(`failover ${JSON.stringify({ serviceAddress: { address: `${SVC}/24`, dev: 'b0' } })}\n`);
  const ok = await backup.waitLine(/^FAILOVER_(OK|ERR)/, 120_000, backup.lines.length);
  check(ok.startsWith('FAILOVER_OK'), `failover restored the service: ${ok.slice(0, 300)}`);
  const result = JSON.parse(ok.slice('FAILOVER_OK '.length));
  pids.push(result.pid);
  check(result.checkpoint === last, `restored from the last complete checkpoint ${last}`);
  const firstAfter = await client.waitLine(/^REPLY/, 120_000, client.lines.filter(() => true).length);
  const firstAt = Number(firstAfter.split(' ')[1]);
  // Let it run on for a while on the same connection.
  const target = client.lines.filter((l) => l.startsWith('REPLY')).length + 20;
  const end = Date.now() + 60_000;
  while (client.lines.filter((l) => l.startsWith('REPLY')).length < target && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  console.log(`FIGURES failover_ms kill_to_first_reply=${firstAt - killedAt} restore=${result.restoreMs.toFixed(0)} failover_total=${result.totalMs.toFixed(0)} arp=${JSON.stringify(result.arp)}`);

  // Second failover: refused.
  backup.child.stdin.write(`failover ${JSON.stringify({ serviceAddress: { address: `${SVC}/24`, dev: 'b0' } })}\n`);
  const second = await backup.waitLine(/^FAILOVER_(OK|ERR)/, 60_000, backup.lines.length);
  check(second.startsWith('FAILOVER_ERR STATE'), `a second failover is refused with STATE`);

  client.child.stdin.write('stop\n');
  await client.waitLine(/^CLIENT_DONE/, 30_000);
  const replies = client.lines.filter((l) => l.startsWith('REPLY')).map((l) => l.split(' '));
  check(!client.lines.some((l) => l === 'EOF' || l.startsWith('ERROR')), 'the connection never broke (no EOF, no reset)');
  let bad = 0;
  replies.forEach((r, i) => {
    if (r[2] !== String(i + 1) || r[3] !== `r${i + 1}`) bad++;
  });
  check(replies.length >= seenBefore + 20, `client saw ${replies.length} replies (${seenBefore} before the kill, ${replies.length - seenBefore} after) on the same connection`);
  console.log(`FIGURES replies total=${replies.length} before_kill=${seenBefore} after_failover=${replies.length - seenBefore}`);
  check(bad === 0, `counter sequence 1..${replies.length} without gap or repeat, each reply answering its own request`);
  console.log('PASS');
}

await runBody(main, () => killAndClean({ children, pids, cleanups }));
