/**
 * Test environment: real QEMU processes (qemu-system-x86_64, qemu-img and
 * qemu-nbd from apt; no guest OS) in temp dirs, killed by PID and removed by
 * `stop()`. Each QEMU gets two QMP monitors: [0] for the subkinds (or a
 * fault proxy in front of it), [1] for the test's own inspection.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as netModule from 'node:net';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DeviceSpec } from '@remus/core';
import { connectQmp, type QmpClient } from '@remus/qmp';
import { coloPrimaryMachine, coloSecondaryMachine, freePorts, qcow2, startQemu, waitFor } from '@remus/test-lab';

export interface Proc {
  readonly pid: number;
  readonly process: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
}

function launch(cmd: string, args: readonly string[], cwd: string): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    pid: child.pid!,
    process: child,
    stderr: () => err,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

export interface TestQemu extends Proc {
  readonly dir: string;
  /** [0]: for the code under test; [1]: for inspection. */
  readonly qmp: readonly [string, string];
  /** A client on monitor [1], for inspection. */
  readonly inspect: QmpClient;
}

const tracked: { stop(): Promise<void> }[] = [];
/** Stops everything started through this module (call in afterAll/afterEach). */
export async function stopAll(): Promise<void> {
  for (const t of tracked.splice(0)) await t.stop();
}

export function tempDir(tag: string): { dir: string; stop(): Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), `remus-colo-${tag}-${process.pid}-`));
  const t = { dir, stop: async () => rmSync(dir, { recursive: true, force: true }) };
  tracked.push(t);
  return t;
}

function image(dir: string, name: string): string {
  return qcow2(dir, name);
}

/** A QEMU of test-lab in its own temp folder, plus a QMP client on monitor [1]; both stopped by {@link stopAll}. */
async function startTestQemu(tag: 'pri' | 'sec', machine: (dir: string) => string[]): Promise<TestQemu> {
  const { dir } = tempDir(tag);
  const q = await startQemu({ dir, name: tag, machine: machine(dir) });
  const p: Proc = { pid: q.pid, process: q.child, stderr: q.stderr, stop: q.stop };
  tracked.unshift(p); // stopped before its dir is removed
  const inspect = await connectQmp(q.qmp[1], { timeoutMs: 20_000 });
  tracked.unshift({ stop: () => inspect.close() });
  return { ...p, dir, qmp: q.qmp, inspect };
}

/** A primary-shaped QEMU: netdev `hn0`, guest disk `colo-disk0` = quorum over a qcow2 image. */
export function startPrimary(): Promise<TestQemu> {
  return startTestQemu('pri', (dir) => coloPrimaryMachine(dir));
}

/**
 * A secondary-shaped QEMU per COLO-FT.txt: netdev `hn0`, `parent0`, replication (secondary) over active/hidden images, quorum `colo-disk0`;
 * with `incoming` (e.g. `tcp:127.0.0.1:4444`) it waits for a migration there, as a COLO secondary does.
 */
export function startSecondary(options: { incoming?: string } = {}): Promise<TestQemu> {
  return startTestQemu('sec', (dir) => coloSecondaryMachine(dir, options));
}

/** A qemu-nbd server exporting a scratch image as `name` on 127.0.0.1:port (stands in for a secondary's export). */
export async function startNbd(port: number, name: string): Promise<Proc> {
  const { dir } = tempDir('nbd');
  const p = launch('qemu-nbd', ['-f', 'qcow2', '-x', name, '-b', '127.0.0.1', '-p', String(port), '-e', '8', '-t', image(dir, 'nbd.qcow2')], dir);
  tracked.unshift(p);
  await waitFor(() => canConnect(port), 5000, `qemu-nbd listening on 127.0.0.1:${port}`, () => p.stderr());
  return p;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netModule.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * COLO device specs for a primary and a secondary from env's QEMUs: nic `nic0` on netdev hn0 (proxy on `mirror`/`compare` ports,
 * the primary's local loops as unix sockets in `priDir`) and disk `disk0` (the secondary exports parent0 on `nbd`).
 */
export function pairDevices(priDir: string, ports: { mirror: number; compare: number; nbd: number }): { primary: DeviceSpec[]; secondary: DeviceSpec[] } {
  const at = (port: number) => ({ host: '127.0.0.1', port });
  return {
    secondary: [
      { id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(ports.mirror), compare: at(ports.compare) } },
      { id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at(ports.nbd), export: 'parent0', quorum: 'colo-disk0' } },
    ],
    primary: [
      {
        id: 'nic0',
        kind: 'nic',
        params: { netdev: 'hn0', mirror: at(ports.mirror), compare: at(ports.compare), primaryIn: { path: join(priDir, 'pri.sock') }, compareOut: { path: join(priDir, 'out.sock') } },
      },
      { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: at(ports.nbd), export: 'parent0' } },
    ],
  };
}

export { freePorts };

/** Everything of a QEMU that COLO set-up may touch, as sorted lists; equal snapshots mean "left as it was". */
export interface Snapshot {
  objects: string[];
  chardevs: string[];
  nodes: string[];
  exports: string[];
  edges: string[];
  filters: string[];
  nbdServer: boolean;
}

export async function snapshot(q: TestQemu): Promise<Snapshot> {
  const c = q.inspect;
  const [objects, chardevs, nodes, exports, graph, network] = await Promise.all([
    c.execute<{ name: string }[]>('qom-list', { path: '/objects' }),
    c.execute<{ label: string }[]>('query-chardev'),
    c.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true }),
    c.execute<{ id: string; 'node-name': string }[]>('query-block-exports'),
    c.execute<{ nodes: { id: number; name: string }[]; edges: { parent: number; child: number; name: string }[] }>('x-debug-query-block-graph'),
    c.hmp('info network'),
  ]);
  const name = (id: number) => graph.nodes.find((n) => n.id === id)?.name ?? String(id);
  return {
    objects: objects.map((o) => o.name).sort(),
    chardevs: chardevs.map((x) => x.label).sort(),
    nodes: nodes.map((n) => n['node-name']).sort(),
    exports: exports.map((e) => `${e.id}:${e['node-name']}`).sort(),
    edges: graph.edges.map((e) => `${name(e.parent)} -${e.name}-> ${name(e.child)}`).sort(),
    filters: network.split(/\r?\n/).filter((l) => /^\s+- /.test(l)).map((l) => l.trim()).sort(),
    nbdServer: await nbdServerRunning(c),
  };
}

/** QEMU 7.2 has no query for the NBD server: starting one on an unused unix path tells (and is undone at once). */
async function nbdServerRunning(c: QmpClient): Promise<boolean> {
  const probe = join(tmpdir(), `remus-colo-nbdprobe-${process.pid}-${Math.random().toString(36).slice(2)}.sock`);
  try {
    await c.execute('nbd-server-start', { addr: { type: 'unix', data: { path: probe } } });
  } catch (e) {
    if (/already running/i.test((e as Error).message)) return true;
    throw e;
  } finally {
    rmSync(probe, { force: true });
  }
  await c.execute('nbd-server-stop');
  return false;
}

/** Differences from `base` as readable lines (for the conformance kit's `leftovers`). */
export function diff(base: Snapshot, now: Snapshot): string[] {
  const out: string[] = [];
  for (const k of Object.keys(base) as (keyof Snapshot)[]) {
    const b = base[k];
    const n = now[k];
    if (Array.isArray(b) && Array.isArray(n)) {
      for (const x of n) if (!b.includes(x)) out.push(`${k}: extra ${x}`);
      for (const x of b) if (!n.includes(x)) out.push(`${k}: missing ${x}`);
    } else if (b !== n) out.push(`${k}: was ${String(b)}, now ${String(n)}`);
  }
  return out;
}

// ---------------------------------------------------------------------------
// A QMP proxy for fault injection: sits between a client and a real QEMU
// monitor, logs every command, and can fail or swallow the Nth changing
// command, or rewrite answers (to fake a QEMU lacking a feature).

export const CHANGING = new Set([
  'chardev-add',
  'chardev-remove',
  'object-add',
  'object-del',
  'human-monitor-command',
  'x-blockdev-change',
  'blockdev-add',
  'blockdev-del',
  'nbd-server-start',
  'nbd-server-stop',
  'block-export-add',
  'block-export-del',
]);

export interface ProxyOptions {
  /** Fail the Nth set-up command (1-based, counting commands in CHANGING that add something). */
  failAt?: number;
  /** `refuse`: answer an error without forwarding. `lost`: forward, then swallow QEMU's answer (the client times out). */
  mode?: 'refuse' | 'lost';
  /** Called with the count when a set-up command passes (before it is forwarded). */
  onAdd?: (count: number) => void;
  /** Rewrites an answer before it reaches the client. */
  rewrite?: (command: string, answer: any) => any;
}

export interface QmpProxy {
  readonly path: string;
  /** Every command the client sent, in order. */
  readonly log: string[];
  /** Set-up commands seen (adds), for choosing failAt. */
  readonly adds: number;
  /** Sends an event to the connected client as if QEMU had emitted it. */
  emit(event: Record<string, unknown>): void;
  close(): Promise<void>;
}

const ADDS = new Set(['chardev-add', 'object-add', 'x-blockdev-change', 'blockdev-add', 'nbd-server-start', 'block-export-add']);

function isAdd(msg: { execute: string; arguments?: Record<string, unknown> }): boolean {
  if (msg.execute === 'human-monitor-command') return String(msg.arguments?.['command-line'] ?? '').startsWith('drive_add');
  if (msg.execute === 'x-blockdev-change') return msg.arguments?.['node'] !== undefined;
  return ADDS.has(msg.execute);
}

/** Calls `each` with every non-empty line (trimmed) that arrives on `socket` (utf8). */
function onLines(socket: Socket, each: (line: string) => void): void {
  let buf = '';
  socket.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) each(line);
    }
  });
}

export async function startProxy(target: string, options: ProxyOptions = {}): Promise<QmpProxy> {
  const { dir } = tempDir('proxy');
  const path = join(dir, 'proxy.sock');
  const log: string[] = [];
  let adds = 0;
  const sockets = new Set<Socket>();
  const clients = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    clients.add(client);
    client.on('close', () => clients.delete(client));
    const upstream = netModule.connect({ path: target });
    sockets.add(upstream);
    const pending = new Map<unknown, { command: string; swallow: boolean }>();
    client.setEncoding('utf8');
    upstream.setEncoding('utf8');
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', closeBoth).on('error', closeBoth);
    upstream.on('close', closeBoth).on('error', closeBoth);
    onLines(upstream, (line) => {
      let msg = JSON.parse(line);
      const p = 'id' in msg ? pending.get(msg.id) : undefined;
      if (p) {
        pending.delete(msg.id);
        if (p.swallow) return;
        if (options.rewrite) msg = options.rewrite(p.command, msg);
      }
      client.write(JSON.stringify(msg) + '\r\n');
    });
    onLines(client, (line) => {
      const msg = JSON.parse(line);
      log.push(msg.execute === 'human-monitor-command' ? `hmp ${String(msg.arguments['command-line']).split(' ')[0]}` : msg.execute);
      let swallow = false;
      if (isAdd(msg)) {
        adds++;
        options.onAdd?.(adds);
        if (adds === options.failAt) {
          if ((options.mode ?? 'refuse') === 'refuse') {
            client.write(JSON.stringify({ error: { class: 'GenericError', desc: `injected failure at step ${adds} (${msg.execute})` }, id: msg.id }) + '\r\n');
            return;
          }
          swallow = true;
        }
      }
      pending.set(msg.id, { command: msg.execute, swallow });
      upstream.write(line + '\n');
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  const proxy: QmpProxy = {
    path,
    log,
    get adds() {
      return adds;
    },
    emit(event) {
      for (const c of clients) c.write(JSON.stringify(event) + '\r\n');
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  tracked.unshift({ stop: () => proxy.close() });
  return proxy;
}


/** A qemu-storage-daemon (same QEMU 7.2 build, a QMP server without COLO, net filters or migration): a real QEMU lacking the features. */
export async function startStorageDaemon(): Promise<{ qmp: string }> {
  const { dir } = tempDir('qsd');
  const qmp = join(dir, 'qsd.sock');
  const p = launch('qemu-storage-daemon', ['--chardev', `socket,path=${qmp},server=on,wait=off,id=m0`, '--monitor', 'chardev=m0'], dir);
  tracked.unshift(p);
  await waitFor(() => existsSync(qmp), 10_000, 'qemu-storage-daemon QMP socket', () => p.stderr());
  return { qmp };
}
