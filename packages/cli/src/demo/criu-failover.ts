/**
 * The demo's CRIU failover, shown where CRIU works on the running kernel:
 * the Remus path with real state, through the `remus` command itself.
 *
 *   C (client 10.77.3.1) -- S (bridge; the primary's port `sp` is buffered) -- P (primary 10.77.3.2, service 10.77.3.100)
 *                                                                          `-- B (backup 10.77.3.3)
 *
 * Four network namespaces stand for the client, the switch and two hosts. A
 * counter service whose only state is its memory (a python3 one-file
 * service) runs in P; the client in C keeps ONE TCP connection and sends a
 * request every 20 ms. `remus backup --domain criu --on-primary-lost
 * failover` runs in B; `remus run` protects the service with a criu domain
 * (CRIU dumps, incremental after the first) and nic-netbuf on P's switch
 * port (its output held until each checkpoint is acknowledged). After a few
 * checkpoints the primary dies: its link is cut and the service and `remus
 * run` are SIGKILLed. The backup restores the service from the last
 * acknowledged checkpoint with its TCP connection and takes the service
 * address. Checked: the same connection goes on, the counter the client
 * saw has no gap and no repeat, and no reply reached the client before its
 * checkpoint was acknowledged. Then everything is removed: the restored
 * service, the killed run's leftovers (`remus cleanup` of its journal), the
 * namespaces and the image directories.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { RemusError, describeCause, pollUntil, processAlive, sleep } from '@remus/core';
import { cleanupAll } from '../cleanup.js';
import type { Journal } from '../journal.js';
import { loadDomainProcess } from '../libs.js';
import { ip, netnsExists, removeNetns } from '../netns.js';
import { percentile } from '../progress.js';

/** The service: one TCP connection, each request line answered with `<counter> <request> <wall ms when sent>`. */
export const COUNTER_SERVICE_PY = [
  'import socket, sys, time',
  'srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)',
  'srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  'srv.bind((sys.argv[1], int(sys.argv[2])))',
  'srv.listen(1)',
  'conn, _ = srv.accept()',
  'counter = 0',
  "buf = b''",
  'while True:',
  '    data = conn.recv(4096)',
  '    if not data:',
  '        break',
  '    buf += data',
  "    while b'\\n' in buf:",
  "        line, buf = buf.split(b'\\n', 1)",
  '        counter += 1',
  "        conn.sendall(b'%d %s %.3f\\n' % (counter, line, time.time() * 1000))",
].join('\n');

const SERVICE = '10.77.3.100';
const PORT = 7101;
/** Checkpoints committed before the primary is killed. */
const CHECKPOINTS_BEFORE_KILL = 5;
/** Replies on the same connection after the failover before the client stops. */
const REPLIES_AFTER = 20;
/** Bounds, ms: generous, as a lab guest under emulation takes seconds per dump. */
const BOUND = { backupReady: 180_000, connect: 60_000, firstCheckpoints: 300_000, failover: 180_000, replies: 120_000, exit: 30_000 };

export interface CriuFailoverOptions {
  readonly operation: string;
  /** The demo's state directory: the images and the primary's own state go in a subdirectory, removed at the end. */
  readonly stateDir: string;
  /** The demo's journal: namespaces and processes are recorded before they exist. */
  readonly journal: Journal;
  readonly say: (line: string) => void;
  readonly signal: AbortSignal;
}

/** What the CRIU failover showed; `ok` only when every check held and nothing was left. */
export interface CriuFailoverResult {
  readonly ok: boolean;
  readonly checkpoints: number;
  readonly pauseP50Ms: number;
  readonly dumps: { readonly full: number; readonly incremental: number; readonly fullMedianMs: number; readonly incrementalMedianMs: number; readonly fullMedianBytes: number; readonly incrementalMedianBytes: number };
  /** The primary's last committed checkpoint, and the one the backup restored (the same, or the next when the primary died between ack and commit). */
  readonly lastCommitted: number | null;
  readonly restoredCheckpoint: number | null;
  readonly restoreMs: number | null;
  /** From the kill to the first reply on the same connection. */
  readonly killToFirstReplyMs: number | null;
  readonly replies: number;
  readonly repliesBeforeKill: number;
  /** Replies whose counter was not the next one (a gap or a repeat), or that answered another request. */
  readonly sequenceErrors: number;
  readonly connectionBroke: boolean;
  /** Replies of the primary's protected epochs judged for output commit, and those that arrived before their checkpoint's acknowledgement. */
  readonly judged: number;
  readonly early: number;
  readonly leftovers: readonly string[];
  readonly error?: string;
}

/** Why the CRIU failover cannot be shown here (beyond CRIU itself), or undefined. */
export function criuFailoverBlocker(nic: string | undefined): string | undefined {
  if (nic !== 'nic-netbuf') return `it holds the primary's output with nic-netbuf (sch_plug), and this host protected the demo with ${nic ?? 'no NIC subkind'}`;
  if (!onPath('python3')) return 'its counter service is a python3 script and python3 is not on PATH (install python3)';
  return undefined;
}

function onPath(name: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && existsSync(join(d, name)));
}

/** A compiled file of the CLI (from dist, also when running from src). */
function cliFile(rel: string): string {
  const here = fileURLToPath(new URL(`../${rel}`, import.meta.url));
  return existsSync(here) ? here : fileURLToPath(new URL(`../../dist/${rel}`, import.meta.url));
}

/** A child whose stdout lines are collected; waits are bounded and abortable. */
class Lines {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  #closed = false;

  /** `detached`: its own session, no pipes to this process (what CRIU dumps must not point outside its tree). */
  constructor(readonly name: string, argv: readonly string[], o: { echo?: (line: string) => void; detached?: boolean } = {}) {
    this.child = spawn(argv[0] as string, argv.slice(1), o.detached ? { stdio: 'ignore', detached: true } : { stdio: ['pipe', 'pipe', 'inherit'] });
    this.exited = new Promise((r) =>
      this.child.on('close', (code, signal) => {
        this.#closed = true;
        r({ code, signal });
      }),
    );
    this.child.on('error', () => undefined);
    this.child.stdin?.on('error', () => undefined);
    if (this.child.stdout) {
      createInterface({ input: this.child.stdout }).on('line', (l) => {
        this.lines.push(l);
        o.echo?.(l);
      });
    }
  }

  /** False once it exited and its output was read to the end. */
  get running(): boolean {
    return !this.#closed;
  }

  /** JSON lines of a `--json` remus command. */
  events(): Record<string, any>[] {
    const out: Record<string, any>[] = [];
    for (const l of this.lines) {
      if (!l.startsWith('{')) continue;
      try {
        out.push(JSON.parse(l) as Record<string, any>);
      } catch {
        // Not an event.
      }
    }
    return out;
  }

  /** The first line from index `from` on that `test` accepts. */
  async waitLine(test: (l: string) => boolean, timeoutMs: number, what: string, signal: AbortSignal, from = 0): Promise<string> {
    return pollUntil(() => this.lines.slice(from).find(test) ?? (this.running ? undefined : Promise.reject(this.#ended(what))), {
      what: `${this.name}: ${what}`,
      timeoutMs,
      intervalMs: 20,
      signal,
      describe: () => this.lines.slice(-3).join(' | ') || '(no output)',
    });
  }

  /** The first event of `type` (or undefined while there is none). */
  async waitEvent(type: string, timeoutMs: number, what: string, signal: AbortSignal): Promise<Record<string, any>> {
    return JSON.parse(await this.waitLine((l) => l.includes(`"type":"${type}"`), timeoutMs, what, signal)) as Record<string, any>;
  }

  #ended(what: string): RemusError {
    return new RemusError('STATE', `${this.name} exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}; last output: ${this.lines.slice(-3).join(' | ') || '(none)'}`);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

const median = (a: readonly number[]): number => percentile(a, 0.5);

/** Runs the CRIU failover end to end and removes everything it made; never throws (the error is in the result). */
export async function runCriuFailover(o: CriuFailoverOptions): Promise<CriuFailoverResult> {
  const { operation, journal, say, signal } = o;
  const ns = { p: `remus-demo-${operation}-p`, b: `remus-demo-${operation}-b`, c: `remus-demo-${operation}-c`, s: `remus-demo-${operation}-s` };
  const work = join(o.stateDir, `demo-criu-${operation}`);
  const runState = join(work, 'state');
  const socketPath = join(work, 'backup.sock');
  const remus = [process.execPath, cliFile('bin.js')];
  const inNs = (name: string, argv: readonly string[]): string[] => ['nsenter', `--net=/run/netns/${name}`, '--', ...argv];
  const children: Lines[] = [];
  const start = (name: string, argv: readonly string[], what: string, detached = false): Lines => {
    const l = new Lines(name, argv, { detached });
    children.push(l);
    if (l.child.pid !== undefined) journal.addProcess(l.child.pid, what);
    return l;
  };
  let restoredPid: number | undefined;
  let run: Lines | undefined;
  let client: Lines | undefined;
  let backup: Lines | undefined;
  let killedAt: number | undefined;
  let repliesBeforeKill = 0;
  let failoverResult: Record<string, any> | undefined;
  let error: string | undefined;

  try {
    mkdirSync(runState, { recursive: true, mode: 0o700 });
    await buildNetwork(ns, journal, signal);
    say(`CRIU failover: client ${ns.c} -> switch ${ns.s} -> primary ${ns.p} (service ${SERVICE}:${PORT}) | backup ${ns.b}`);

    backup = start('backup', inNs(ns.b, [...remus, 'backup', '--domain', 'criu', '--dir', join(work, 'backup'), '--listen', socketPath, '--silence-ms', '3000', '--on-primary-lost', 'failover', '--service-address', `${SERVICE}/24`, '--dev', 'b0', '--json']), 'demo criu backup');
    await backup.waitEvent('listening', BOUND.backupReady, 'listening (CRIU checked on this host)', signal);

    // CRIU dumps the service with its session and open files: its own session, no pipe to this process.
    const service = start('service', inNs(ns.p, ['python3', '-c', COUNTER_SERVICE_PY, SERVICE, String(PORT)]), 'demo criu service', true);
    client = start('client', inNs(ns.c, [process.execPath, cliFile('demo/criu-client.js'), SERVICE, String(PORT), '20']), 'demo criu client');
    await client.waitLine((l) => l.startsWith('REPLY'), BOUND.connect, 'a first reply from the service', signal);
    say('CRIU failover: the client has one TCP connection to the service and gets replies');

    const config = {
      intervalMs: 200,
      domainTimeoutMs: 180_000,
      domain: { type: 'criu', pid: service.child.pid, workDir: join(work, 'primary'), backup: { path: socketPath }, netns: ns.p },
      plugins: [{ package: '@remus/nic-netbuf', subkinds: { 'nic-netbuf': {} } }],
      devices: [{ id: 'svc0', kind: 'nic', params: { ifname: 'sp', netns: ns.s } }],
    };
    writeFileSync(join(work, 'remus.json'), JSON.stringify(config, null, 2), { mode: 0o600 });
    run = start('primary', [...remus, 'run', '--config', join(work, 'remus.json'), '--state-dir', runState, '--json'], 'demo criu primary (remus run)');
    const domainEvent = await run.waitEvent('domain', BOUND.backupReady, 'the criu domain', signal);
    await run.waitEvent('setup', BOUND.backupReady, 'nic-netbuf set up', signal);
    await pollUntil(() => run!.events().filter((e) => e.type === 'checkpoint').length >= CHECKPOINTS_BEFORE_KILL || (run!.running ? undefined : Promise.reject(new RemusError('STATE', `remus run exited early: ${run!.lines.slice(-3).join(' | ')}`))), {
      what: `remus run: ${CHECKPOINTS_BEFORE_KILL} checkpoints`,
      timeoutMs: BOUND.firstCheckpoints,
      intervalMs: 50,
      signal,
    });
    say(`CRIU failover: remus run committed ${CHECKPOINTS_BEFORE_KILL} checkpoints (CRIU dumps sent to the backup, output held until each was acknowledged); killing the primary`);

    // The primary host dies: its link, the service and remus run at once.
    killedAt = Date.now();
    repliesBeforeKill = client.lines.filter((l) => l.startsWith('REPLY')).length;
    await ip(['-n', ns.p, 'link', 'set', 'p0', 'down'], signal);
    service.kill();
    run.kill();
    // A frozen task dies only once thawed (a dead host takes everything; here the kernel lives on):
    // the run's cgroup is reaped the way `remus cleanup` reaps a dead run's.
    const cgroup = String(domainEvent.cgroup ?? '');
    const runOperation = /\/remus-([^/]+)$/.exec(cgroup)?.[1];
    if (runOperation !== undefined) await (await loadDomainProcess('remus demo (the CRIU failover)')).cleanupOperationCgroup({ operation: runOperation, path: cgroup, mode: 'reap', signal });
    await pollUntil(() => !service.running || undefined, { what: 'the killed service to exit', timeoutMs: 10_000, intervalMs: 20, signal });
    await run.exited;

    const fo = JSON.parse(await backup.waitLine((l) => /"type":"(failover|failover-failed)"/.test(l), BOUND.failover, 'the failover', signal)) as Record<string, any>;
    if (fo.type !== 'failover') throw new RemusError('STATE', `the backup's failover failed: ${fo.message}`);
    failoverResult = fo.result as Record<string, any>;
    restoredPid = Number(failoverResult.pid);
    journal.addProcess(restoredPid, 'demo criu restored service');
    say(`CRIU failover: ${fo.message}`);

    const from = client.lines.length;
    await client.waitLine((l) => l.startsWith('REPLY'), BOUND.replies, 'a reply from the restored service', signal, from);
    const want = client.lines.filter((l) => l.startsWith('REPLY')).length + REPLIES_AFTER;
    await pollUntil(() => client!.lines.filter((l) => l.startsWith('REPLY')).length >= want || undefined, { what: `client: ${REPLIES_AFTER} more replies`, timeoutMs: BOUND.replies, intervalMs: 20, signal });
    client.child.stdin?.write('stop\n');
    await client.waitLine((l) => l.startsWith('CLIENT_DONE'), BOUND.exit, 'its end', signal);
  } catch (e) {
    error = e instanceof RemusError ? `[${e.code}] ${e.message}` : describeCause(e);
  }

  // Figures and checks, from what the primary, the backup and the client printed.
  const committed = run?.events().filter((e) => e.type === 'checkpoint') ?? [];
  const dumps = run?.events().filter((e) => e.type === 'dump') ?? [];
  const full = dumps.filter((d) => d.parent === null);
  const inc = dumps.filter((d) => d.parent !== null);
  const lines = client?.lines ?? [];
  const replies = lines.filter((l) => l.startsWith('REPLY')).map((l) => l.split(' '));
  let sequenceErrors = 0;
  replies.forEach((r, i) => {
    if (r[2] !== String(i + 1) || r[3] !== `r${i + 1}`) sequenceErrors++;
  });
  const lastCommitted = committed.at(-1)?.checkpoint ?? null;
  const restoredCheckpoint = failoverResult ? Number(failoverResult.checkpoint) : null;
  const { judged, early } = judgeOutputCommit(replies, committed, killedAt, restoredCheckpoint, lastCommitted);
  const firstAfter = firstReplyFromBackup(replies, committed, killedAt);

  const leftovers = await removeAll({ ns, work, runState, children, restoredPid });
  const result: CriuFailoverResult = {
    ok: false,
    checkpoints: committed.length,
    pauseP50Ms: median(committed.map((c) => Number(c.pauseMs))),
    dumps: {
      full: full.length,
      incremental: inc.length,
      fullMedianMs: median(full.map((d) => Number(d.dumpMs))),
      incrementalMedianMs: median(inc.map((d) => Number(d.dumpMs))),
      fullMedianBytes: median(full.map((d) => Number(d.bytes))),
      incrementalMedianBytes: median(inc.map((d) => Number(d.bytes))),
    },
    lastCommitted,
    restoredCheckpoint,
    restoreMs: failoverResult ? Number(failoverResult.restoreMs) : null,
    killToFirstReplyMs: firstAfter !== undefined && killedAt !== undefined ? firstAfter - killedAt : null,
    replies: replies.length,
    repliesBeforeKill,
    sequenceErrors,
    connectionBroke: lines.some((l) => l === 'EOF' || l.startsWith('ERROR')),
    judged,
    early,
    leftovers,
    ...(error !== undefined ? { error } : {}),
  };
  const ok =
    error === undefined &&
    result.connectionBroke === false &&
    sequenceErrors === 0 &&
    replies.length >= repliesBeforeKill + REPLIES_AFTER &&
    judged > 0 &&
    early === 0 &&
    restoredCheckpoint !== null &&
    lastCommitted !== null &&
    restoredCheckpoint >= lastCommitted &&
    leftovers.length === 0;
  return { ...result, ok };
}

/**
 * Output commit, per reply: a reply the service sent at t belongs to the
 * first checkpoint frozen after t (a frozen service sends nothing) and may
 * reach the client only after that checkpoint was acknowledged. Replies sent
 * before protection began or by the restored service are not judged; nor
 * are those of epochs the backup acknowledged after the primary's last
 * commit (the restored service holds them and sends them again, later).
 */
export function judgeOutputCommit(
  replies: readonly string[][],
  committed: readonly Record<string, any>[],
  killedAt: number | undefined,
  restoredCheckpoint: number | null,
  lastCommitted: number | null,
): { judged: number; early: number } {
  if (committed.length === 0 || killedAt === undefined) return { judged: 0, early: 0 };
  const frozen = committed.map((c) => ({ frozenAt: Number(c.suspendedAt) + Number(c.steps?.suspend ?? 0), ackedAt: Number(c.ackedAt) }));
  const firstSuspend = Number(committed[0]?.suspendedAt);
  let judged = 0;
  let early = 0;
  for (const r of replies) {
    const arrived = Number(r[1]);
    const sentAt = Number(r[4]);
    if (!(sentAt >= firstSuspend) || sentAt >= killedAt) continue;
    const epoch = frozen.find((f) => f.frozenAt > sentAt);
    if (!epoch && restoredCheckpoint !== null && lastCommitted !== null && restoredCheckpoint > lastCommitted && arrived >= killedAt) continue;
    judged++;
    // Python's time.time() and node's wall clock on one kernel; 5 ms for rounding.
    if (!epoch || arrived + 5 < epoch.ackedAt) early++;
  }
  return { judged, early };
}

/**
 * When the first reply of the restored service arrived: the first reply to
 * arrive after the kill that the primary did not release, i.e. sent after
 * the kill, or sent in an epoch the primary never committed (the restored
 * socket sends those again). Replies the primary released just before the
 * kill can still be on their way; they do not count.
 */
export function firstReplyFromBackup(replies: readonly string[][], committed: readonly Record<string, any>[], killedAt: number | undefined): number | undefined {
  if (killedAt === undefined) return undefined;
  const lastFrozen = Math.max(...committed.map((c) => Number(c.suspendedAt) + Number(c.steps?.suspend ?? 0)));
  const r = replies.find((x) => Number(x[1]) >= killedAt && !(Number(x[4]) < killedAt && Number(x[4]) < lastFrozen));
  return r === undefined ? undefined : Number(r[1]);
}

/** Four namespaces: a bridge in S, one veth port each for C, P and B; each name in the journal before it exists. */
async function buildNetwork(ns: { p: string; b: string; c: string; s: string }, journal: Journal, signal: AbortSignal): Promise<void> {
  for (const name of [ns.s, ns.p, ns.b, ns.c]) {
    journal.addNetns(name);
    await ip(['netns', 'add', name], signal);
    await ip(['-n', name, 'link', 'set', 'lo', 'up'], signal);
  }
  await ip(['-n', ns.s, 'link', 'add', 'br0', 'type', 'bridge'], signal);
  await ip(['-n', ns.s, 'link', 'set', 'br0', 'up'], signal);
  for (const [name, dev, port, addr] of [
    [ns.c, 'c0', 'sc', '10.77.3.1/24'],
    [ns.p, 'p0', 'sp', '10.77.3.2/24'],
    [ns.b, 'b0', 'sb', '10.77.3.3/24'],
  ] as const) {
    await ip(['-n', ns.s, 'link', 'add', port, 'type', 'veth', 'peer', 'name', dev, 'netns', name], signal);
    await ip(['-n', ns.s, 'link', 'set', port, 'master', 'br0', 'up'], signal);
    await ip(['-n', name, 'addr', 'add', addr, 'dev', dev], signal);
    await ip(['-n', name, 'link', 'set', dev, 'up'], signal);
  }
  await ip(['-n', ns.p, 'addr', 'add', `${SERVICE}/24`, 'dev', 'p0'], signal);
}

/** Removes everything of the CRIU failover; returns what could not be removed. */
async function removeAll(o: { ns: Record<string, string>; work: string; runState: string; children: Lines[]; restoredPid: number | undefined }): Promise<string[]> {
  const left: string[] = [];
  for (const c of o.children) c.kill();
  if (o.restoredPid !== undefined && processAlive(o.restoredPid)) {
    try {
      process.kill(o.restoredPid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  await Promise.all(o.children.map((c) => Promise.race([c.exited, sleep(5000)])));
  // The killed primary's own leftovers (its cgroup; its IFB and qdisc go with the switch namespace): what `remus cleanup` does.
  if (existsSync(o.runState)) {
    try {
      for (const r of await cleanupAll(o.runState)) if (r.status !== 'cleaned') left.push(`primary journal ${r.journal}: ${r.status} ${r.errors.join('; ')}`);
    } catch (e) {
      left.push(`primary state ${o.runState}: ${describeCause(e)}`);
    }
  }
  for (const name of Object.values(o.ns)) {
    try {
      await removeNetns(name);
    } catch (e) {
      left.push(`network namespace ${name}: ${describeCause(e)}`);
    }
    if (netnsExists(name)) left.push(`network namespace ${name}`);
  }
  if (o.restoredPid !== undefined && processAlive(o.restoredPid)) left.push(`restored service pid ${o.restoredPid}`);
  try {
    rmSync(o.work, { recursive: true, force: true });
  } catch (e) {
    left.push(`directory ${o.work}: ${describeCause(e)}`);
  }
  return left;
}
