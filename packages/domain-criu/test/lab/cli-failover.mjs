// Kernel-lab body (root, in the lab's Debian 6.1 guest, where Debian's CRIU
// 3.17 works): Remus with CRIU through the product, the `remus` command.
//
// Hosts are network namespaces: P (primary), B (backup), C (client), joined
// by a bridge in S. A python counter service (state only in memory) runs in
// P on 10.77.0.100; the client in C keeps ONE TCP connection and sends a
// request every 20 ms. On B: `remus backup --domain criu` (CRIU checked at
// its start). On the primary: `remus run` with a criu domain (core's
// checkpoint loop) and nic-netbuf holding P's output (the ingress of P's
// bridge port `sp` into an IFB with the real sch_plug) until each checkpoint
// is acknowledged. Checkpoint images go over a Unix socket (never through the
// buffered NIC). Then the whole primary side dies: P's link cut, the service
// and `remus run` SIGKILLed; `remus failover` on B; the same connection goes
// on. Checks: counter 1, 2, 3, ... with no gap and no repeat; no reply reached
// the client before the checkpoint of its epoch was acknowledged; a second
// `remus failover` is refused. Prints FIGURES lines and PASS.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { killAndClean, labLog, loadNetbufModules, runBody, setupFreezer, sh, shOk } from './guest-setup.mjs';

const here = new URL('.', import.meta.url).pathname;
const REMUS = new URL('../../../cli/dist/bin.js', import.meta.url).pathname;
const T = '/tmp/rmcriu-cli';
/** REMUS_CRIU_LAB_AUTO=1: the backup runs with --on-primary-lost failover and restores by itself (no `remus failover`). */
const AUTO = process.env.REMUS_CRIU_LAB_AUTO === '1';
const NS = { p: 'rmcriu-cp', b: 'rmcriu-cb', c: 'rmcriu-cc', s: 'rmcriu-cs' };
const SVC = '10.77.0.100';
const PORT = 7101;
const { log, check } = labLog('criu-cli-lab');
const children = [];
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
  for (const [ns, dev, peer, addr] of [
    [NS.c, 'c0', 'sc', '10.77.0.1/24'],
    [NS.p, 'p0', 'sp', '10.77.0.2/24'],
    [NS.b, 'b0', 'sb', '10.77.0.3/24'],
  ]) {
    sh('ip', 'link', 'add', dev, 'netns', ns, 'type', 'veth', 'peer', 'name', peer, 'netns', NS.s);
    sh('ip', '-n', NS.s, 'link', 'set', peer, 'master', 'br0', 'up');
    sh('ip', '-n', ns, 'addr', 'add', addr, 'dev', dev);
    sh('ip', '-n', ns, 'link', 'set', dev, 'up');
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  }
  sh('ip', '-n', NS.p, 'addr', 'add', `${SVC}/24`, 'dev', 'p0');
  loadNetbufModules();
}

/** Starts argv (in netns `ns` when given, network only) with a line reader on stdout. */
function startIn(ns, argv, o = {}) {
  const full = ns ? ['nsenter', `--net=/run/netns/${ns}`, '--', ...argv] : argv;
  const child = spawn(full[0], full.slice(1), { stdio: o.stdio ?? ['pipe', 'pipe', 'inherit'], detached: o.detached ?? false, env: { ...process.env, ...o.env } });
  children.push(child);
  const lines = [];
  const waiters = [];
  let exited;
  const exit = new Promise((r) => child.on('exit', (code, signal) => r((exited = { code, signal }))));
  if (child.stdout) {
    createInterface({ input: child.stdout }).on('line', (l) => {
      lines.push(l);
      if (o.echo) console.log(`  [${o.echo}] ${l.slice(0, 400)}`);
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
      const t = setTimeout(() => reject(new Error(`no line ${re} within ${ms} ms${exited ? ` (exited ${JSON.stringify(exited)})` : ''}; last: ${lines.slice(-5).join(' | ')}`)), ms);
      waiters.push({ test: (l) => re.test(l), resolve: (l) => { clearTimeout(t); resolve(l); } });
    });
  };
  const events = () => lines.filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l); } catch { return {}; } });
  return { child, lines, waitLine, events, exit };
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};
const replies = (client) => client.lines.filter((l) => l.startsWith('REPLY')).map((l) => l.split(' '));

async function main() {
  rmSync(T, { recursive: true, force: true });
  mkdirSync(T, { recursive: true });
  setupFreezer();
  setupNet();
  log('namespaces, bridge and freezer ready');

  // Backup host: the product's backup (CRIU checked at its start).
  const backup = startIn(NS.b, [process.execPath, REMUS, 'backup', '--domain', 'criu', '--dir', `${T}/backup`, '--listen', `${T}/backup.sock`, '--silence-ms', '5000', '--service-address', `${SVC}/24`, '--dev', 'b0', ...(AUTO ? ['--on-primary-lost', 'failover'] : []), '--json'], { echo: 'backup' });
  await backup.waitLine(/"type":"listening"/, 180_000);
  check(true, 'remus backup --domain criu listens (criu checks passed on this kernel)');

  const svc = startIn(NS.p, ['python3', `${here}counter_service.py`, SVC, String(PORT)], { stdio: 'ignore', detached: true });
  const svcPid = svc.child.pid;
  await new Promise((r) => setTimeout(r, 1500));
  const client = startIn(NS.c, ['python3', '-u', `${here}client.py`, SVC, String(PORT)]);
  await client.waitLine(/^CONNECTED/, 60_000);
  await client.waitLine(/^REPLY/, 30_000);
  check(true, 'client connected over one TCP connection and gets replies');

  // Primary: `remus run` with the criu domain and nic-netbuf on P's bridge port.
  const config = {
    intervalMs: 200,
    domainTimeoutMs: 180_000,
    domain: { type: 'criu', pid: svcPid, workDir: `${T}/primary`, backup: { path: `${T}/backup.sock` }, netns: NS.p },
    plugins: [{ package: '@remus/nic-netbuf', subkinds: { 'nic-netbuf': {} } }],
    devices: [{ id: 'svc0', kind: 'nic', params: { ifname: 'sp', netns: NS.s } }],
  };
  writeFileSync(`${T}/remus.json`, JSON.stringify(config, null, 2));
  const run = startIn(undefined, [process.execPath, REMUS, 'run', '--config', `${T}/remus.json`, '--state-dir', `${T}/state`, '--json'], { echo: 'run' });
  const domainEvent = JSON.parse(await run.waitLine(/"type":"domain"/, 180_000));
  const cgroup = domainEvent.cgroup;
  check(typeof cgroup === 'string' && cgroup.includes('remus-'), `remus run put the service in its freezer cgroup ${cgroup}`);
  const setup = JSON.parse(await run.waitLine(/"type":"setup"/, 120_000));
  check(setup.assignments?.[0]?.subkind === 'nic-netbuf', 'nic-netbuf holds the primary\'s output (sch_plug on an IFB)');
  const WANT = 5;
  const end = Date.now() + 300_000;
  while (run.events().filter((e) => e.type === 'checkpoint').length < WANT && Date.now() < end && run.child.exitCode === null) await new Promise((r) => setTimeout(r, 200));
  const cps = run.events().filter((e) => e.type === 'checkpoint');
  check(cps.length >= WANT, `remus run committed ${cps.length} checkpoints through core's loop`);

  // Kill the whole primary side: its link, the service, remus run.
  const killedAt = Date.now();
  const seenBefore = replies(client).length;
  sh('ip', '-n', NS.p, 'link', 'set', 'p0', 'down');
  process.kill(svcPid, 'SIGKILL');
  process.kill(run.child.pid, 'SIGKILL');
  // A frozen task dies only once thawed (the host's death takes everything; here the guest kernel lives on).
  shOk('sh', '-c', `echo THAWED > ${cgroup}/freezer.state`);
  for (let i = 0; i < 100 && existsSync(`/proc/${svcPid}`); i++) await new Promise((r) => setTimeout(r, 100));
  check(!existsSync(`/proc/${svcPid}`), `primary killed (link down, service and remus run SIGKILLed); client had ${seenBefore} replies`);
  const committed = run.events().filter((e) => e.type === 'checkpoint');
  const dumps = run.events().filter((e) => e.type === 'dump');
  const lastCommitted = committed.at(-1).checkpoint;

  const lost = JSON.parse(await backup.waitLine(/"type":"primary-lost"/, 60_000));
  let done;
  if (AUTO) {
    // --on-primary-lost failover: the backup restores by itself, no command.
    check(/failing over/.test(lost.message ?? JSON.stringify(lost)), `remus backup saw the primary lost and fails over by itself: ${JSON.stringify(lost).slice(0, 200)}`);
    done = JSON.parse(await backup.waitLine(/"type":"failover"/, 180_000));
    check(done.result?.pid > 0, `remus backup restored the service by itself: ${JSON.stringify(done.result)}`);
  } else {
    check(true, 'remus backup saw the primary lost and waits for remus failover');
    const fo = startIn(undefined, [process.execPath, REMUS, 'failover', '--dir', `${T}/backup`, '--json'], { echo: 'failover' });
    const foExit = await fo.exit;
    done = fo.events().find((e) => e.type === 'failover');
    check(foExit.code === 0 && done, `remus failover restored the service: ${JSON.stringify(done?.result ?? fo.lines.slice(-3))}`);
  }
  pids.push(done.result.pid);
  check(done.result.checkpoint >= lastCommitted, `restored checkpoint ${done.result.checkpoint} (the primary's last committed: ${lastCommitted})`);
  const backupExit = await Promise.race([backup.exit, new Promise((r) => setTimeout(() => r(undefined), 30_000))]);
  check(backupExit?.code === 0, 'remus backup exited 0 after the failover (the restored service runs on)');

  const firstAfter = await client.waitLine(/^REPLY/, 180_000, client.lines.length);
  const firstAt = Number(firstAfter.split(' ')[1]);
  const target = replies(client).length + 20;
  const until = Date.now() + 60_000;
  while (replies(client).length < target && Date.now() < until) await new Promise((r) => setTimeout(r, 100));

  // Second failover: refused (no backup runs any more: remus failover tries itself, and the lock says STATE).
  const second = startIn(undefined, [process.execPath, REMUS, 'failover', '--dir', `${T}/backup`, '--json']);
  const secondExit = await second.exit;
  check(secondExit.code === 1 && second.lines.some((l) => l.includes('"code":"STATE"')), `a second remus failover is refused with STATE: ${second.lines.at(-1)?.slice(0, 300)}`);

  client.child.stdin.write('stop\n');
  await client.waitLine(/^CLIENT_DONE/, 30_000);
  const rs = replies(client);
  check(!client.lines.some((l) => l === 'EOF' || l.startsWith('ERROR')), 'the connection never broke (no EOF, no reset)');
  let bad = 0;
  rs.forEach((r, i) => {
    if (r[2] !== String(i + 1) || r[3] !== `r${i + 1}`) bad++;
  });
  check(rs.length >= seenBefore + 20, `client saw ${rs.length} replies (${seenBefore} before the kill, ${rs.length - seenBefore} after) on the same connection`);
  check(bad === 0, `counter sequence 1..${rs.length} without gap or repeat, each reply answering its own request`);

  // Output commit: a reply the primary sent at t belongs to the first checkpoint frozen after t (the service
  // cannot send while frozen); it must reach the client only after that checkpoint was acknowledged. A reply
  // of an epoch never committed must never arrive (the restored service sends those again, later).
  const frozen = committed.map((c) => ({ n: c.checkpoint, frozenAt: c.suspendedAt + c.steps.suspend, ackedAt: c.ackedAt }));
  const firstSuspend = committed[0].suspendedAt;
  let judged = 0;
  let early = 0;
  const earlyLines = [];
  for (const r of rs) {
    const arrived = Number(r[1]);
    const sentAt = Number(r[4]);
    if (!(sentAt >= firstSuspend) || sentAt >= killedAt) continue; // before protection started, or sent by the restored service
    judged++;
    const epoch = frozen.find((f) => f.frozenAt > sentAt);
    // Clocks: python's time.time() and node's wall clock in one guest kernel; 5 ms for rounding.
    // Epochs after the primary's last committed checkpoint up to the restored one were acknowledged by the backup
    // (the primary died before its commit): their replies come from the restored socket, after the failover.
    const restoredLater = !epoch && done.result.checkpoint > lastCommitted && arrived >= killedAt;
    if (restoredLater) continue;
    if (!epoch || arrived + 5 < epoch.ackedAt) {
      early++;
      if (earlyLines.length < 5) earlyLines.push(`reply ${r[2]} sent ${sentAt.toFixed(0)} arrived ${arrived} ${epoch ? `checkpoint ${epoch.n} acked ${epoch.ackedAt.toFixed(0)}` : 'in no committed epoch'}`);
    }
  }
  check(judged > 0 && early === 0, `output commit: ${judged} replies of the primary's protected epochs, none reached the client before its checkpoint was acknowledged${earlyLines.length ? `: ${earlyLines.join('; ')}` : ''}`);

  // Figures of this run.
  const full = dumps.filter((d) => d.parent === null);
  const inc = dumps.filter((d) => d.parent !== null);
  const pauses = committed.map((c) => c.pauseMs);
  console.log(`FIGURES cli checkpoints=${committed.length} dumps=${dumps.length} full=${full.length} incremental=${inc.length}`);
  console.log(`FIGURES cli pause_ms median=${median(pauses).toFixed(0)} min=${Math.min(...pauses).toFixed(0)} max=${Math.max(...pauses).toFixed(0)}`);
  console.log(`FIGURES cli dump_ms full_median=${median(full.map((d) => d.dumpMs)).toFixed(0)} incremental_median=${median(inc.map((d) => d.dumpMs)).toFixed(0)}`);
  console.log(`FIGURES cli bytes full_median=${median(full.map((d) => d.bytes))} incremental_median=${median(inc.map((d) => d.bytes))} ratio=${(median(inc.map((d) => d.bytes)) / median(full.map((d) => d.bytes))).toFixed(4)}`);
  console.log(`FIGURES cli${AUTO ? ' auto' : ''} failover_ms kill_to_first_reply=${firstAt - killedAt} restore=${done.result.restoreMs.toFixed(0)} failover_total=${done.result.totalMs.toFixed(0)} arp=${JSON.stringify(done.result.arp)}`);
  console.log(`FIGURES cli${AUTO ? ' auto' : ''} replies total=${rs.length} before_kill=${seenBefore} after_failover=${rs.length - seenBefore} judged_for_output_commit=${judged}`);
  check(inc.length > 0 && median(inc.map((d) => d.bytes)) < median(full.map((d) => d.bytes)) / 4, 'incremental dumps send far fewer bytes than full ones');
  console.log('PASS');
}

await runBody(main, () => killAndClean({ children, pids, cleanups }));
