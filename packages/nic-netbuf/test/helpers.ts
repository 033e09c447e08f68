/**
 * Test fixtures: network namespaces with veth pairs from @remus/test-lab (real
 * ip, named with this package's prefix and the test process's pid and start
 * time, removed by `destroy`, at exit, or by the next run if this one was
 * killed), plus nic-netbuf's own probes of what it made.
 */
import { childProcesses, createHostPair, sh, tryRun } from '@remus/test-lab';
import type { DeviceHandle, DeviceSpec, OpContext } from '@remus/core';

export { sh, tryRun };

export interface TestNet {
  /** Namespace holding the host side of the NICs (what nic-netbuf works in). */
  readonly host: string;
  /** Namespace holding the guest side. */
  readonly guest: string;
  /** Host-side interface names, `vh0`... */
  readonly nics: string[];
  /** Guest-side peer of nics[i]: `vg<i>`, address 10.77.<i>.2/24 and fd77:<i>::2/64; the host side has .1 / ::1. */
  destroy(): void;
}

/** Makes a host namespace and a guest namespace joined by `count` veth pairs, addressed and up (@remus/test-lab's one set-up). */
export function makeNet(count = 1): TestNet {
  const p = createHostPair({ prefix: 'rnb', nics: count, net: 77 });
  return { host: p.host, guest: p.guest, nics: [...p.nics], destroy: p.destroy };
}

export function nicDevice(net: TestNet, i = 0, id = `nic${i}`): DeviceSpec {
  return { id, kind: 'nic', params: { ifname: net.nics[i], netns: net.host } };
}

export function ctx(operation = `t${process.pid}`, signal: AbortSignal = new AbortController().signal, checkpoint = 0): OpContext {
  return { signal, checkpoint, epoch: 0, operation };
}

export function handle<S, D>(device: DeviceSpec, shared: S): DeviceHandle<S, D> {
  return { device, shared, data: undefined };
}

export interface Ifb {
  ifname: string;
  ifalias: string;
}

export function ifbs(netns: string | undefined): Ifb[] {
  const out = sh('ip', [...(netns ? ['-n', netns] : []), '-d', '-j', 'link', 'show', 'type', 'ifb']);
  return (JSON.parse(out || '[]') as { ifname: string; ifalias?: string }[]).map((l) => ({ ifname: l.ifname, ifalias: l.ifalias ?? '' }));
}

export function qdiscs(netns: string, dev: string): { kind: string; handle: string; parent?: string; root?: boolean; packets?: number; options?: Record<string, unknown> }[] {
  return JSON.parse(sh('tc', ['-n', netns, '-s', '-j', 'qdisc', 'show', 'dev', dev]) || '[]');
}

export function ingressOf(netns: string, dev: string): string | undefined {
  return qdiscs(netns, dev).find((q) => q.kind === 'ingress' || q.kind === 'clsact')?.kind;
}

/** Packets that went through the root qdisc of `dev`. */
export function rootPackets(netns: string, dev: string): number {
  return qdiscs(netns, dev).find((q) => q.root)?.packets ?? 0;
}

/** tc processes that are children of this process (control channels left running). */
export function childTcs(): number[] {
  return childProcesses('tc');
}

/** What nic-netbuf could have left in a test net: IFBs of ours, ingress qdiscs on its NICs, channel processes. */
export function leftovers(net: TestNet): string[] {
  const left: string[] = [];
  for (const i of ifbs(net.host)) left.push(`IFB ${i.ifname} (${i.ifalias})`);
  for (const nic of net.nics) {
    const k = ingressOf(net.host, nic);
    if (k) left.push(`${k} qdisc on ${nic}`);
  }
  for (const pid of childTcs()) left.push(`tc process ${pid}`);
  for (const ns of sh('ip', ['netns', 'list']).split('\n')) if (ns.startsWith(`remus-netbuf-probe-${process.pid}-`)) left.push(`namespace ${ns}`);
  return left;
}

/** Pings from the guest side of nics[i] (busybox ping); returns how many replies came back. */
export function ping(net: TestNet, i: number, count: number, v6 = false): number {
  const r = tryRun('ip', ['netns', 'exec', net.guest, 'busybox', 'ping', v6 ? '-6' : '-4', '-c', String(count), '-i', '0.05', '-W', '2', v6 ? `fd77:${i}::1` : `10.77.${i}.1`]);
  const m = /(\d+) packets received/.exec(r.out);
  return m ? Number(m[1]) : 0;
}

/** ARP requests from the guest side of nics[i] (busybox arping); returns how many replies came back. */
export function arping(net: TestNet, i: number, count: number): number {
  const r = tryRun('ip', ['netns', 'exec', net.guest, 'busybox', 'arping', '-c', String(count), '-w', '3', '-I', `vg${i}`, `10.77.${i}.1`]);
  const m = /Received (\d+) response/.exec(r.out);
  return m ? Number(m[1]) : 0;
}
