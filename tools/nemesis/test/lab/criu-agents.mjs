// Kernel-lab body (root, in the lab's Debian 6.1 guest, where CRIU works):
// `remus agent` with `service.type: "criu"` across two hosts (namespaces ha
// and hb of the nemesis lab) arbitrated by a real three-member etcd. The
// service (criu_service.py) keeps its counter only in memory; it runs in a
// service namespace of the primary host, behind a veth whose host side
// (vs0) nic-netbuf holds until the backup acknowledged the checkpoint. Each
// checkpoint is a CRIU dump carried to the backup inside the agents'
// authenticated session. The primary host dies (agent and service
// SIGKILLed): hb promotes and restores the SAME process (same pid) from its
// last complete checkpoint, and the client's counter goes on above every
// reply it saw (the history checker: counters strictly increasing, epochs in
// order). Then ha comes back as backup, gets a full dump, and hb dies: ha
// restores it again. Exits 0 only if every check passed; leaves nothing.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HOSTS, NemesisLab, mono } from '../../dist/index.js';
import { cleanupOperationCgroup } from '../../../../packages/domain-process/dist/index.js';
import { killAndClean, labLog, loadNetbufModules, runBody, setupFreezer, sh, shOk } from '../../../../packages/domain-criu/test/lab/guest-setup.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const SERVICE = join(here, 'criu_service.py');
const NETBUF = join(here, '..', '..', '..', '..', 'packages', 'nic-netbuf');
const svcNs = (h) => `rmcsvc${process.pid}-${h}`;
const { log, check } = labLog('criu-agents-lab');
const cleanups = [];
let lab;
let sc;

/** pids in host h's service namespace (the service, and a criu the agent runs there); `service`: the python service only. */
const svcPids = (h, service = true) =>
  (shOk('ip', 'netns', 'pids', svcNs(h)) ?? '')
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((p) => !service || (shOk('cat', `/proc/${p}/comm`) ?? '').startsWith('python'));
/**
 * The host dies: every process in its service namespace is SIGKILLed. Its agent may have died with the
 * service's cgroup frozen (mid-checkpoint), and a frozen process does not die until thawed: on a real
 * machine the host is gone with it; here the cgroup its record names is thawed so the killed service
 * really ends (and its pid is free for the restore, as on another machine).
 */
async function killService(h) {
  const victims = svcPids(h, false);
  for (const p of victims) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {}
  }
  await reapRecorded(h);
  await waitFor(() => victims.every((p) => !existsSync(`/proc/${p}`) || (shOk('cat', `/proc/${p}/stat`) ?? '').includes(') Z ')), `the killed service of ${h} to end`, 20_000);
  // The host's kernel goes with it: the killed service's sockets (orphans still sending their FIN) are gone
  // when the host comes back. Its service namespace is made again when it restarts (hostBack).
  dropServiceNs(h);
}

/**
 * Reaps the cgroup host h's criu service phase recorded (`<workDir>/service.json`) with the product's own
 * reaper: every process in it killed (a frozen one thawed first, so it dies), the cgroup removed.
 */
async function reapRecorded(h) {
  const rec = join(sc.dir, 'state', h, 'criu', 'service.json');
  if (!existsSync(rec)) return;
  const { operation, cgroup } = JSON.parse(readFileSync(rec, 'utf8'));
  await cleanupOperationCgroup({ operation, path: cgroup, mode: 'reap' });
}

/** The dead host boots again: a fresh service namespace (its agent is started next). */
async function hostBack(h) {
  // The old namespace's veth would go with it, asynchronously (the kernel's netns cleanup): removed now.
  shOk('ip', '-n', lab.net.node(h).netns, 'link', 'del', 'vs0');
  await makeServiceNs(h);
}

/**
 * The history check for a service whose TCP connections survive: no counter
 * value is answered twice over all connections (a host that restored an older
 * state than a client saw would answer seen values again: acknowledged state
 * lost), and on each connection the counter strictly increases. (The global
 * receipt order of the nemesis checker does not hold here, by design: replies
 * the dead primary held are in the restored socket's send queue and reach the
 * client late, by TCP retransmission, once its connection's packets reach the
 * service again.)
 */
function checkAll(what) {
  const replies = sc.replies;
  const violations = [];
  const seen = new Map();
  for (const r of replies) {
    if (seen.has(r.n)) violations.push(`n=${r.n} answered twice (${seen.get(r.n).h} at ${seen.get(r.n).at.toFixed(0)}, ${r.h} at ${r.at.toFixed(0)})`);
    else seen.set(r.n, r);
  }
  for (const h of HOSTS) {
    const on = replies.filter((r) => r.h === h);
    for (let i = 1; i < on.length; i++) if (on[i].n <= on[i - 1].n) violations.push(`connection to ${h}: n=${on[i].n} after n=${on[i - 1].n}`);
  }
  check(violations.length === 0, `${what}: over ${replies.length} replies no counter value is answered twice and each connection's counter increases`, violations.length ? new Error(violations.slice(0, 5).join('; ')) : undefined);
  return replies;
}

/**
 * Host h's service namespace behind a veth (vs0 on the host side: nic-netbuf holds what the service sends
 * through it). Both carry the same address, so the restored sockets find their local address on the other host.
 */
async function makeServiceNs(h) {
  const ns = svcNs(h);
  const hostNs = lab.net.node(h).netns;
  sh('ip', 'netns', 'add', ns);
  sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  sh('ip', '-n', hostNs, 'link', 'add', 'vs0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
  sh('ip', '-n', hostNs, 'addr', 'add', '10.88.0.1/30', 'dev', 'vs0');
  sh('ip', '-n', hostNs, 'link', 'set', 'vs0', 'up');
  sh('ip', '-n', ns, 'addr', 'add', '10.88.0.2/30', 'dev', 'eth0');
  sh('ip', '-n', ns, 'link', 'set', 'eth0', 'up');
  sh('ip', '-n', ns, 'route', 'add', 'default', 'via', '10.88.0.1');
}

function dropServiceNs(h) {
  for (const p of svcPids(h, false)) shOk('kill', '-9', String(p));
  shOk('ip', 'netns', 'del', svcNs(h));
}

async function waitFor(cond, what, timeoutMs) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`FAILED: ${what} within ${timeoutMs} ms`);
}

async function main() {
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --trace-warnings`.trim();
  setupFreezer();
  loadNetbufModules();
  sh('criu', 'check');
  log('criu check: ok');
  lab = await NemesisLab.create();
  cleanups.push(() => lab.destroy());
  log(`etcd: ${lab.etcd.endpoints.join(', ')}`);
  // Each host: a service namespace behind a veth (vs0 on the host side: nic-netbuf holds what the service sends
  // through it), the host's service address forwarded there (DNAT). Both service namespaces carry the same
  // address, so the restored sockets find their local address on the other host.
  for (const h of HOSTS) {
    await makeServiceNs(h);
    cleanups.push(() => dropServiceNs(h));
    await lab.net.run(h, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    await lab.net.run(h, 'iptables', ['-w', '5', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '-d', lab.net.node(h).ip, '--dport', '7800', '-j', 'DNAT', '--to-destination', '10.88.0.2:7800']);
  }
  sc = await lab.scenario({
    ttlSeconds: 5,
    intervalMs: 100,
    stepTimeoutMs: 20_000,
    service: {
      type: 'criu',
      command: ['/usr/bin/nsenter', `--net=/run/netns/${svcNs('{host}')}`, '/usr/bin/python3', SERVICE, '7800'],
      netns: svcNs('{host}'),
      output: { package: '@remus/nic-netbuf', subkind: 'nic-netbuf', params: { ifname: 'vs0' } },
    },
  });
  // The output plugin is installed next to the config, as an operator would.
  mkdirSync(join(sc.dir, 'node_modules', '@remus'), { recursive: true });
  symlinkSync(NETBUF, join(sc.dir, 'node_modules', '@remus', 'nic-netbuf'));
  cleanups.push(() => sc.stop());
  // Cgroups a killed agent's phase left (recorded in its work directory): removed at the end.
  cleanups.push(async () => {
    for (const h of HOSTS) await reapRecorded(h);
  });

  const ha = sc.startAgent('ha');
  await ha.waitEvent((e) => e.host === 'ha' && e.type === 'mode' && e.mode === 'primary', 120_000);
  const pidA = svcPids('ha');
  check(pidA.length === 1, `ha is primary; its service runs in ${svcNs('ha')} as pid ${pidA.join(',')}`);
  const hb = sc.startAgent('hb');
  await ha.waitEvent((e) => e.host === 'ha' && e.type === 'backup-current', 120_000);
  log('hb acknowledged a full dump (backup-current)');
  sc.startClient(50, true, 20_000);
  await sc.waitReplies('ha', 40, 120_000);
  check(/plug/.test(await lab.net.run('ha', 'tc', ['qdisc', 'show'], 10_000)), 'nic-netbuf holds what the service sends on ha (a plug qdisc)');
  check(!/plug/.test(await lab.net.run('hb', 'tc', ['qdisc', 'show'], 10_000)), 'nothing is held on hb (backup)');
  const rxB = readdirSync(join(sc.dir, 'state', 'hb', 'criu')).filter((e) => e.startsWith('rx-'));
  check(rxB.length === 1 && existsSync(join(sc.dir, 'state', 'hb', 'criu', rxB[0], 'current')), `hb keeps a restore point (${rxB.join(',')})`);

  // The primary host dies: its agent and its service.
  const seen = sc.replies.length;
  const killedAt = mono();
  ha.signal('SIGKILL');
  await killService('ha');
  log(`killed ha's agent and service (pid ${pidA[0]})`);
  const promoted = await hb.waitEvent((e) => e.host === 'hb' && e.type === 'mode' && e.mode === 'primary', 120_000);
  await sc.waitReplies('hb', 20, 120_000, seen);
  const first = sc.replies.slice(seen).find((r) => r.h === 'hb');
  check(first.at > promoted.mono, `hb's first reply came after its promotion (${(first.at - promoted.mono).toFixed(0)} ms): the restored service's output was held from before the restore`);
  const pidB = svcPids('hb');
  check(pidB.length === 1 && pidB[0] === pidA[0], `hb restored the same process (pid ${pidB.join(',')} = ha's ${pidA[0]}) at epoch ${promoted.epoch}`);
  let replies = checkAll('after the first failover');
  const fromA = replies.filter((r) => r.h === 'ha' && r.at < killedAt);
  const fromB = replies.filter((r) => r.h === 'hb');
  const lastA = Math.max(...fromA.map((r) => r.n));
  const firstB = Math.min(...fromB.map((r) => r.n));
  check(firstB > lastA, `hb's counter goes on above every count ha released (ha's last ${lastA}, hb's first ${firstB}): nothing acknowledged lost`);
  check(firstB - lastA < 10_000, 'the restored counter is the checkpoint one, not a fresh start or garbage');
  console.log(`FIGURES criu agents: kill of ha to first reply from hb ${(first.at - killedAt).toFixed(0)} ms; ${fromA.length} replies from ha, ${fromB.length} from hb; epochs -> ${promoted.epoch}`);

  // ha comes back as a backup (a new agent, its killed phase's cgroup still recorded), gets a full dump; then hb dies.
  const mark = sc.events.length;
  await hostBack('ha');
  const ha2 = sc.startAgent('ha');
  await hb.waitEvent((e) => e.host === 'hb' && e.type === 'backup-current', 120_000, mark);
  await sc.waitReplies('hb', 20, 120_000);
  const seen2 = sc.replies.length;
  const killed2 = mono();
  hb.signal('SIGKILL');
  await killService('hb');
  log('killed hb\'s agent and service');
  const back = await ha2.waitEvent((e) => e.host === 'ha' && e.type === 'mode' && e.mode === 'primary', 120_000, mark);
  await sc.waitReplies('ha', 20, 120_000, seen2);
  const first2 = sc.replies.slice(seen2).find((r) => r.h === 'ha');
  check(first2.at > back.mono, `ha's first reply came after its promotion (${(first2.at - back.mono).toFixed(0)} ms)`);
  check(svcPids('ha')[0] === pidA[0], `ha restored the same process again (pid ${svcPids('ha').join(',')}) at epoch ${back.epoch}`);
  replies = checkAll('after both failovers');
  const lastB = Math.max(...replies.filter((r) => r.h === 'hb').map((r) => r.n));
  // Replies of the old ha connection that hb held when ha first died (in the restored socket's send queue) may
  // arrive now by retransmission: the new counts are those above what ha answered before its death.
  const newA = replies.filter((r) => r.h === 'ha' && r.at > killed2 && !(r.n > lastA && r.n < firstB)).map((r) => r.n);
  const firstA2 = Math.min(...newA);
  check(newA.length > 0 && firstA2 > lastB, `ha's counter goes on above every count hb released (hb's last ${lastB}, ha's first new ${firstA2})`);
  check(back.epoch > promoted.epoch, `epochs increase: ${promoted.epoch} -> ${back.epoch}`);
  const late = replies.filter((r) => r.h === 'ha' && r.at > killedAt && r.n > lastA && r.n < firstB).length;
  console.log(`FIGURES criu agents, back to ha: kill of hb to first reply from ha ${(first2.at - killed2).toFixed(0)} ms; ${replies.length} replies checked in all, 0 violations; ${late} replies held at ha's death delivered later by the restored socket; epochs ${promoted.epoch} -> ${back.epoch}`);
  for (const [h, a] of sc.agents) {
    const i = a.stderr.findIndex((l) => l.includes('Warning'));
    if (i >= 0) log(`agent ${h} warned:\n${a.stderr.slice(i, i + 12).join('\n')}`);
  }
  console.log('PASS');
}

runBody(
  () =>
    main().catch((e) => {
      // What the agents said, for the failure's message.
      if (sc) {
        console.log('--- events (last 40)');
        for (const x of sc.events.slice(-40)) console.log(JSON.stringify(x).slice(0, 600));
        for (const [h, a] of sc.agents) console.log(`--- stderr ${h}\n${a.stderr.slice(-15).join('\n')}`);
      }
      throw e;
    }),
  () => killAndClean({ cleanups }),
);
