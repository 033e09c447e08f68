/**
 * `remus demo`: the whole thing end to end on one host, in namespaces it
 * makes and removes.
 *
 *   client netns (10.77.2.2) -- router netns (vif0 10.77.1.1 | cl0 10.77.2.1) -- guest netns (10.77.1.2)
 *
 * The guest (a UDP echo service) runs under the process domain, in its own
 * cgroup, frozen at each checkpoint; its NIC's host side (`vif0` in the
 * router namespace) is protected by the best NIC subkind available
 * (nic-netbuf, else nic-nfqueue). The client sends requests; every reply
 * carries the time the guest sent it. Output commit is checked: a reply sent
 * during epoch N must not reach the client before checkpoint N was
 * acknowledged by the backup (after which commit releases it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { RemusError, newOperationId, runScript, type DomainAdapter, type RealtimeMode } from '@remus/core';
import type { ProcessDomain } from '@remus/domain-process';
import { validateConfig, type RemusConfig } from '../config.js';
import { Journal } from '../journal.js';
import type { Io } from '../io.js';
import { ip, netnsExists, removeNetns } from '../netns.js';
import { criuSummary, loadDomainProcess } from '../libs.js';
import { CLI_DIR, buildOps, installCommand, type BuiltOps } from '../plugins.js';
import { ProgressView, RunFigures, ms, percentile, type ViewMode } from '../progress.js';
import { runProtected } from '../run.js';
import { criuFailoverBlocker, runCriuFailover, type CriuFailoverResult } from './criu-failover.js';

export interface DemoOptions {
  /** How long the client sends requests, ms. */
  readonly durationMs: number;
  /** Checkpoint interval, ms. */
  readonly intervalMs: number;
  readonly mode: ViewMode;
  readonly stateDir: string;
  readonly io: Io;
  /**
   * Protect no NIC (like `xl remus -n`): replies leave the host unbuffered,
   * so the output-commit check must find violations. Shows that the check
   * can fail; the demo then exits non-zero.
   */
  readonly noNetBuffer?: boolean;
  /** The checkpoint loop's scheduling (`RemusConfig.realtime`). Default `auto`. */
  readonly realtime?: RealtimeMode;
}

/** The subkinds the demo tries, best first. */
const NIC_PLUGINS = [
  { package: '@remus/nic-netbuf', subkind: 'nic-netbuf' },
  { package: '@remus/nic-nfqueue', subkind: 'nic-nfqueue' },
];
const PORT = 7000;
/** Marks the child that runs the demo inside its router namespace (internal: set by {@link runDemo}). */
const INSIDE_ROUTER_ENV = 'REMUS_DEMO_INSIDE_ROUTER';
/** The child's file descriptor whose end says the `remus demo` the user started is gone. */
const LIFELINE_FD = 3;
/** Set for the demo that runs inside its router namespace (see {@link runDemo}). */
const INSIDE_ROUTER = process.env[INSIDE_ROUTER_ENV] === '1';
const GUEST_IP = '10.77.1.2';
/** Client request period, ms. */
const PERIOD_MS = 5;

/** The demo's result, as printed. */
export interface DemoSummary {
  readonly ok: boolean;
  readonly operation: string;
  readonly nic: string | undefined;
  readonly declined: readonly { subkind: string; reason: string }[];
  readonly checkpoints: number;
  readonly rate: number;
  readonly pauseP50Ms: number;
  readonly pauseP99Ms: number;
  readonly packetsHeldMax: number;
  readonly packetsReleased: number;
  readonly packetsDropped: number;
  readonly requestsSent: number;
  readonly repliesReceived: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  readonly violations: number;
  readonly cleanedUp: boolean;
  readonly leftovers: readonly string[];
  /** The CRIU failover: shown where CRIU works on this kernel (see criu-failover.ts), else why not. */
  readonly criu: ({ readonly shown: true } & CriuFailoverResult) | { readonly shown: false; readonly reason: string };
  readonly error?: string;
}

/** Finds a compiled helper script beside this module or in dist/ (when running from src). */
function script(name: string): string {
  const here = fileURLToPath(new URL(`./${name}.js`, import.meta.url));
  if (existsSync(here)) return here;
  return fileURLToPath(new URL(`../../dist/demo/${name}.js`, import.meta.url));
}

/**
 * Runs the demo; resolves with the exit code (0 only if no violation, replies arrived, and nothing is left).
 *
 * The router namespace plays the host that runs Remus, and the demo runs inside it, as Remus
 * runs in the namespace of the guests' interfaces on a real host: `remus demo` starts itself
 * again with `unshare --net` (a fresh namespace, which the child names as the router) and
 * passes its output, exit code and SIGINT/SIGTERM through. So the NIC subkinds work on an
 * interface of their own namespace (nic-nfqueue buffers in-process: no helper process per
 * checkpoint op). Killing `remus demo` kills the child (it watches a pipe from its parent),
 * leaving what the journal names for `remus cleanup`, as before. Where `unshare` cannot be
 * started, not as root, or when `io` is not this process's output, the demo runs here, with
 * its router a namespace of its own and the NIC reached in it (so does REMUS_DEMO_IN_PLACE=1,
 * which the benchmark uses to compare the two).
 */
export async function runDemo(o: DemoOptions): Promise<number> {
  // Not as root, `unshare --net` cannot work either: the demo in place says what it needs.
  const root = process.getuid?.() === 0;
  if (!INSIDE_ROUTER && root && process.env['REMUS_DEMO_IN_PLACE'] !== '1' && o.io.out === process.stdout && o.io.err === process.stderr) {
    const code = await runInRouter(o);
    if (code !== undefined) return code;
  }
  if (INSIDE_ROUTER) watchLifeline();
  return runDemoHere(o);
}

/** Starts this command again inside a fresh network namespace; its exit code, or undefined when `unshare` cannot start. */
function runInRouter(o: DemoOptions): Promise<number | undefined> {
  const bin = fileURLToPath(new URL('../bin.js', import.meta.url));
  const args = [
    'demo',
    '--duration',
    String(o.durationMs),
    '--interval',
    String(o.intervalMs),
    ...(o.mode === 'json' ? ['--json'] : []),
    '--state-dir',
    o.stateDir,
    ...(o.noNetBuffer ? ['--no-net-buffer'] : []),
    ...(o.realtime ? ['--realtime', o.realtime] : []),
  ];
  const child = spawn('unshare', ['--net', '--', process.execPath, ...process.execArgv, bin, ...args], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    env: { ...process.env, [INSIDE_ROUTER_ENV]: '1' },
  });
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve) => {
    let started = false;
    child.on('spawn', () => (started = true));
    child.on('error', (e: NodeJS.ErrnoException) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      // No `unshare`: the demo runs in this process.
      resolve(!started && e.code === 'ENOENT' ? undefined : 1);
    });
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve(code ?? (signal === 'SIGINT' || signal === 'SIGTERM' ? 130 : 137));
    });
  });
}

/** In the child: when the `remus demo` the user started dies, this one dies with it (SIGKILL: what was made stays journaled for `remus cleanup`). */
function watchLifeline(): void {
  let life: Socket;
  try {
    life = new Socket({ fd: LIFELINE_FD, readable: true, writable: false });
  } catch {
    return; // Started without one (by hand): nothing to watch.
  }
  const die = (): void => {
    process.kill(process.pid, 'SIGKILL');
  };
  life.on('end', die);
  life.on('error', die);
  life.resume();
  life.unref();
}

async function runDemoHere(o: DemoOptions): Promise<number> {
  const { io } = o;
  const operation = newOperationId();
  const ns = { guest: `remus-demo-${operation}-g`, router: `remus-demo-${operation}-r`, client: `remus-demo-${operation}-c` };
  const figures = new RunFigures();
  const view = new ProgressView(o.mode, io.out as never, figures);

  // Packages first: nothing is touched if what the demo needs is not installed.
  await loadDomainProcess('remus demo (the process domain)');
  const built = o.noNetBuffer ? { ops: [], plugins: [], used: [] } : await loadNicPlugins();
  if (!o.noNetBuffer && built.used.length === 0) {
    const pkg = NIC_PLUGINS.map((p) => p.package).at(-1) as string;
    throw new RemusError('PLUGIN_NOT_FOUND', `remus demo needs a NIC plugin (${NIC_PLUGINS.map((p) => p.package).join(' or ')}) next to remus, and none is installed: install one with \`${installCommand(pkg)}\`, or everything with \`${installCommand('@remus/all')}\` (or run with --no-net-buffer)`, {
      details: { plugin: pkg, for: 'remus demo' },
    });
  }
  const config: RemusConfig = validateConfig(
    {
      intervalMs: o.intervalMs,
      realtime: o.realtime ?? 'auto',
      domain: {
        type: 'process',
        command: ['ip', 'netns', 'exec', ns.guest, process.execPath, script('guest'), String(PORT)],
        ack: { type: 'local' },
      },
      plugins: built.used.map((p) => ({ package: p.package, subkinds: { [p.subkind]: {} } })),
      // The demo runs inside the router namespace (see runDemo): vif0 is in its own namespace, as a guest's
      // interface is on a real host, and NIC subkinds work there without a helper process.
      devices: o.noNetBuffer ? [] : [{ id: 'guest0', kind: 'nic', params: { ifname: 'vif0', ...(INSIDE_ROUTER ? {} : { netns: ns.router }) } }],
    },
    'demo',
  );
  const journal = Journal.create(
    o.stateDir,
    operation,
    'demo',
    config.plugins.map((p, i) => ({ package: p.package, from: built.plugins[i]?.from ?? CLI_DIR, subkinds: p.subkinds })),
    // As seen from outside (where `remus cleanup` runs): the NIC is in the router namespace.
    config.devices.map((d) => (INSIDE_ROUTER ? { ...d, params: { ...d.params, netns: ns.router } } : d)),
    'command',
    // Inside the router the run lives as long as the `remus demo` the user started (this process's parent).
    INSIDE_ROUTER ? process.ppid : process.pid,
  );

  let stop: AbortController | undefined;
  let interrupted: string | undefined;
  let client: ChildProcess | undefined;
  const criuStop = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    // A terminal's Ctrl-C reaches this process twice inside the router (the terminal's and the one passed on).
    if (interrupted) return;
    interrupted = sig;
    view.say(`${sig}: stopping the demo and cleaning up`);
    stop?.abort();
    criuStop.abort(new RemusError('ABORTED', `remus demo interrupted by ${sig}`));
    client?.kill('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const frozenAt = new Map<number, number>();
  const ackedAt = new Map<number, number>();
  let heldMax = 0;
  let chosen: string | undefined;
  let declined: { subkind: string; reason: string }[] = [];
  let clientResult: Promise<ClientReport | undefined> = Promise.resolve(undefined);
  let setupError: string | undefined;
  let outcome: Awaited<ReturnType<typeof runProtected>> | undefined;
  try {
    await buildNetwork(ns, journal);
    view.say(`network: client ${ns.client} -> router ${ns.router} (vif0) -> guest ${ns.guest} ${GUEST_IP}:${PORT}`);
    if (!interrupted) {
      outcome = await runProtected(
        {
          config,
          source: 'demo',
          pluginDirs: [CLI_DIR],
          stateDir: o.stateDir,
          view,
          command: 'demo',
          journal,
          operation,
          stdio: ['ignore', 'pipe', 'inherit'],
          handleSignals: false,
          wrapDomain: (d) => recordTimes(d, frozenAt, ackedAt),
          onCheckpoint: (_f, devices) => {
            for (const s of devices.stats()) heldMax = Math.max(heldMax, s.stats.held ?? 0);
          },
          onRunning: ({ domain, devices, stop: s }) => {
            const a = devices.assignments()[0];
            chosen = a?.subkind;
            declined = [...(a?.declined ?? [])];
            stop = s;
            if (interrupted) s.abort();
            clientResult = startClient(domain, ns.client, o, journal, (c) => (client = c)).finally(() => s.abort());
          },
        },
        built,
      );
    }
  } catch (e) {
    setupError = (e as Error).message;
  } finally {
    client?.kill('SIGTERM');
  }
  let clientError: string | undefined;
  const report = await clientResult.catch((e: unknown) => {
    clientError = (e as Error).message;
    return undefined;
  });
  if (!report && !clientError && outcome?.ok && !interrupted) clientError = 'the client printed no report';
  // Namespaces go last: the run removed its own rules, cgroup and processes.
  const leftovers: string[] = [];
  for (const name of Object.values(ns)) {
    try {
      await removeNetns(name);
    } catch (e) {
      leftovers.push(`network namespace ${name}: ${(e as Error).message}`);
    }
  }
  leftovers.push(...(await findLeftovers(operation, ns)));

  // Then the Remus path with real state, where CRIU works here: one line says which.
  let criuPart: DemoSummary['criu'] = { shown: false, reason: interrupted ? `interrupted by ${interrupted}` : 'not with --no-net-buffer (its output commit needs the NIC buffered)' };
  if (!interrupted && !o.noNetBuffer) {
    const criu = await criuSummary('remus demo (the CRIU check)');
    const blocker = criu.works ? criuFailoverBlocker(chosen) : criu.line;
    if (blocker !== undefined) {
      view.say(`CRIU failover not shown: ${criu.works ? `CRIU ${criu.line}, but ${blocker}` : blocker}; the process domain was shown`);
      criuPart = { shown: false, reason: blocker };
    } else {
      view.say(`CRIU: ${criu.line}; now the failover with real state: a service protected with its memory, its primary killed, restored on the backup with its client's TCP connection`);
      const r = await runCriuFailover({ operation, stateDir: o.stateDir, journal, say: (l) => view.say(l), signal: criuStop.signal });
      criuPart = { shown: true, ...r };
      leftovers.push(...r.leftovers);
    }
  }
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (leftovers.length === 0 && (outcome?.clean ?? true)) journal.remove();
  else leftovers.push(`journal kept: ${journal.path} (run \`remus cleanup\`)`);

  const s = outcome?.summary ?? figures.summary();
  const replies = report?.replies ?? [];
  const violations = countViolations(replies, frozenAt, ackedAt);
  const latencies = replies.map((r) => r.r - (report?.sentAt[r.n] ?? r.r));
  const summary: DemoSummary = {
    ok: false,
    operation,
    nic: chosen,
    declined,
    checkpoints: s.checkpoints,
    rate: s.rate,
    pauseP50Ms: s.pauseP50Ms,
    pauseP99Ms: s.pauseP99Ms,
    packetsHeldMax: heldMax,
    packetsReleased: s.devices.released ?? 0,
    packetsDropped: s.devices.dropped ?? 0,
    requestsSent: report?.sentAt.length ?? 0,
    repliesReceived: replies.length,
    latencyP50Ms: percentile(latencies, 0.5),
    latencyP99Ms: percentile(latencies, 0.99),
    violations,
    cleanedUp: leftovers.length === 0,
    leftovers,
    criu: criuPart,
    ...(setupError || outcome?.error || clientError ? { error: setupError ?? (outcome?.error ? `[${outcome.error.code}] ${outcome.error.message}` : clientError) } : {}),
  };
  const ok =
    !interrupted &&
    summary.error === undefined &&
    summary.violations === 0 &&
    summary.repliesReceived > 0 &&
    summary.checkpoints > 0 &&
    summary.cleanedUp &&
    (!criuPart.shown || criuPart.ok);
  const final = { ...summary, ok, ...(interrupted ? { interrupted } : {}) };
  if (o.mode === 'json') view.event('demo-summary', final);
  else io.out.write(formatSummary(final, o.intervalMs));
  return ok ? 0 : 1;
}

/** Loads the NIC plugins that are installed, best first; the demo's ops list. */
async function loadNicPlugins(): Promise<BuiltOps & { used: typeof NIC_PLUGINS }> {
  const loaded: BuiltOps[] = [];
  const used: typeof NIC_PLUGINS = [];
  for (const p of NIC_PLUGINS) {
    try {
      loaded.push(await buildOps([{ package: p.package, subkinds: { [p.subkind]: {} } }], [], [CLI_DIR], 'demo'));
      used.push(p);
    } catch {
      // Not installed: the next one.
    }
  }
  return { ops: loaded.flatMap((b) => b.ops), plugins: loaded.flatMap((b) => b.plugins), used };
}

/** Wraps the domain to record, per checkpoint, when the guest was frozen and when the backup acknowledged. */
function recordTimes(d: ProcessDomain, frozenAt: Map<number, number>, ackedAt: Map<number, number>): DomainAdapter {
  const now = (): number => performance.timeOrigin + performance.now();
  return {
    name: d.name,
    async suspend(ctx) {
      await d.suspend(ctx);
      frozenAt.set(ctx.checkpoint, now());
    },
    save: (ctx) => d.save(ctx),
    resume: (ctx) => d.resume(ctx),
    async waitAck(ctx) {
      await d.waitAck(ctx);
      ackedAt.set(ctx.checkpoint, now());
    },
  };
}

interface ClientReport {
  readonly sentAt: number[];
  readonly replies: { n: number; k: number; g: number; r: number }[];
}

/**
 * A reply the guest sent at time g belongs to the first epoch N whose freeze
 * came after g; it may reach the client only after checkpoint N was
 * acknowledged (commit, which releases it, starts after that). A reply of an
 * epoch that was never checkpointed must not arrive at all.
 */
export function countViolations(replies: readonly { g: number; r: number }[], frozenAt: ReadonlyMap<number, number>, ackedAt: ReadonlyMap<number, number>): number {
  const epochs = [...frozenAt.entries()].sort((a, b) => a[0] - b[0]);
  let violations = 0;
  for (const reply of replies) {
    const epoch = epochs.find(([, t]) => t >= reply.g);
    const acked = epoch ? ackedAt.get(epoch[0]) : undefined;
    if (acked === undefined || reply.r < acked) violations++;
  }
  return violations;
}

/** Makes the three namespaces and links them; each name is in the journal before it exists. */
async function buildNetwork(ns: { guest: string; router: string; client: string }, journal: Journal): Promise<void> {
  for (const name of [ns.router, ns.guest, ns.client]) {
    journal.addNetns(name);
    // Inside the router: this process's own (fresh) namespace gets the router's name.
    await ip(name === ns.router && INSIDE_ROUTER ? ['netns', 'attach', name, String(process.pid)] : ['netns', 'add', name]);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
  }
  await ip(['-n', ns.router, 'link', 'add', 'vif0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.guest]);
  await ip(['-n', ns.router, 'link', 'add', 'cl0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.client]);
  await ip(['-n', ns.router, 'addr', 'add', '10.77.1.1/24', 'dev', 'vif0']);
  await ip(['-n', ns.router, 'addr', 'add', '10.77.2.1/24', 'dev', 'cl0']);
  await ip(['-n', ns.guest, 'addr', 'add', `${GUEST_IP}/24`, 'dev', 'eth0']);
  await ip(['-n', ns.client, 'addr', 'add', '10.77.2.2/24', 'dev', 'eth0']);
  for (const [n, dev] of [[ns.router, 'vif0'], [ns.router, 'cl0'], [ns.guest, 'eth0'], [ns.client, 'eth0']] as const) {
    await ip(['-n', n, 'link', 'set', dev, 'up']);
  }
  await ip(['-n', ns.guest, 'route', 'add', 'default', 'via', '10.77.1.1']);
  await ip(['-n', ns.client, 'route', 'add', 'default', 'via', '10.77.2.1']);
  // /proc/sys/net is per namespace: tee, run inside the router namespace, turns forwarding on there.
  await runScript('ip', ['netns', 'exec', ns.router, 'tee', '/proc/sys/net/ipv4/ip_forward'], { input: '1\n', timeoutMs: 30_000 });
}

/** Waits for the guest's `ready`, then runs the client to completion and parses its report. */
async function startClient(domain: ProcessDomain, clientNs: string, o: DemoOptions, journal: Journal, onChild: (c: ChildProcess) => void): Promise<ClientReport | undefined> {
  const stdout = domain.stdout;
  if (!stdout) return undefined;
  await new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: stdout });
    const timer = setTimeout(() => reject(new Error('the guest service did not start within 10 s')), 10_000);
    lines.on('line', (l) => {
      if (l.trim() === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
    lines.on('close', () => reject(new Error('the guest service exited before it was ready')));
  });
  const drainMs = Math.max(500, 6 * o.intervalMs);
  const child = spawn('ip', ['netns', 'exec', clientNs, process.execPath, script('client'), GUEST_IP, String(PORT), String(o.durationMs), String(PERIOD_MS), String(drainMs)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (child.pid !== undefined) journal.addProcess(child.pid, 'demo client');
  onChild(child);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  await new Promise<void>((resolve) => child.on('close', () => resolve()));
  try {
    return JSON.parse(out) as ClientReport;
  } catch {
    return undefined;
  }
}

/** Anything of this demo still on the host: namespaces, cgroups, the journal's resources. */
async function findLeftovers(operation: string, ns: Record<string, string>): Promise<string[]> {
  const left: string[] = [];
  for (const name of Object.values(ns)) if (netnsExists(name)) left.push(`network namespace ${name}`);
  for (const root of ['/sys/fs/cgroup/freezer', '/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    if (existsSync(`${root}/remus-${operation}`)) left.push(`cgroup ${root}/remus-${operation}`);
  }
  const rules = await ipTablesRules(operation);
  left.push(...rules);
  return left;
}

/** iptables rules in the host namespace tagged with the operation (the demo's rules live in its namespaces). */
async function ipTablesRules(operation: string): Promise<string[]> {
  try {
    const r = await runScript('iptables-save', [], { timeoutMs: 10_000 });
    return r.stdout.split('\n').filter((l) => l.includes(operation)).map((l) => `iptables rule ${l}`);
  } catch {
    return [];
  }
}

function criuLines(c: CriuFailoverResult): string[] {
  const f = (v: number | null): string => (v === null || !Number.isFinite(v) ? '-' : ms(v));
  return [
    `  CRIU failover: ${c.ok ? 'passed' : 'FAILED'}: checkpoint ${c.restoredCheckpoint ?? '-'} restored (primary's last committed: ${c.lastCommitted ?? '-'}), criu restore ${f(c.restoreMs)}, kill to first reply on the same connection ${f(c.killToFirstReplyMs)}`,
    `                 ${c.checkpoints} checkpoints, pause p50 ${f(c.pauseP50Ms)}; dumps ${c.dumps.full} full (p50 ${f(c.dumps.fullMedianMs)}, ${c.dumps.fullMedianBytes} bytes) and ${c.dumps.incremental} incremental (p50 ${f(c.dumps.incrementalMedianMs)}, ${c.dumps.incrementalMedianBytes} bytes)`,
    `                 client: ${c.replies} replies on one connection (${c.repliesBeforeKill} before the kill)${c.connectionBroke ? ', the connection BROKE' : ''}, ${c.sequenceErrors} gaps or repeats in the counter, ${c.early} of ${c.judged} replies before their checkpoint's acknowledgement`,
    ...(c.error ? [`                 error: ${c.error}`] : []),
  ];
}

function formatSummary(s: DemoSummary & { interrupted?: string }, intervalMs: number): string {
  const lines = [
    '',
    `remus demo ${s.ok ? 'PASSED' : 'FAILED'} (operation ${s.operation})`,
    `  protection:   process domain (cgroup freezer, in-process backup on this host) + ${s.nic ?? 'no NIC subkind'}${s.declined.length ? ` (${s.declined.map((d) => `${d.subkind} declined: ${d.reason}`).join('; ')})` : ''}`,
    `  checkpoints:  ${s.checkpoints} at ${intervalMs} ms intervals (${s.rate.toFixed(1)}/s)`,
    `  pause:        p50 ${ms(s.pauseP50Ms)}, p99 ${ms(s.pauseP99Ms)}`,
    `  packets:      held at most ${s.packetsHeldMax} at a commit, released ${s.packetsReleased}, dropped ${s.packetsDropped}`,
    `  client:       ${s.requestsSent} requests, ${s.repliesReceived} replies, latency p50 ${ms(s.latencyP50Ms)}, p99 ${ms(s.latencyP99Ms)}`,
    `  output commit: ${s.violations} violation(s) in ${s.repliesReceived} replies (reply received before its epoch was acknowledged)`,
    ...(s.criu.shown ? criuLines(s.criu) : []),
    `  cleanup:      ${s.cleanedUp ? 'nothing left (namespaces, cgroup, rules, journal removed)' : `LEFT: ${s.leftovers.join('; ')}`}`,
    ...(s.error ? [`  error:        ${s.error}`] : []),
    ...(s.interrupted ? [`  interrupted by ${s.interrupted}`] : []),
    '',
  ];
  return lines.join('\n');
}
