/**
 * A real etcd cluster (Debian's `etcd-server`, 3.4) of N members, each in its
 * own namespace of a {@link LabNet}: started, health-checked, killed,
 * restarted with its data, and removed with its data directories.
 */
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RemusError, describeCause } from '@remus/core';
import type { LabNet, LabNode } from './net.js';

export interface EtcdClusterOptions {
  /** Number of members. Default 3. */
  readonly members?: number;
  /** etcd binary. Default `etcd` ($REMUS_ETCD overrides). */
  readonly etcd?: string;
  /** etcdctl binary. Default `etcdctl`. */
  readonly etcdctl?: string;
  /** Raft heartbeat, ms. Default 100 (etcd's). */
  readonly heartbeatMs?: number;
  /** Raft election timeout, ms. Default 1000 (etcd's). */
  readonly electionTimeoutMs?: number;
  /** Time for the cluster to become healthy, ms. Default 30 000. */
  readonly startTimeoutMs?: number;
}

interface Member {
  readonly node: LabNode;
  readonly dataDir: string;
  child: ChildProcess | undefined;
}

/** Starts an N-member cluster on `net` (members named e1..eN) and waits until it is healthy. */
export async function startEtcdCluster(net: LabNet, options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const n = options.members ?? 3;
  const cluster = new EtcdCluster(net, options);
  try {
    for (let i = 1; i <= n; i++) await cluster.addMember(`e${i}`);
    for (const m of cluster.memberNames) cluster.start(m);
    await cluster.waitHealthy(options.startTimeoutMs ?? 30_000);
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}

export class EtcdCluster {
  readonly net: LabNet;
  readonly #options: EtcdClusterOptions;
  readonly #members = new Map<string, Member>();
  readonly #dir = mkdtempSync(join(tmpdir(), 'remus-etcd-'));
  readonly #token = `remus-${process.pid}-${Date.now()}`;

  constructor(net: LabNet, options: EtcdClusterOptions) {
    this.net = net;
    this.#options = options;
  }

  get memberNames(): string[] {
    return [...this.#members.keys()];
  }

  /** `ip:2379` of every member (what an arbiter's `endpoints` takes). */
  get endpoints(): string[] {
    return [...this.#members.values()].map((m) => `${m.node.ip}:2379`);
  }

  /** The directory with each member's data and log (`<name>.log`). */
  get dir(): string {
    return this.#dir;
  }

  async addMember(name: string): Promise<void> {
    const node = await this.net.addNode(name);
    this.#members.set(name, { node, dataDir: join(this.#dir, name), child: undefined });
  }

  /** Pid of a running member; undefined when stopped. */
  pid(name: string): number | undefined {
    const c = this.#member(name).child;
    return c && c.exitCode === null && c.signalCode === null ? c.pid : undefined;
  }

  /** Starts (or restarts, with its data) member `name`. */
  start(name: string): void {
    const m = this.#member(name);
    if (this.pid(name) !== undefined) return;
    const cluster = [...this.#members.values()].map((x) => `${x.node.name}=http://${x.node.ip}:2380`).join(',');
    const ip = m.node.ip;
    const log = createWriteStream(join(this.#dir, `${name}.log`), { flags: 'a' });
    const child = this.net.spawn(name, this.#options.etcd ?? process.env.REMUS_ETCD ?? 'etcd', [
      '--name', name,
      '--data-dir', m.dataDir,
      '--listen-peer-urls', `http://${ip}:2380`,
      '--initial-advertise-peer-urls', `http://${ip}:2380`,
      '--listen-client-urls', `http://${ip}:2379,http://127.0.0.1:2379`,
      '--advertise-client-urls', `http://${ip}:2379`,
      '--initial-cluster', cluster,
      '--initial-cluster-token', this.#token,
      '--initial-cluster-state', 'new',
      '--heartbeat-interval', String(this.#options.heartbeatMs ?? 100),
      '--election-timeout', String(this.#options.electionTimeoutMs ?? 1000),
      '--logger', 'zap',
      '--log-outputs', 'stderr',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr?.pipe(log);
    m.child = child;
  }

  /** Sends `signal` to member `name` (SIGKILL: it is gone until {@link start}; SIGSTOP/SIGCONT pause it). */
  kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): void {
    this.#member(name);
    const pid = this.pid(name);
    if (pid !== undefined) process.kill(pid, signal);
  }

  /** Waits until every running member answers `endpoint health` (asked from inside the first running member's namespace). */
  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    const until = performance.now() + timeoutMs;
    let last = '';
    const running = this.memberNames.filter((n) => this.pid(n) !== undefined);
    const eps = running.map((n) => `${this.#member(n).node.ip}:2379`);
    while (performance.now() < until) {
      const at = running.find((n) => this.pid(n) !== undefined);
      if (at === undefined) break;
      try {
        await this.net.run(at, this.#options.etcdctl ?? 'etcdctl', ['--endpoints', eps.join(','), '--dial-timeout', '1s', '--command-timeout', '2s', 'endpoint', 'health'], 10_000);
        return;
      } catch (e) {
        last = describeCause(e) ?? '';
      }
      await sleep(200);
    }
    throw new RemusError('TIMEOUT', `etcd cluster ${this.net.id} not healthy within ${timeoutMs} ms (${last.slice(-400)}); logs in ${this.#dir}`);
  }

  /** Runs etcdctl inside member `at`'s namespace against every member. */
  etcdctl(at: string, args: readonly string[]): Promise<string> {
    return this.net.run(at, this.#options.etcdctl ?? 'etcdctl', ['--endpoints', this.endpoints.join(','), ...args]);
  }

  /** Kills every member and removes the data directories. Idempotent. The lab network stays (the caller destroys it). */
  async stop(): Promise<void> {
    for (const name of this.memberNames) {
      const m = this.#member(name);
      const c = m.child;
      if (c && c.exitCode === null && c.signalCode === null) {
        try {
          process.kill(c.pid as number, 'SIGCONT');
        } catch {
          // Gone.
        }
        c.kill('SIGKILL');
        await new Promise<void>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('exit', () => resolve())));
      }
      m.child = undefined;
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }

  #member(name: string): Member {
    const m = this.#members.get(name);
    if (!m) throw new RemusError('INVALID_ARGUMENT', `no etcd member ${JSON.stringify(name)} (members: ${this.memberNames.join(', ')})`);
    return m;
  }
}
