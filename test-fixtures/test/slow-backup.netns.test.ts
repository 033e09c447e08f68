// Cross-package, real parts: @remus/domain-process (a UDP echo guest in a
// network namespace, frozen by the cgroup freezer) + @remus/nic-nfqueue (its
// NIC's output held in NFQUEUE) + core's checkpoint loop, with a backup that
// acknowledges each checkpoint only after 150 ms. Output commit means no reply
// can reach the client sooner than that. Needs root and network namespaces.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createCheckpointDevices, runCheckpointLoop, runScript, type DomainAdapter, type SubkindOps } from '@remus/core';
import { processDomain, type ProcessDomain } from '@remus/domain-process';
import { nicNfqueue } from '@remus/nic-nfqueue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROUTER = `rtf${process.pid}r`;
const GUEST = `rtf${process.pid}g`;
const ACK_DELAY_MS = 150;

const ip = async (args: string[]): Promise<string> => (await runScript('ip', args, { timeoutMs: 20_000 })).stdout;

const GUEST_JS = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, from) => s.send(m, from.port, from.address));
s.bind(7000, () => console.log('ready'));`;

const CLIENT_JS = `
const s = require('node:dgram').createSocket('udp4');
const now = () => performance.timeOrigin + performance.now();
const sent = [], got = [];
s.on('message', (m) => got.push({ n: Number(m.toString()), r: now() }));
let n = 0;
const t = setInterval(() => { sent.push(now()); s.send(String(n++), 7000, '10.78.1.2'); }, 10);
setTimeout(() => { clearInterval(t); setTimeout(() => { console.log(JSON.stringify({ sent, got })); process.exit(0); }, 1000); }, 1200);`;

beforeAll(async () => {
  await ip(['netns', 'add', ROUTER]);
  await ip(['netns', 'add', GUEST]);
  await ip(['-n', ROUTER, 'link', 'add', 'vif0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', GUEST]);
  await ip(['-n', ROUTER, 'addr', 'add', '10.78.1.1/24', 'dev', 'vif0']);
  await ip(['-n', GUEST, 'addr', 'add', '10.78.1.2/24', 'dev', 'eth0']);
  for (const [ns, dev] of [[ROUTER, 'vif0'], [GUEST, 'eth0'], [ROUTER, 'lo'], [GUEST, 'lo']]) await ip(['-n', ns as string, 'link', 'set', dev as string, 'up']);
});

afterAll(async () => {
  for (const ns of [ROUTER, GUEST]) {
    for (const pid of (await ip(['netns', 'pids', ns]).catch(() => '')).split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // Gone.
      }
    }
    await ip(['netns', 'delete', ns]).catch(() => undefined);
  }
});

/** Runs the guest under the loop with `ops` protecting vif0; returns each reply's round trip (ms). */
async function roundTrips(ops: SubkindOps[]): Promise<number[]> {
  const domain: ProcessDomain = processDomain({
    command: ['ip', 'netns', 'exec', GUEST, process.execPath, '-e', GUEST_JS],
    stdio: ['ignore', 'pipe', 'inherit'],
    ack: { type: 'local' },
  });
  const slowAck: DomainAdapter = {
    name: domain.name,
    suspend: (c) => domain.suspend(c),
    save: (c) => domain.save(c),
    resume: (c) => domain.resume(c),
    waitAck: async (c) => {
      await domain.waitAck(c);
      await new Promise((r) => setTimeout(r, ACK_DELAY_MS));
    },
  };
  const devices = createCheckpointDevices({ ops, devices: ops.length ? [{ id: 'guest0', kind: 'nic', params: { ifname: 'vif0', netns: ROUTER } }] : [] });
  const stop = new AbortController();
  try {
    await domain.start();
    await new Promise<void>((resolve) => createInterface({ input: domain.stdout! }).on('line', (l) => l === 'ready' && resolve()));
    await devices.setup();
    const loop = runCheckpointLoop({ devices, domain: slowAck, intervalMs: 20, stop: stop.signal });
    const client = spawn('ip', ['netns', 'exec', ROUTER, process.execPath, '-e', CLIENT_JS], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    client.stdout.on('data', (b: Buffer) => (out += b.toString()));
    await new Promise((r) => client.on('close', r));
    stop.abort();
    await loop;
    const { sent, got } = JSON.parse(out) as { sent: number[]; got: { n: number; r: number }[] };
    return got.map((g) => g.r - (sent[g.n] as number));
  } finally {
    await devices.teardown().catch(() => undefined);
    await domain.stop();
    expect(domain.cgroupPath).toBeUndefined();
  }
}

describe('a slow backup with the process domain and nic-nfqueue', () => {
  it('holds every reply until the backup acknowledged its checkpoint', async () => {
    const rtts = await roundTrips([nicNfqueue()]);
    expect(rtts.length).toBeGreaterThan(20);
    expect(Math.min(...rtts)).toBeGreaterThanOrEqual(ACK_DELAY_MS);
    // Nothing of the run is left in the router namespace.
    const rules = (await runScript('ip', ['netns', 'exec', ROUTER, 'iptables-save'], { timeoutMs: 20_000 })).stdout;
    expect(rules).not.toMatch(/remus/);
    expect((await ip(['netns', 'pids', ROUTER])).trim()).toBe('');
  });

  it('without the NIC subkind replies come back at once (the check above can fail)', async () => {
    const rtts = await roundTrips([]);
    expect(rtts.length).toBeGreaterThan(20);
    expect(Math.min(...rtts)).toBeLessThan(ACK_DELAY_MS);
  });
});

