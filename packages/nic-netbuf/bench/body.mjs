// The measurement itself: run on the host (stand-in qdisc, this kernel has no
// sch_plug) by run.mjs, and inside the kernel lab (real plug) as a program.
//
// Two modes (`ownNs`):
// - other namespace: builds a host namespace + guest namespace with NICS veth
//   pairs; the NICs are in a namespace that is not this process's;
// - own namespace: the NICs are in this process's namespace (run.mjs starts
//   this file under `ip netns exec` on the host; in the lab it is the guest
//   VM's own namespace).
// In each mode, in one run: sets the NICs up through nic-netbuf's own ops
// once per channel (`native`: the synchronous socket of the NICs' namespace;
// `event`: the in-process netlink socket in the own namespace, the
// `tc -batch` process in another) and times postsuspend and commit per NIC;
// then the same qdisc change by the libnl-from-C peer (peer/libnl-peer.c,
// Xen's netbuf call) and spawned as one `tc` process per op. Prints one line
// `RESULT <json>` per mode and removes everything it made.
//
// Usage: node body.mjs [--stand-in] [--mode own|other|both] [--iterations N] [--spawn-iterations N]
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { createNetbuf } from '../dist/subkinds.js';
import { standIn as standInQdisc } from '../test/fixtures/stand-in.mjs';
import { runPeer } from './peer/peer.mjs';

const run = promisify(execFile);
const NICS = 2;

export async function measure({ standIn: useStandIn, iterations, spawnIterations, ownNs = false }) {
  const channels = {};
  for (const channel of ['native', 'event']) {
    channels[channel] = await measureChannel({ standIn: useStandIn, iterations, spawnIterations: channel === 'native' ? spawnIterations : 0, ownNs, channel });
  }
  const { peer, spawn, kernel, qdisc, nics } = channels.native;
  return { kernel, qdisc, nics, native: channels.native.ops, event: channels.event.ops, eventChannel: channels.event.channel, peer, spawn };
}

async function measureChannel({ standIn: useStandIn, iterations, spawnIterations, ownNs, channel }) {
  const standIn = useStandIn;
  const t0 = Date.now();
  const progress = (m) => process.env.REMUS_LAB && console.error(`[bench +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  const id = `${process.pid}`;
  const host = ownNs ? undefined : `rnb-bench-h-${id}`;
  const inHost = host === undefined ? [] : ['-n', host];
  const guest = `rnb-bench-g-${id}`;
  const sh = (...args) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const standInArgs = standIn ? ['bfifo', 'limit', '10000000'] : undefined;
  const ops = createNetbuf({ lockName: `remus-nic-netbuf-bench-${id}`, channel }, { qdisc: standInArgs ? standInQdisc(standInArgs) : undefined });
  const ctx = { signal: new AbortController().signal, checkpoint: 0, operation: `bench${id}` };
  let shared;
  const handles = [];
  try {
    if (host) sh('ip', 'netns', 'add', host);
    sh('ip', 'netns', 'add', guest);
    for (let i = 0; i < NICS; i++) {
      sh('ip', ...inHost, 'link', 'add', `rnbvh${id}x${i}`.slice(-15), 'type', 'veth', 'peer', 'name', `vg${i}`, 'netns', guest);
      sh('ip', ...inHost, 'link', 'set', `rnbvh${id}x${i}`.slice(-15), 'up');
      sh('ip', '-n', guest, 'link', 'set', `vg${i}`, 'up');
    }
    shared = await ops.init(ctx);
    for (let i = 0; i < NICS; i++) {
      const params = { ifname: `rnbvh${id}x${i}`.slice(-15), ...(host ? { netns: host } : {}) };
      const h = { device: { id: `nic${i}`, kind: 'nic', params }, shared, data: undefined };
      handles.push(h);
      if (!standIn) {
        const verdict = await ops.match(h, ctx);
        if (verdict !== true) throw new Error(`nic-netbuf does not match: ${JSON.stringify(verdict)}`);
      }
      await ops.setup(h, ctx);
      const want = channel === 'native' ? 'native' : ownNs ? 'netlink' : 'tc';
      if (h.data.control.via !== want) throw new Error(`NIC ${params.ifname} uses the ${h.data.control.via} channel, expected ${want}`);
    }
    progress('set up');
    const channelTimes = { postsuspend: [], commit: [] };
    const timeOp = async (op, h, record) => {
      const t0 = process.hrtime.bigint();
      await ops[op](h, ctx);
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (record) channelTimes[op].push(us);
    };
    const warmup = Math.min(50, iterations);
    for (let k = 0; k < warmup + iterations; k++) {
      for (const h of handles) await timeOp('postsuspend', h, k >= warmup);
      for (const h of handles) await timeOp('commit', h, k >= warmup);
    }
    progress('channel ops timed');
    const ifb = handles[0].data.ifb;
    // The libnl-from-C peer: the same change on the same IFB, timed in C (skipped where it cannot be built, e.g. the lab guest).
    let peer;
    if (spawnIterations > 0) {
      try {
        peer = runPeer({ ifname: ifb, iterations: iterations * 2, kind: standIn ? 'bfifo' : 'plug', netns: host });
      } catch (e) {
        peer = { error: String(e.message).split('\n')[0] };
      }
      progress('peer timed');
    }
    // Baseline: the same change, one spawned tc process per op (child_process, the cheapest spawn).
    const spawnTimes = [];
    for (let k = 0; k < spawnIterations; k++) {
      const tail = standInArgs ?? ['plug', k % 2 === 0 ? 'block' : 'release'];
      const t0 = process.hrtime.bigint();
      await run('tc', [...inHost, 'qdisc', 'change', 'dev', ifb, 'root', 'handle', '1:', ...tail]);
      spawnTimes.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    progress('spawns timed');
    if (!standIn) await run('tc', [...inHost, 'qdisc', 'change', 'dev', ifb, 'root', 'handle', '1:', 'plug', 'release_indefinite']);
    const names = { native: 'native synchronous netlink socket', netlink: 'in-process netlink socket (event-driven)', tc: 'tc -force -batch - process' };
    return {
      kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(),
      qdisc: standIn ? 'bfifo (stand-in: no sch_plug)' : 'plug',
      channel: `${names[handles[0].data.control.via]} (${ownNs ? 'own' : 'other'} namespace)`,
      nics: NICS,
      ops: { postsuspend: summary(channelTimes.postsuspend), commit: summary(channelTimes.commit) },
      peer,
      spawn: spawnTimes.length ? summary(spawnTimes) : undefined,
    };
  } finally {
    for (const h of handles) await ops.teardown(h, ctx).catch((e) => console.error(`teardown: ${e.message}`));
    if (shared) await ops.cleanup(shared, ctx);
    for (const ns of [host, guest]) if (ns) spawnSync('ip', ['netns', 'del', ns]);
  }
}

function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, medianUs: at(0.5), p99Us: at(0.99) };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? Number(process.argv[i + 1]) : fallback;
  };
  const i = process.argv.indexOf('--mode');
  const mode = i >= 0 ? process.argv[i + 1] : 'other';
  for (const ownNs of mode === 'both' ? [true, false] : [mode === 'own']) {
    const result = await measure({
      standIn: process.argv.includes('--stand-in'),
      iterations: arg('--iterations', 500),
      spawnIterations: arg('--spawn-iterations', 200),
      ownNs,
    });
    console.log(`RESULT ${JSON.stringify(result)}`);
  }
}
