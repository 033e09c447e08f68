/**
 * nic-nfqueue's test lab: the shared three-namespace lab of @remus/test-lab
 * (guest -> host -> client, routed or bridged) plus what only this plugin's
 * tests need: a UDP receiver in the client and a UDP sender in the guest,
 * the host's NFQUEUE counters, and the checks for what a test may leave
 * behind (rules, bound queues, buffer processes). `destroy()` removes
 * everything, also after a failed test; a SIGKILLed run's namespaces are
 * removed by the next one (test-lab's owned names).
 *
 * Needs root, iproute2 and iptables (CI runs as root).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { childProcesses, createTrio, LineProcess, sh, type Trio, type TrioTopology } from '@remus/test-lab';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));

export type Topology = TrioTopology;

export interface Lab extends Trio {
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
  /** Packets the host's kernel dropped because a bound queue was full (`queue_dropped`), over all of them. */
  queueDropped(): number;
}

const nsx = (ns: string, file: string, args: readonly string[]): string => sh('ip', ['netns', 'exec', ns, file, ...args]);

/** Builds a lab (see test-lab's `createTrio` for the addresses). */
export function createLab(topology: Topology, options: { ipv6?: boolean } = {}): Lab {
  const trio = createTrio({ prefix: 'rnfq', ifPrefix: 'nq', topology, ipv6: options.ipv6 ?? true });
  const lab: Lab = {
    ...trio,
    port: 40000 + (process.pid % 20000),
    receiver: undefined,
    sender: undefined,
    received() {
      return (this.receiver?.lines ?? []).filter((l) => l.startsWith('rx ')).map((l) => l.slice(3));
    },
    async startTraffic() {
      this.receiver = new LineProcess('ip', ['netns', 'exec', trio.client, process.execPath, `${FIXTURES}udp-receiver.mjs`, String(this.port)]);
      this.sender = new LineProcess('ip', ['netns', 'exec', trio.guest, process.execPath, `${FIXTURES}udp-sender.mjs`]);
      await this.receiver.waitFor((l) => l.includes('ready'), 10_000, 'receiver ready');
      await this.sender.waitFor((l) => l.includes('ready'), 10_000, 'sender ready');
    },
    async send(payloads, addr) {
      addr ??= this.clientV4;
      for (const p of payloads) this.sender!.write(`${addr} ${this.port} ${p}`);
      await this.sender!.waitFor((l) => payloads.every((p) => l.includes(`sent ${p}`)), 10_000, `sends ${payloads.join(',')}`);
    },
    queueTotals() {
      return new Map(queueRows(trio.host).map((f) => [f[0]!, f[2]!]));
    },
    queueDropped() {
      return queueRows(trio.host).reduce((sum, f) => sum + f[5]!, 0);
    },
    destroy() {
      this.receiver?.stop();
      this.sender?.stop();
      trio.destroy();
    },
  };
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

/**
 * The numeric fields of each bound queue's /proc line: queue number, peer portid, queue_total,
 * copy mode, copy range, queue_dropped, user_dropped, id sequence, 1.
 */
function queueRows(ns: string): number[][] {
  return boundQueues(ns)
    .map((line) => line.split(/\s+/).map(Number))
    .filter((f) => f.length >= 7 && f.every(Number.isFinite));
}

/** Bound NFQUEUE queues in the namespace, as /proc lines. */
export function boundQueues(ns: string): string[] {
  return nsx(ns, 'cat', ['/proc/net/netfilter/nfnetlink_queue'])
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/** Buffer processes that are live children of this process (pids). */
export function childBufferProcesses(): number[] {
  return childProcesses().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('buffer-process.js');
    } catch {
      return false; // It ended while we looked.
    }
  });
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
