// Kernel-lab body (runs as root inside the lab guest, which has sch_plug):
// output commit through nic-netbuf's own ops, driven by the core's device layer.
//
// A guest namespace G sends UDP datagrams through a veth pair to a receiver
// on the host side (in this process's namespace, or in namespace H with
// --netns). Per checkpoint N: the packets G sent during epoch N are all held
// (counted in the plug's backlog, none at the receiver) until commit N, then
// all of them arrive, while epoch N+1's packets stay held until commit N+1.
// Also checks that ARP from the guest is held, and that teardown and
// cleanup leave nothing behind. Exit 0 = pass.
//
// Usage: node plug-epochs.mjs [--netns]
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createCheckpointDevices } from '@remus/core';
import { nicNetbuf } from '../../dist/index.js';

const useNetns = process.argv.includes('--netns');
const G = `rnb-lab-g-${process.pid}`;
const H = useNetns ? `rnb-lab-h-${process.pid}` : undefined;
const K = 20; // datagrams per epoch
const PORT = 9177;
const peer = new URL('./peer.mjs', import.meta.url).pathname;
const children = [];

const sh = (file, ...args) => execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const inH = (file, ...args) => (H ? [file, '-n', H, ...args] : [file, ...args]);
const t0 = Date.now();
const log = (m) => console.log(`[plug-epochs${useNetns ? ' netns' : ''} +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  log(`ok: ${what}`);
}

/** Polls `get` until `ok(value)` or `ms` pass; returns the last value. */
async function until(get, ok, ms = 30_000) {
  const end = Date.now() + ms;
  let v = await get();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
    v = await get();
  }
  return v;
}

/** Starts peer.mjs (in a namespace if given) and returns a line-based client. */
async function startPeer(netns, mode, addr) {
  const argv = netns ? ['ip', 'netns', 'exec', netns, process.execPath, peer, mode, addr, String(PORT)] : [process.execPath, peer, mode, addr, String(PORT)];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const rl = createInterface({ input: child.stdout });
  const waiting = [];
  rl.on('line', (l) => waiting.shift()?.(l));
  const next = () => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`peer ${mode} did not answer`)), 60_000);
    waiting.push((l) => {
      clearTimeout(t);
      resolve(l);
    });
  });
  const ready = await next();
  if (ready !== 'ready') throw new Error(`peer ${mode}: ${ready}`);
  return {
    async ask(line) {
      const p = next();
      child.stdin.write(`${line}\n`);
      return p;
    },
  };
}

function plugStats(ifb) {
  const [q] = JSON.parse(sh(...inH('tc', '-s', '-j', 'qdisc', 'show', 'dev', ifb, 'root')));
  return q;
}

let layer;
try {
  for (const m of ['sch_plug', 'ifb', 'veth', 'act_mirred', 'cls_u32', 'sch_ingress']) spawnSync('modprobe', [m]);
  sh('ip', 'netns', 'add', G);
  if (H) sh('ip', 'netns', 'add', H);
  sh(...inH('ip', 'link', 'add', 'vh0', 'type', 'veth', 'peer', 'name', 'vg0', 'netns', G));
  sh(...inH('ip', 'addr', 'add', '10.78.0.1/24', 'dev', 'vh0'));
  sh(...inH('ip', 'link', 'set', 'vh0', 'up'));
  sh(...inH('ip', 'link', 'set', 'lo', 'up'));
  // No IPv6 in the guest namespace: no router solicitations or MLD reports, so the plug holds exactly the datagrams.
  sh('ip', 'netns', 'exec', G, 'busybox', 'sysctl', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.vg0.disable_ipv6=1');
  sh('ip', '-n', G, 'addr', 'add', '10.78.0.2/24', 'dev', 'vg0');
  sh('ip', '-n', G, 'link', 'set', 'vg0', 'up');
  sh('ip', '-n', G, 'link', 'set', 'lo', 'up');
  // A static neighbour: the guest needs no ARP to send, so epochs hold exactly its datagrams.
  const mac = JSON.parse(sh(...inH('ip', '-j', 'link', 'show', 'dev', 'vh0')))[0].address;
  sh('ip', '-n', G, 'neigh', 'replace', '10.78.0.1', 'lladdr', mac, 'dev', 'vg0', 'nud', 'permanent');

  const receiver = await startPeer(H, 'recv', '10.78.0.1');
  const sender = await startPeer(G, 'send', '10.78.0.1');
  const counts = async () => JSON.parse(await receiver.ask('count'));

  // Before buffering: the path works.
  await sender.ask('send pre 3');
  check((await until(counts, (c) => c.pre === 3)).pre === 3, 'without buffering, 3 datagrams arrive');

  const device = { id: 'vif-lab.0', kind: 'nic', params: { ifname: 'vh0', ...(H ? { netns: H } : {}) } };
  const channel = process.argv.includes('--channel-event') ? 'event' : 'native';
  const ops = nicNetbuf({ channel });
  layer = createCheckpointDevices({ ops: [ops], devices: [device], operationId: `lab${process.pid}` });
  await layer.setup();
  check(layer.assignments()[0]?.subkind === 'nic-netbuf', 'nic-netbuf matched the NIC (sch_plug found by the probe)');
  const ifbs = JSON.parse(sh(...inH('ip', '-d', '-j', 'link', 'show', 'type', 'ifb'))).filter((l) => (l.ifalias ?? '').startsWith('remus-netbuf:'));
  check(ifbs.length === 1, `one tagged IFB (${ifbs[0]?.ifname} ${ifbs[0]?.ifalias})`);
  const ifb = ifbs[0].ifname;
  check(plugStats(ifb).kind === 'plug', 'the IFB root qdisc is plug');
  // Native channel (any namespace) or the event-driven one in the own namespace: an in-process socket,
  // no tc channel process; the event-driven channel in another namespace: one `tc -n H -force -batch -` child.
  const tcChildren = tcChildrenOfThisProcess();
  const wantTc = channel === 'event' && H ? 1 : 0;
  check(tcChildren === wantTc, `${channel} channel: ${wantTc ? 'tc batch channel' : 'in-process socket, no tc channel process'} (${tcChildren} tc children)`);

  const held = () => plugStats(ifb).qlen ?? 0;
  const epochs = ['e1', 'e2', 'e3'];
  // Epoch 1 is open from setup on.
  await sender.ask(`send e1 ${K}`);
  const h1 = await until(held, (n) => n === K);
  check(h1 === K, `epoch 1: ${K} datagrams held in the plug (backlog ${h1})`);
  check(!(await counts()).e1, 'epoch 1: none reached the receiver');
  for (let n = 1; n <= 3; n++) {
    await layer.postsuspend(); // close epoch n
    await layer.preresume();
    if (n < 3) {
      await sender.ask(`send ${epochs[n]} ${K}`); // epoch n+1
      check((await until(held, (q) => q === 2 * K)) === 2 * K, `epoch ${n + 1}: ${K} more datagrams held (backlog ${2 * K})`);
    }
    await new Promise((r) => setTimeout(r, 300));
    check(!(await counts())[epochs[n - 1]], `before commit ${n}: none of epoch ${n} reached the receiver`);
    await layer.commit(); // release epoch n
    const c = await until(counts, (x) => x[epochs[n - 1]] === K);
    check(c[epochs[n - 1]] === K, `after commit ${n}: all ${K} datagrams of epoch ${n} arrived`);
    if (n < 3) {
      await new Promise((r) => setTimeout(r, 300));
      check(!(await counts())[epochs[n]], `after commit ${n}: epoch ${n + 1} still held (none arrived)`);
      check(held() === K, `after commit ${n}: the plug still holds epoch ${n + 1}'s ${K} datagrams`);
    }
  }
  check(held() === 0, 'nothing held after the last commit');

  // ARP is buffered too: an ARP request from the guest waits for the next commit.
  const arp = spawn('ip', ['netns', 'exec', G, 'busybox', 'arping', '-f', '-c', '60', '-w', '60', '-I', 'vg0', '10.78.0.1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(arp);
  let arpOut = '';
  arp.stdout.on('data', (d) => (arpOut += d));
  // 'close', not 'exit': 'exit' can come before the last of arping's stdout has been read.
  const arpDone = new Promise((r) => arp.once('close', r));
  check((await until(held, (q) => q >= 1)) >= 1, 'an ARP request from the guest is held in the plug');
  await new Promise((r) => setTimeout(r, 1500)); // arping re-sends every second: those are held too
  check(!/Received [1-9]/.test(arpOut) && arp.exitCode === null, `no ARP reply before the commit (${held()} held)`);
  await layer.postsuspend();
  await layer.preresume();
  await layer.commit();
  await arpDone;
  const replied = /Received [1-9]\d* response/.test(arpOut);
  check(replied, `the ARP reply comes after the commit${replied ? '' : ` (arping exit ${arp.exitCode}, said ${JSON.stringify(arpOut)})`}`);

  const stats = layer.stats()[0]?.stats ?? {};
  check(stats.epochsClosed === 4 && stats.epochsReleased === 4 && stats.epochsHeld === 0, `stats count the epochs (${JSON.stringify(stats)})`);
  await layer.teardown();
  layer = undefined;
  const left = JSON.parse(sh(...inH('ip', '-d', '-j', 'link', 'show', 'type', 'ifb'))).filter((l) => (l.ifalias ?? '').startsWith('remus-netbuf:'));
  check(left.length === 0, 'teardown removed the IFB');
  check(!/ingress/.test(sh(...inH('tc', 'qdisc', 'show', 'dev', 'vh0'))), 'teardown removed the ingress qdisc');
  await sender.ask('send post 3');
  check((await until(counts, (c) => c.post === 3)).post === 3, 'after teardown, traffic flows unbuffered');
  log('PASS');
} catch (e) {
  console.error(e?.stack ?? e);
  process.exitCode = 1;
} finally {
  if (layer) await layer.teardown().catch((e) => console.error(`teardown: ${e.message}`));
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  spawnSync('ip', ['netns', 'del', G]);
  if (H) spawnSync('ip', ['netns', 'del', H]);
}
process.exit(process.exitCode ?? 0);

/** tc processes whose parent is this process (the control channels). */
function tcChildrenOfThisProcess() {
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (comm === 'tc' && ppid === process.pid) n++;
    } catch {
      // gone meanwhile
    }
  }
  return n;
}
