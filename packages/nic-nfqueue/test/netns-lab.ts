/**
 * Test lab: guest, host and client network namespaces joined by veth pairs,
 * routed or bridged, with a UDP receiver in the client and a UDP sender in
 * the guest. Every name carries this process's pid so parallel runs do not
 * collide; `destroy()` removes everything, also after a failed test.
 *
 * Needs root, iproute2 and iptables (CI runs as root).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));

export function sh(file: string, args: readonly string[]): string {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function nsx(ns: string, file: string, args: readonly string[]): string {
  return sh('ip', ['netns', 'exec', ns, file, ...args]);
}

/** A child process whose stdout lines are collected. */
export class LineProcess {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  #waiters: (() => void)[] = [];

  constructor(file: string, args: readonly string[]) {
    this.child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      this.lines.push(l);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.child.stdin!.on('error', () => undefined);
  }

  /** Waits until `pred(lines)` holds, at most `ms`; throws with the lines seen otherwise. */
  async waitFor(pred: (lines: readonly string[]) => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred(this.lines)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}; lines: ${JSON.stringify(this.lines.slice(-20))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 50));
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  write(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  stop(): void {
    this.child.stdin!.end();
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

export type Topology = 'routed' | 'bridged';

export interface Lab {
  readonly topology: Topology;
  readonly guest: string;
  readonly host: string;
  readonly client: string;
  /** Host-side interface of the guest's NIC (the device's `ifname`). */
  readonly vif: string;
  /** Host-side interface toward the client (routed) or second bridge port (bridged). */
  readonly hostToClient: string;
  readonly bridge: string | undefined;
  readonly clientV4: string;
  readonly clientV6: string;
  /** An address of the host itself, reachable from the guest. */
  readonly hostV4: string;
  readonly port: number;
  receiver: LineProcess | undefined;
  sender: LineProcess | undefined;
  /** Payloads the receiver got, in arrival order. */
  received(): string[];
  /** Starts the receiver and sender processes. */
  startTraffic(): Promise<void>;
  /** Sends each payload to `addr` (client's v4 by default) and waits until the guest's kernel took them all. */
  send(payloads: readonly string[], addr?: string): Promise<void>;
  /** Packets the host's kernel holds in each bound NFQUEUE queue. */
  queueTotals(): Map<number, number>;
  destroy(): void;
}

function macOf(ns: string, ifname: string): string {
  const j = JSON.parse(sh('ip', ['-n', ns, '-j', 'link', 'show', 'dev', ifname])) as { address: string }[];
  return j[0]!.address;
}

/**
 * Builds a lab. Routed: guest 10.77.1.2 -> host (10.77.1.1 | 10.77.2.1) ->
 * client 10.77.2.2, IPv6 fd77:1::/64 and fd77:2::/64. Bridged: guest
 * 10.77.1.2 and client 10.77.1.3 on one bridge in the host (10.77.1.1),
 * IPv6 fd77:1::/64. Neighbour entries the guest needs are static, so the
 * buffered IPv6 neighbour discovery never stands between a send and the wire.
 */
export function createLab(topology: Topology, options: { ipv6?: boolean } = {}): Lab {
  const ipv6 = options.ipv6 ?? true;
  // pid + 4 random hex digits: unique across workers and runs, and short
  // enough for 15-byte interface names.
  const n = `${process.pid % 100000}${randomBytes(2).toString('hex')}`;
  const guest = `nfq-${n}-g`;
  const host = `nfq-${n}-h`;
  const client = `nfq-${n}-c`;
  const vif = `nq${n}v`;
  const gIf = `nq${n}g`;
  const hostToClient = `nq${n}h`;
  const cIf = `nq${n}c`;
  const bridge = topology === 'bridged' ? `nq${n}b` : undefined;
  const made: string[] = [];
  const lab: Lab = {
    topology,
    guest,
    host,
    client,
    vif,
    hostToClient,
    bridge,
    clientV4: topology === 'routed' ? '10.77.2.2' : '10.77.1.3',
    clientV6: topology === 'routed' ? 'fd77:2::2' : 'fd77:1::3',
    hostV4: '10.77.1.1',
    port: 40000 + (process.pid % 20000),
    receiver: undefined,
    sender: undefined,
    received() {
      return (this.receiver?.lines ?? []).filter((l) => l.startsWith('rx ')).map((l) => l.slice(3));
    },
    async startTraffic() {
      this.receiver = new LineProcess('ip', ['netns', 'exec', client, process.execPath, `${FIXTURES}udp-receiver.mjs`, String(this.port)]);
      this.sender = new LineProcess('ip', ['netns', 'exec', guest, process.execPath, `${FIXTURES}udp-sender.mjs`]);
      await this.receiver.waitFor((l) => l.includes('ready'), 10_000, 'receiver ready');
      await this.sender.waitFor((l) => l.includes('ready'), 10_000, 'sender ready');
    },
    async send(payloads, addr) {
      addr ??= this.clientV4;
      for (const p of payloads) this.sender!.write(`${addr} ${this.port} ${p}`);
      await this.sender!.waitFor((l) => payloads.every((p) => l.includes(`sent ${p}`)), 10_000, `sends ${payloads.join(',')}`);
    },
    queueTotals() {
      const out = new Map<number, number>();
      for (const line of nsx(host, 'cat', ['/proc/net/netfilter/nfnetlink_queue']).split('\n')) {
        const f = line.trim().split(/\s+/).map(Number);
        if (f.length >= 3 && Number.isFinite(f[0])) out.set(f[0]!, f[2]!);
      }
      return out;
    },
    destroy() {
      this.receiver?.stop();
      this.sender?.stop();
      for (const ns of made.reverse()) {
        try {
          sh('ip', ['netns', 'del', ns]);
        } catch {
          // Already gone.
        }
      }
    },
  };
  try {
    for (const ns of [guest, host, client]) {
      sh('ip', ['netns', 'add', ns]);
      made.push(ns);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      // Fixed addresses without duplicate detection, so they work at once.
      // No router solicitations either: the guest sends only what a test sends
      // (its MLD reports go out when interfaces come up, before any rule exists).
      nsx(ns, 'sysctl', [
        '-qw',
        'net.ipv6.conf.all.accept_dad=0',
        'net.ipv6.conf.default.accept_dad=0',
        'net.ipv6.conf.all.router_solicitations=0',
        'net.ipv6.conf.default.router_solicitations=0',
      ]);
      // Without IPv6 the guest sends nothing of its own (no MLD reports): exact counts hold.
      if (!ipv6 && ns === guest) nsx(ns, 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    }
    sh('ip', ['link', 'add', gIf, 'netns', guest, 'type', 'veth', 'peer', 'name', vif, 'netns', host]);
    sh('ip', ['link', 'add', hostToClient, 'netns', host, 'type', 'veth', 'peer', 'name', cIf, 'netns', client]);
    const addr = (ns: string, ifname: string, a: string): void => {
      sh('ip', ['-n', ns, 'addr', 'add', a, 'dev', ifname, ...(a.includes(':') ? ['nodad'] : [])]);
    };
    const up = (ns: string, ifname: string): void => void sh('ip', ['-n', ns, 'link', 'set', ifname, 'up']);
    addr(guest, gIf, '10.77.1.2/24');
    if (ipv6) addr(guest, gIf, 'fd77:1::2/64');
    up(guest, gIf);
    if (topology === 'routed') {
      addr(host, vif, '10.77.1.1/24');
      addr(host, vif, 'fd77:1::1/64');
      addr(host, hostToClient, '10.77.2.1/24');
      addr(host, hostToClient, 'fd77:2::1/64');
      up(host, vif);
      up(host, hostToClient);
      nsx(host, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
      addr(client, cIf, '10.77.2.2/24');
      addr(client, cIf, 'fd77:2::2/64');
      up(client, cIf);
      sh('ip', ['-n', guest, 'route', 'add', 'default', 'via', '10.77.1.1']);
      if (ipv6) sh('ip', ['-n', guest, '-6', 'route', 'add', 'default', 'via', 'fd77:1::1']);
      sh('ip', ['-n', client, 'route', 'add', 'default', 'via', '10.77.2.1']);
      sh('ip', ['-n', client, '-6', 'route', 'add', 'default', 'via', 'fd77:2::1']);
      if (ipv6) sh('ip', ['-n', guest, '-6', 'neigh', 'replace', 'fd77:1::1', 'lladdr', macOf(host, vif), 'dev', gIf, 'nud', 'permanent']);
    } else {
      sh('ip', ['-n', host, 'link', 'add', bridge!, 'type', 'bridge']);
      sh('ip', ['-n', host, 'link', 'set', vif, 'master', bridge!]);
      sh('ip', ['-n', host, 'link', 'set', hostToClient, 'master', bridge!]);
      addr(host, bridge!, '10.77.1.1/24');
      up(host, bridge!);
      up(host, vif);
      up(host, hostToClient);
      addr(client, cIf, '10.77.1.3/24');
      addr(client, cIf, 'fd77:1::3/64');
      up(client, cIf);
      if (ipv6) sh('ip', ['-n', guest, '-6', 'neigh', 'replace', 'fd77:1::3', 'lladdr', macOf(client, cIf), 'dev', gIf, 'nud', 'permanent']);
    }
  } catch (e) {
    lab.destroy();
    throw e;
  }
  return lab;
}

/** Rules in the namespace whose comment starts with `remus:` (both families), as `-S` lines. */
export function remusRules(ns: string): string[] {
  const out: string[] = [];
  for (const bin of ['iptables-save', 'ip6tables-save', 'iptables-legacy-save', 'ip6tables-legacy-save']) {
    for (const l of nsx(ns, bin, []).split('\n')) if (l.includes('remus:')) out.push(`${bin}: ${l}`);
  }
  return out;
}

/** Bound NFQUEUE queues in the namespace, as /proc lines. */
export function boundQueues(ns: string): string[] {
  return nsx(ns, 'cat', ['/proc/net/netfilter/nfnetlink_queue'])
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/** Buffer processes that are children of this process (pids). */
export function childBufferProcesses(): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
      if (!cmd.includes('buffer-process.js')) continue;
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid) out.push(Number(d));
    } catch {
      // The process ended while we looked.
    }
  }
  return out;
}

/** What a test may have left in the lab: rules, bound queues, buffer processes. */
export function leftovers(lab: Lab): string[] {
  return [
    ...remusRules(lab.host),
    ...boundQueues(lab.host).map((l) => `bound queue: ${l}`),
    ...childBufferProcesses().map((p) => `buffer process ${p}`),
  ];
}

/** Kills (by pid) buffer processes this process started and left running. */
export function killStrayBufferProcesses(): void {
  for (const pid of childBufferProcesses()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
}

export async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
