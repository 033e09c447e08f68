/**
 * The lab network: a switch namespace with one bridge, and one namespace per
 * node (an etcd member, a host, a client) joined to the bridge by a veth.
 * Partitions are nftables rules in the switch's bridge `forward` hook: frames
 * between nodes of different groups are dropped silently in both directions,
 * like a cut cable (no error reaches a sender; TCP just hears nothing).
 *
 * Everything is named `el<owner pid>x<n>-...`: `destroy()` removes it, an
 * exit hook removes it if the owner forgets, and the next lab removes what a
 * SIGKILLed owner left (its pid is dead).
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { RemusError, runScript, validateName } from '@remus/core';

/** One machine of the lab. */
export interface LabNode {
  /** Short name, e.g. `e1`, `hostA`. */
  readonly name: string;
  /** Its network namespace. */
  readonly netns: string;
  /** Its address on the lab switch (IPv4, /24). */
  readonly ip: string;
  /** Its port on the switch (interface in the switch namespace). */
  readonly port: string;
}

const SUBNET = '10.77.0';
const TABLE = 'remuslab';
let labs = 0;
const live = new Set<LabNet>();
let hooked = false;

async function ip(args: readonly string[]): Promise<string> {
  return (await runScript('ip', args, { timeoutMs: 20_000 })).stdout;
}

/** Runs an nft script (`nft -f -`) in `netns`: one transaction. */
async function nft(netns: string, script: string): Promise<void> {
  await runScript('ip', ['netns', 'exec', netns, 'nft', '-f', '-'], { timeoutMs: 20_000, input: script });
}

/** Creates a lab network (switch namespace and bridge). Removes stale labs of dead owners first. */
export async function createLabNet(): Promise<LabNet> {
  sweepStaleLabs();
  const net = new LabNet(`el${process.pid}x${++labs}`);
  live.add(net);
  if (!hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const n of live) n.destroySync();
    });
  }
  try {
    await ip(['netns', 'add', net.switchNs]);
    await ip(['-n', net.switchNs, 'link', 'set', 'lo', 'up']);
    await ip(['-n', net.switchNs, 'link', 'add', 'br0', 'type', 'bridge']);
    await ip(['-n', net.switchNs, 'link', 'set', 'br0', 'up']);
    await nft(net.switchNs, `table bridge ${TABLE} {\n  chain lab {\n    type filter hook forward priority 0; policy accept;\n  }\n}\n`);
  } catch (e) {
    await net.destroy();
    throw e;
  }
  return net;
}

/** A lab network; see the file header. */
export class LabNet {
  /** Prefix of every name this lab makes. */
  readonly id: string;
  readonly switchNs: string;
  readonly #nodes = new Map<string, LabNode>();
  readonly #children = new Set<ChildProcess>();
  #destroyed = false;

  constructor(id: string) {
    this.id = id;
    this.switchNs = `${id}-sw`;
  }

  /** The nodes, in the order they were added. */
  get nodes(): readonly LabNode[] {
    return [...this.#nodes.values()];
  }

  node(name: string): LabNode {
    const n = this.#nodes.get(name);
    if (!n) throw new RemusError('INVALID_ARGUMENT', `lab ${this.id} has no node ${JSON.stringify(name)} (nodes: ${[...this.#nodes.keys()].join(', ')})`);
    return n;
  }

  /** Adds a node: a namespace with `eth0` on the switch and an address 10.77.0.(10+n). */
  async addNode(name: string): Promise<LabNode> {
    if (!/^[a-z][a-z0-9]{0,9}$/i.test(name)) throw new RemusError('INVALID_ARGUMENT', `node name ${JSON.stringify(name)}: 1-10 letters and digits, starting with a letter`);
    if (this.#nodes.has(name)) throw new RemusError('INVALID_ARGUMENT', `node ${name} exists already`);
    const node: LabNode = { name, netns: validateName(`${this.id}-${name}`, 'namespace'), ip: `${SUBNET}.${10 + this.#nodes.size}`, port: `p-${name}` };
    this.#nodes.set(name, node);
    await ip(['netns', 'add', node.netns]);
    await ip(['-n', node.netns, 'link', 'set', 'lo', 'up']);
    await ip(['link', 'add', 'eth0', 'netns', node.netns, 'type', 'veth', 'peer', 'name', node.port, 'netns', this.switchNs]);
    await ip(['-n', this.switchNs, 'link', 'set', node.port, 'master', 'br0']);
    await ip(['-n', this.switchNs, 'link', 'set', node.port, 'up']);
    await ip(['-n', node.netns, 'addr', 'add', `${node.ip}/24`, 'dev', 'eth0']);
    await ip(['-n', node.netns, 'link', 'set', 'eth0', 'up']);
    return node;
  }

  /**
   * Cuts the network between groups: nodes of different groups cannot
   * exchange a frame. Nodes named in no group form one more group (the
   * rest). Replaces any earlier partition.
   */
  async partition(...groups: readonly (readonly string[])[]): Promise<void> {
    for (const g of groups) for (const n of g) this.node(n);
    const named = new Set(groups.flat());
    const rest = [...this.#nodes.keys()].filter((n) => !named.has(n));
    const all = rest.length > 0 ? [...groups, rest] : [...groups];
    const group = new Map<string, number>();
    all.forEach((g, i) => g.forEach((n) => group.set(n, i)));
    const lines = [`flush chain bridge ${TABLE} lab`];
    for (const a of this.#nodes.values()) {
      for (const b of this.#nodes.values()) {
        if (group.get(a.name) !== group.get(b.name)) lines.push(`add rule bridge ${TABLE} lab iifname "${a.port}" oifname "${b.port}" drop`);
      }
    }
    await nft(this.switchNs, `${lines.join('\n')}\n`);
  }

  /**
   * Cuts only the links between every node of `a` and every node of `b`
   * (both directions); every other pair still talks (e.g. a client that sees
   * both sides of a partition). Replaces any earlier partition.
   */
  async cut(a: readonly string[], b: readonly string[]): Promise<void> {
    const ports = (names: readonly string[]): string[] => names.map((n) => this.node(n).port);
    const lines = [`flush chain bridge ${TABLE} lab`];
    for (const x of ports(a)) {
      for (const y of ports(b)) {
        lines.push(`add rule bridge ${TABLE} lab iifname "${x}" oifname "${y}" drop`, `add rule bridge ${TABLE} lab iifname "${y}" oifname "${x}" drop`);
      }
    }
    await nft(this.switchNs, `${lines.join('\n')}\n`);
  }

  /** Cuts `name` off from every other node. */
  isolate(name: string): Promise<void> {
    return this.partition([name]);
  }

  /** Removes every partition. */
  async heal(): Promise<void> {
    await nft(this.switchNs, `flush chain bridge ${TABLE} lab\n`);
  }

  /**
   * Starts `file args` inside node `name`'s namespace (`ip netns exec`, which
   * execs: the child's pid is the program's). The lab kills it at destroy.
   */
  spawn(name: string, file: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
    const node = this.node(name);
    const child = spawn('ip', ['netns', 'exec', node.netns, file, ...args], { stdio: 'pipe', ...options });
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  /** Runs `file args` inside node `name` and resolves with its output (SCRIPT_FAILED on a non-zero exit). */
  async run(name: string, file: string, args: readonly string[], timeoutMs = 20_000): Promise<string> {
    return (await runScript('ip', ['netns', 'exec', this.node(name).netns, file, ...args], { timeoutMs })).stdout;
  }

  /** Kills every process it started and deletes every namespace. Idempotent. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const c of this.#children) c.kill('SIGKILL');
    for (const ns of [...[...this.#nodes.values()].map((n) => n.netns), this.switchNs]) await removeNamespace(ns);
    live.delete(this);
  }

  /** What `destroy` does, synchronously (for the exit hook). */
  destroySync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const c of this.#children) c.kill('SIGKILL');
    for (const ns of [...[...this.#nodes.values()].map((n) => n.netns), this.switchNs]) removeNamespaceSync(ns);
    live.delete(this);
  }
}

/** SIGKILLs every process in namespace `ns`, then deletes it. Idempotent. */
export async function removeNamespace(ns: string): Promise<void> {
  if (!existsSync(`/run/netns/${ns}`)) return;
  const pids = (await runScript('ip', ['netns', 'pids', ns], { timeoutMs: 10_000 }).catch(() => ({ stdout: '' }))).stdout;
  for (const p of pids.split('\n').filter(Boolean)) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  await runScript('ip', ['netns', 'delete', ns], { timeoutMs: 10_000 }).catch(() => undefined);
}

function removeNamespaceSync(ns: string): void {
  if (!existsSync(`/run/netns/${ns}`)) return;
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
  for (const p of pids.split('\n').filter(Boolean)) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  spawnSync('ip', ['netns', 'delete', ns]);
}

/** Removes the namespaces of labs whose owner process is dead (a SIGKILLed test run). */
export function sweepStaleLabs(): string[] {
  if (!existsSync('/run/netns')) return [];
  const removed: string[] = [];
  for (const ns of readdirSync('/run/netns')) {
    const m = /^el(\d+)x\d+-/.exec(ns);
    if (!m) continue;
    const owner = Number(m[1]);
    if (owner === process.pid || alive(owner)) continue;
    removeNamespaceSync(ns);
    removed.push(ns);
  }
  return removed;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
