/**
 * The nemesis lab: a three-member etcd cluster (`@remus/etcd-lab`), two host
 * namespaces `ha` and `hb` each running a `remus agent`, and a client node
 * `cl` recording every reply of the protected counter service. One lab
 * serves many scenarios: each scenario is a fresh pair (new cluster name,
 * so a new election prefix and new certificates) on the same etcd.
 *
 * Faults are real: nftables drops on the lab switch, SIGSTOP/SIGCONT and
 * SIGKILL of agent and etcd processes, and CPU starvation of an agent
 * through a cgroup v1 `cpu` quota (its timers run late).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RemusError } from '@remus/core';
import { createLabNet, startEtcdCluster, type EtcdCluster, type LabNet } from '@remus/etcd-lab';
import { initTrial, type AgentEvent } from '@remus/agent';
import { checkHistory, type CheckResult, type ClientReply, type HostRelease } from './checker.js';

const require = createRequire(import.meta.url);
const AGENT_BIN = join(dirname(require.resolve('@remus/agent/package.json')), 'dist', 'bin.js');
// The client runs from the built package (tests import src/ through vitest).
const CLIENT = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'client.js');
/** The stand-in hard fence (`node fence.js FILE CODE`). */
export const FENCE = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'fence.js');
export const HOSTS = ['ha', 'hb'] as const;
export type HostName = (typeof HOSTS)[number];
const PEER_PORT = 7790;
const SERVICE_PORT = 7800;

/** CLOCK_MONOTONIC ms, the clock of every timestamp in a history. */
export const mono = (): number => Number(process.hrtime.bigint()) / 1e6;

/** One fault as injected (for the totals and the failover figures). */
export interface Fault {
  readonly kind: string;
  readonly target: string;
  readonly at: number;
  end?: number;
}

export interface LabOptions {
  /** etcd members. Default 3. */
  readonly members?: number;
}

export class NemesisLab {
  readonly net: LabNet;
  readonly etcd: EtcdCluster;
  readonly dir: string;
  #scenarios = 0;
  readonly #cgroups = new Set<string>();

  private constructor(net: LabNet, etcd: EtcdCluster, dir: string) {
    this.net = net;
    this.etcd = etcd;
    this.dir = dir;
  }

  static async create(options: LabOptions = {}): Promise<NemesisLab> {
    const net = await createLabNet();
    try {
      const etcd = await startEtcdCluster(net, { members: options.members ?? 3 });
      for (const h of HOSTS) await net.addNode(h);
      await net.addNode('cl');
      return new NemesisLab(net, etcd, mkdtempSync(join(tmpdir(), 'remus-nemesis-')));
    } catch (e) {
      await net.destroy();
      throw e;
    }
  }

  /** A fresh pair on this lab (agents not started). */
  async scenario(o: { ttlSeconds: number; marginMs?: number; intervalMs?: number; hardFence?: readonly string[]; stepTimeoutMs?: number; service?: Record<string, unknown> }): Promise<Scenario> {
    const n = ++this.#scenarios;
    const cluster = `nem${process.pid}s${n}`;
    const dir = join(this.dir, cluster);
    await initTrial({ dir: join(dir, 'tls'), cluster, hosts: [...HOSTS] });
    const config = {
      cluster,
      hosts: HOSTS.map((h) => ({ name: h, peer: `${this.net.node(h).ip}:${PEER_PORT}`, service: `${this.net.node(h).ip}:${SERVICE_PORT}` })),
      etcd: { endpoints: this.etcd.endpoints },
      tls: { ca: 'tls/ca.crt', cert: 'tls/{host}.crt', key: 'tls/{host}.key' },
      ttlSeconds: o.ttlSeconds,
      ...(o.marginMs !== undefined ? { marginMs: o.marginMs } : {}),
      intervalMs: o.intervalMs ?? 30,
      stepTimeoutMs: o.stepTimeoutMs ?? 1000,
      stateDir: 'state/{host}',
      ...(o.hardFence ? { hardFence: { command: o.hardFence, timeoutMs: 5000 } } : {}),
      ...(o.service ? { service: o.service } : {}),
    };
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'agent.json');
    writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`);
    const sc = new Scenario(this, cluster, dir, file);
    sc.netOnly = o.service !== undefined;
    return sc;
  }

  /** Puts `pid` under a CPU quota of `percent` % (cgroup v1 cpu): its timers fire late. Returns the undo. */
  throttle(pid: number, percent: number): () => void {
    const cg = `/sys/fs/cgroup/cpu/rmnem-${process.pid}-${pid}`;
    mkdirSync(cg, { recursive: true });
    this.#cgroups.add(cg);
    writeFileSync(join(cg, 'cpu.cfs_period_us'), '100000');
    writeFileSync(join(cg, 'cpu.cfs_quota_us'), String(Math.max(1000, Math.round(percent * 1000))));
    writeFileSync(join(cg, 'cgroup.procs'), String(pid));
    return () => this.#unthrottle(cg);
  }

  #unthrottle(cg: string): void {
    if (!existsSync(cg)) return;
    const pids = readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
    for (const p of pids) {
      try {
        writeFileSync('/sys/fs/cgroup/cpu/cgroup.procs', p);
      } catch {
        // Gone.
      }
    }
    try {
      rmdirSync(cg);
    } catch {
      // Still busy: removed at destroy.
    }
    this.#cgroups.delete(cg);
  }

  /** Stops everything: agents and clients (with the lab's namespaces), etcd, cgroups, files. */
  async destroy(): Promise<void> {
    for (const cg of [...this.#cgroups]) this.#unthrottle(cg);
    await this.etcd.stop();
    await this.net.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A running agent process and what it said. */
export class AgentProc {
  readonly host: HostName;
  child: ChildProcess;
  readonly events: AgentEvent[];
  readonly stderr: string[] = [];
  #waiters = new Set<() => void>();

  constructor(host: HostName, child: ChildProcess, events: AgentEvent[]) {
    this.host = host;
    this.child = child;
    this.events = events;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line) as AgentEvent);
      } catch {
        this.stderr.push(line);
      }
      for (const w of [...this.#waiters]) w();
    });
    createInterface({ input: child.stderr! }).on('line', (l) => this.stderr.push(l));
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The current mode, from the last `mode` event. */
  get mode(): string | undefined {
    return [...this.events].reverse().find((e) => e.host === this.host && e.type === 'mode')?.mode as string | undefined;
  }

  /** Waits for an event matching `pred` (seen after index `since`). */
  waitEvent(pred: (e: AgentEvent) => boolean, timeoutMs: number, since = 0): Promise<AgentEvent> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const e = this.events.slice(since).find(pred);
        if (!e) return false;
        clearTimeout(t);
        this.#waiters.delete(w);
        resolve(e);
        return true;
      };
      const w = (): void => void check();
      const t = setTimeout(() => {
        this.#waiters.delete(w);
        reject(new RemusError('TIMEOUT', `agent ${this.host}: no matching event within ${timeoutMs} ms; last: ${this.events.slice(-5).map((e) => JSON.stringify(e)).join('\n')}\n${this.stderr.slice(-10).join('\n')}`));
      }, timeoutMs);
      this.#waiters.add(w);
      check();
    });
  }

  /** Ends with SIGCONT + SIGTERM (graceful), SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.signal('SIGCONT');
    this.signal('SIGTERM');
    const t = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
  }

  signal(sig: NodeJS.Signals): void {
    try {
      process.kill(this.pid, sig);
    } catch {
      // Gone.
    }
  }
}

/** One pair on the lab: its agents, its client, its faults and history. */
export class Scenario {
  readonly lab: NemesisLab;
  readonly cluster: string;
  readonly dir: string;
  readonly configFile: string;
  readonly agents = new Map<HostName, AgentProc>();
  /** Agents enter only the host's network namespace (a process workload; see startAgent). */
  netOnly = false;
  /** Every agent event of the scenario (all incarnations), in arrival order. */
  readonly events: AgentEvent[] = [];
  readonly replies: ClientReply[] = [];
  readonly faults: Fault[] = [];
  #client: ChildProcess | undefined;

  constructor(lab: NemesisLab, cluster: string, dir: string, configFile: string) {
    this.lab = lab;
    this.cluster = cluster;
    this.dir = dir;
    this.configFile = configFile;
  }

  /**
   * Starts (or restarts) the agent of `host`. With a `service` config (a process
   * workload) in the host's network namespace only (nsenter), not `ip netns exec`:
   * that remounts /sys, and the process domain needs the cgroup hierarchy under
   * /sys/fs/cgroup.
   */
  startAgent(host: HostName, configFile = this.configFile): AgentProc {
    const argv = [AGENT_BIN, 'run', '--config', configFile, '--host', host, '--json'];
    const child = this.netOnly
      ? spawn('nsenter', [`--net=/run/netns/${this.lab.net.node(host).netns}`, '--', process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
      : this.lab.net.spawn(host, process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const proc = new AgentProc(host, child, this.events);
    this.agents.set(host, proc);
    return proc;
  }

  agent(host: HostName): AgentProc {
    const a = this.agents.get(host);
    if (!a) throw new RemusError('STATE', `agent ${host} not started`);
    return a;
  }

  /** Starts `primary` first, waits until it is primary, then the other host and until it holds state. */
  async start(primary: HostName = 'ha'): Promise<void> {
    const backup = other(primary);
    const a = this.startAgent(primary);
    await a.waitEvent((e) => e.host === primary && e.type === 'mode' && e.mode === 'primary', 20_000);
    const b = this.startAgent(backup);
    await b.waitEvent((e) => e.host === backup && e.type === 'session', 20_000);
    this.startClient();
    await this.waitReplies(primary, 20, 10_000);
  }

  /**
   * Starts the client (a request every `periodMs` to each host); `named`: targets carry the host's name (for
   * replies without one); `connectMs`: a connection not established by then is tried again (default 500).
   */
  startClient(periodMs = 10, named = false, connectMs?: number): void {
    const targets = HOSTS.map((h) => `${named ? `${h}=` : ''}${this.lab.net.node(h).ip}:${SERVICE_PORT}`);
    const child = this.lab.net.spawn('cl', process.execPath, [CLIENT, String(periodMs), ...targets], {
      stdio: ['pipe', 'pipe', 'inherit'],
      ...(connectMs !== undefined ? { env: { ...process.env, NEMESIS_CONNECT_MS: String(connectMs) } } : {}),
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const r = JSON.parse(line) as ClientReply;
        if (typeof r.n === 'number') this.replies.push(r);
      } catch {
        // Not a reply.
      }
    });
    this.#client = child;
  }

  /** Waits until the client has `count` more replies from `host` (after now). */
  async waitReplies(host: HostName, count: number, timeoutMs: number, since = this.replies.length): Promise<void> {
    const until = performance.now() + timeoutMs;
    while (performance.now() < until) {
      if (this.replies.slice(since).filter((r) => r.h === host).length >= count) return;
      await sleep(50);
    }
    throw new RemusError('TIMEOUT', `scenario ${this.cluster}: fewer than ${count} replies from ${host} within ${timeoutMs} ms (replies since: ${this.replies.length - since}; modes: ${[...this.agents.values()].map((a) => `${a.host}=${a.mode}`).join(' ')})`);
  }

  /** The host currently primary (by the agents' last mode events), if one. */
  primary(): HostName | undefined {
    return HOSTS.find((h) => this.agents.get(h)?.alive && this.agents.get(h)?.mode === 'primary');
  }

  /** Records a fault; returns it (set `end` when it is undone). */
  fault(kind: string, target: string): Fault {
    const f: Fault = { kind, target, at: mono() };
    this.faults.push(f);
    return f;
  }

  /** The first reply of an epoch above `epoch` after `after` (failover end), or undefined. */
  firstReplyAbove(epoch: number, after: number): ClientReply | undefined {
    return this.replies.find((r) => r.e > epoch && r.at > after);
  }

  /** Highest epoch the client saw so far. */
  currentEpoch(): number {
    return this.replies.reduce((m, r) => Math.max(m, r.e), 0);
  }

  releases(): HostRelease[] {
    return this.events.filter((e) => e.type === 'release').map((e) => ({ host: e.host, epoch: e.epoch as number, checkpoint: e.checkpoint as number, count: e.count as number, first: e.first as number, last: e.last as number, from: e.from as number, to: e.to as number }));
  }

  check(): CheckResult {
    return checkHistory({ replies: this.replies, releases: this.releases() });
  }

  /** Stops the client and every agent (gracefully, then SIGKILL). */
  async stop(): Promise<void> {
    this.#client?.stdin?.end();
    this.#client?.kill('SIGKILL');
    await Promise.all([...this.agents.values()].map((a) => a.stop(3000)));
  }
}

export function other(h: HostName): HostName {
  return h === 'ha' ? 'hb' : 'ha';
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Appends one scenario's totals to $REMUS_NEMESIS_TOTALS (JSON lines), if set. */
export function recordTotals(x: { scenario: string; faults: number; histories: number; violations: number; failoverMs?: readonly number[]; ttlSeconds: number }): void {
  const file = process.env.REMUS_NEMESIS_TOTALS;
  if (!file) return;
  writeFileSync(file, `${JSON.stringify({ ...x, at: new Date().toISOString() })}\n`, { flag: 'a' });
}

