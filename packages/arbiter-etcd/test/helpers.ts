// Drives an etcd arbiter that runs in a lab host's namespace (test/driver.mjs).
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import type { LabNet } from '@remus/etcd-lab';
import type { EtcdArbiterEvent, EtcdArbiterOptions } from '../src/index.js';

const DRIVER = fileURLToPath(new URL('./driver.mjs', import.meta.url));

export interface RoleReport {
  readonly held: boolean;
  readonly epoch: number;
  /** CLOCK_MONOTONIC ms. */
  readonly deadline: number;
  readonly usable: boolean;
  readonly at: number;
}

export interface RemoteArbiter {
  readonly child: ChildProcess;
  readonly events: { event: EtcdArbiterEvent; at: number }[];
  readonly roles: RoleReport[];
  call<T = unknown>(op: 'acquire' | 'abort' | 'role' | 'resign' | 'leader' | 'close' | 'publish' | 'read', arg?: string): Promise<T>;
  /** The last role report with held true, or undefined. */
  lastHeld(): RoleReport | undefined;
  stop(): Promise<void>;
}

/** Starts an arbiter for host `node` of `net`; options as `etcdArbiter` takes them (minus onEvent). */
export function remoteArbiter(net: LabNet, node: string, options: Omit<EtcdArbiterOptions, 'onEvent'>): RemoteArbiter {
  const child = net.spawn(node, process.execPath, [DRIVER, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  const events: RemoteArbiter['events'] = [];
  const roles: RoleReport[] = [];
  let next = 0;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as { id?: number; ok?: boolean; result?: unknown; error?: { code: string; message: string }; event?: EtcdArbiterEvent; at?: number; role?: RoleReport };
    if (m.role) roles.push(m.role);
    else if (m.event) events.push({ event: m.event, at: m.at as number });
    else if (m.id !== undefined) {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.ok) p?.resolve(m.result);
      else p?.reject(Object.assign(new Error(m.error?.message), { code: m.error?.code }));
    }
  });
  child.once('exit', () => {
    for (const p of pending.values()) p.reject(new Error('arbiter driver exited'));
    pending.clear();
  });
  return {
    child,
    events,
    roles,
    call<T>(op: string, arg?: string): Promise<T> {
      const id = next++;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        child.stdin!.write(`${JSON.stringify({ id, op, arg })}\n`);
      });
    },
    lastHeld: () => [...roles].reverse().find((r) => r.held),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(child.pid as number, 'SIGCONT');
      } catch {
        // Gone.
      }
      child.stdin!.end();
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** CLOCK_MONOTONIC now, ms (the drivers' clock). */
export const mono = (): number => Number(process.hrtime.bigint()) / 1e6;
