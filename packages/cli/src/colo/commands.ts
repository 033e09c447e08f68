/**
 * `remus colo`: run a QEMU COLO pair with @remus/colo's driver.
 *
 * - `start PAIR.json`: validates the pair file, connects both QEMUs, starts
 *   replication and stays in the foreground (this process is the watchdog),
 *   serving the control socket. SIGINT/SIGTERM detach (the pair keeps
 *   replicating, unwatched) or, with `--stop-on-exit`, stop.
 * - `status`: from the driver over the control socket; with no driver, asks
 *   both QEMUs (`query-colo-status`, `query-migrate`, `query-status`).
 * - `failover --to SIDE`, `stop`: through the driver (so fencing happens).
 * - `reprotect PAIR.json`: like `start`, for a pair whose `primary` is the
 *   survivor of a failover (running, serving) and whose `secondary` is a
 *   fresh QEMU: @remus/colo's `reprotect` (disk mirror, then COLO).
 */
import { performance } from 'node:perf_hooks';
import { RemusError, describeCause, newOperationId, validateName } from '@remus/core';
import type { ColoAutoReprotect, ColoDriverEvent, ColoPair, ColoRole, ColoStatus } from '@remus/colo';
import type { SocketAddress as QmpAddress } from '@remus/core';
import { processStart } from '../journal.js';
import { loadColo, loadQmp } from '../libs.js';
import { args, viewMode } from '../args.js';
import { cleanupRun } from '../cleanup.js';
import { Journal, stateDir } from '../journal.js';
import { runLifecycle } from '../lifecycle.js';
import type { Io } from '../io.js';
import { CLI_DIR } from '../plugins.js';
import { ProgressView, RunFigures, ms } from '../progress.js';
import { CliErrors, controlSocketNames, controlSocketPath, requestControl, socketLive, type ControlRequest, type ControlResult } from './control.js';
import { coloHaStatusCommand } from './ha-status.js';
import { pairFromHook } from './auto-reprotect.js';
import { loadPairConfig, type ColoPairConfig } from './pair.js';
import { SIDE_USAGE, coloSide } from './side.js';

export const COLO_USAGE = `  remus colo start PAIR.json [--json] [--state-dir DIR] [--stop-on-exit]
  remus colo status [PAIR.json | --name NAME] [--json] [--state-dir DIR]
  remus colo status --etcd HOST:PORT,... --prefix PREFIX [--json]   (a pair across two hosts: epoch, role holder, protected)
  remus colo failover --to primary|secondary [PAIR.json | --name NAME] [--json] [--state-dir DIR]
  remus colo stop [PAIR.json | --name NAME] [--json] [--state-dir DIR]
  remus colo reprotect PAIR.json [--json] [--state-dir DIR] [--stop-on-exit]   (after a failover: "primary" = the survivor, "secondary" = a fresh QEMU)
${SIDE_USAGE}`;

const COMMON = { json: { type: 'boolean' }, 'state-dir': { type: 'string' }, name: { type: 'string' } } as const;

/** `remus colo SUBCOMMAND ...`. */
export async function cmdColo(rest: readonly string[], io: Io): Promise<number> {
  const [sub, ...more] = rest;
  switch (sub) {
    case 'start':
      return coloStart(more, io);
    case 'reprotect':
      return coloStart(more, io, 'reprotect');
    case 'status':
      return coloStatus(more, io);
    case 'failover':
    case 'stop':
      return coloRequest(sub, more, io);
    case 'side':
      return coloSide(more, io);
    case undefined:
    case '--help':
    case 'help':
      io.out.write(`usage:\n${COLO_USAGE}`);
      return sub === undefined ? 2 : 0;
    default:
      throw new RemusError('INVALID_ARGUMENT', `unknown colo command ${JSON.stringify(sub)}; use start, status, failover, stop, reprotect or side`);
  }
}

/** A driver event as plain JSON (errors as their JSON form). */
export function coloEventBody(e: ColoDriverEvent): Record<string, unknown> {
  return e.type === 'error' ? { type: 'error', error: e.error.toJSON() } : { ...e };
}

/** The human line of a driver event (as sent over the control socket too). */
export function coloEventText(e: Record<string, unknown>): string {
  switch (e.type) {
    case 'step':
      return `${String(e.side)}: ${String(e.step)} (${ms(Number(e.ms))})`;
    case 'state':
      return `state: ${String(e.state)}`;
    case 'checkpoint':
      return `checkpoint ${String(e.index)}: pause ${ms(Number(e.pauseMs))}${e.onDemand ? ' (on demand: outputs diverged)' : ''}`;
    case 'peer-failure':
      return `WATCHDOG: the ${String(e.side)} failed: ${String(e.why)}`;
    case 'failover':
      return `failover to the ${String(e.survivor)} done in ${ms(Number(e.ms))} (${String(e.why)})`;
    case 'error': {
      const err = e.error as { code?: string; message?: string };
      return `error: [${err.code ?? 'OP_FAILED'}] ${err.message ?? ''}`;
    }
    default:
      return JSON.stringify(e);
  }
}

/** Shows a driver event: its JSON event (`--json`) or its line. */
function show(view: ProgressView, e: Record<string, unknown>): void {
  const { type, ...body } = e;
  view.event(String(type), body);
  view.say(coloEventText(e));
}

/** The lines of a driver status. */
export function formatColoStatus(s: ColoStatus): string {
  const lines = [
    `state: ${s.state}, serving: ${s.active}`,
    `checkpoints: ${s.checkpoints} (${s.onDemandCheckpoints} on demand)`,
    `pause: p50 ${ms(s.pauseMs.p50 ?? Number.NaN)}, p99 ${ms(s.pauseMs.p99 ?? Number.NaN)}, max ${ms(s.pauseMs.max ?? Number.NaN)}`,
  ];
  if (s.timeToFirstCheckpointMs !== undefined) lines.push(`first checkpoint: ${ms(s.timeToFirstCheckpointMs)} after start`);
  if (s.resync) lines.push(`reprotected: ${s.resync.bytes} disk bytes mirrored in ${ms(s.resync.mirrorMs)}, guest paused ${ms(s.resync.pausedMs)}`);
  if (s.failover) {
    lines.push(`failover: to the ${s.failover.survivor} (${s.failover.why}), ${ms(s.failover.doneAt - s.failover.detectedAt)} from detection to done`);
    // A promoted secondary keeps these for the VM's lifetime; a primary's are removed by stop.
    if (s.failover.survivor === 'secondary' && s.failover.kept.length > 0) lines.push(`kept on the secondary: ${s.failover.kept.join(', ')}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The journal's plugins: @remus/colo's subkinds per side, so `remus cleanup` can reap a start that died half-way. */
function journalPlugins(cfg: ColoPairConfig): Journal['data']['plugins'] {
  const side = (role: ColoRole, qmp: QmpAddress) => ({
    package: '@remus/colo',
    from: CLI_DIR,
    subkinds: { [`colo-${role}-nic`]: { qmp }, [`colo-${role}-disk`]: { qmp } },
  });
  return [side('primary', cfg.primary.qmp), side('secondary', cfg.secondary.qmp)];
}

type Ending = { how: 'stopped' | 'detached' | 'failed' | 'interrupted'; signal?: string; error?: RemusError };

/** `remus colo start`, and `remus colo reprotect` (the same driver process; the pair starts with @remus/colo's `reprotect`). */
async function coloStart(rest: readonly string[], io: Io, how: 'start' | 'reprotect' = 'start'): Promise<number> {
  const v = args(rest, { ...COMMON, 'stop-on-exit': { type: 'boolean' } }, 1);
  const file = v._[0];
  if (file === undefined) throw new RemusError('INVALID_ARGUMENT', `give the pair file: remus colo ${how} PAIR.json`);
  const cfg = await loadPairConfig(file, `remus colo ${how}`);
  const { ColoPair, autoReprotect, coloPairOptions, reprotect, watchdogBoundMs } = await loadColo(`remus colo ${how}`);
  const dir = stateDir(v['state-dir']);
  const sock = controlSocketPath(dir, cfg.name);
  if (await socketLive(sock)) throw new RemusError('STATE', `a remus colo driver for pair ${cfg.name} already runs (control socket ${sock})`);
  const mode = viewMode(v.json, io);
  const view = new ProgressView(mode, io.out as never, new RunFigures());
  const stopOnExit = v['stop-on-exit'] ?? false;

  // The journal exists from before the first QMP command until replication runs: a start that dies half-way is reaped by `remus cleanup`.
  // Journal, control socket, signals and the final reap go through the lifecycle `remus run` shares.
  const operation = newOperationId();
  const listeners = new Set<(e: Record<string, unknown>) => void>();
  let pair: ColoPair | undefined;
  /** The pair config the driver works with now (after an automatic reprotect: the one the command printed). */
  let current = cfg;
  let watch: ColoAutoReprotect | undefined;
  let started = false;
  let end!: (e: Ending) => void;
  const ended = new Promise<Ending>((resolve) => (end = resolve));
  const abort = new AbortController();
  const onEvent = (e: ColoDriverEvent): void => {
    const body = coloEventBody(e);
    show(view, body);
    for (const l of listeners) l(body);
    if (started && e.type === 'state' && e.state === 'failed') end({ how: 'failed', error: new RemusError('OP_FAILED', 'the COLO pair failed (see the error above)') });
  };
  const handler = async (req: ControlRequest, send: (event: Record<string, unknown>) => void): Promise<Record<string, unknown>> => {
    view.event('request', { ...req });
    if (req.command === 'status') return { name: cfg.name, pid: process.pid, operation, status: pair?.status() ?? { state: 'connecting' } };
    if (!pair || !started) throw new RemusError('STATE', `pair ${cfg.name} is not replicating yet (state ${pair?.status().state ?? 'connecting'})`);
    listeners.add(send);
    try {
      if (req.command === 'failover') {
        const done = pair.status().failover;
        if (done && done.survivor !== req.to) throw new RemusError('STATE', `pair ${cfg.name} already failed over to the ${done.survivor} (${done.why}); there is no ${req.to} to fail over to`);
        view.say(`failover to the ${req.to} requested over the control socket`);
        await pair.failover(req.to, `manual failover to the ${req.to} (remus colo failover)`);
      } else {
        view.say('stop requested over the control socket');
        // No automatic reprotect any more: a reprotect in progress is aborted (the survivor is put back) before the stop.
        await watch?.stop();
        await pair.stop();
        setImmediate(() => end({ how: 'stopped' }));
      }
      return { name: cfg.name, status: pair.status() };
    } finally {
      listeners.delete(send);
    }
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (!started) {
      view.say(`${sig}: interrupting the start`);
      abort.abort(new RemusError('ABORTED', `start interrupted by ${sig}`));
      end({ how: 'interrupted', signal: sig });
    } else end({ how: stopOnExit ? 'stopped' : 'detached', signal: sig });
  };

  /** After each failover: the operator's command starts a fresh secondary, @remus/colo's autoReprotect puts the survivor back under protection. */
  const startAutoReprotect = (first: ColoPair): ColoAutoReprotect => {
    const hook = cfg.autoReprotect!;
    return autoReprotect(first, {
      next: async (failover, signal) => {
        view.event('auto-reprotect', { survivor: failover.survivor, command: hook.command });
        view.say(`failed over to the ${failover.survivor}: running autoReprotect.command for a fresh secondary`);
        const next = await pairFromHook(current, hook, failover, signal);
        const { primary, secondary: fresh, ...o } = { ...coloPairOptions(next.description), operationId: operation, onEvent };
        current = next;
        view.say(`reprotecting the ${failover.survivor} onto the fresh secondary (QMP ${next.description.secondary.qmp})`);
        return { ...o, survivor: primary, secondary: fresh };
      },
      run: { timeoutMs: cfg.startTimeoutMs },
      onPair: (p) => {
        pair = p;
        view.event('reprotected', { status: p.status() });
        const r = p.status().resync;
        view.say(`protected again${r ? `: ${r.bytes} disk bytes mirrored in ${ms(r.mirrorMs)}, guest paused ${ms(r.pausedMs)}` : ''}`);
      },
      onError: (e) => {
        const err = asRemusError(e);
        view.event('auto-reprotect-failed', { error: err.toJSON() });
        view.say(`automatic reprotect failed: [${err.code}] ${err.message}. The survivor serves on UNPROTECTED; reprotect by hand (remus colo reprotect)`);
      },
    });
  };

  const bound = cfg.watchdog === false ? undefined : watchdogBoundMs(cfg.watchdog);
  let ending!: Ending;
  const lifecycle = await runLifecycle<Ending>({
    journal: { stateDir: dir, operation, command: `colo ${how}`, plugins: journalPlugins(cfg), devices: [...cfg.primary.devices, ...cfg.secondary.devices] },
    control: { path: sock, handler },
    onSignal,
    body: async (journal) => {
      view.event('start', { name: cfg.name, operation, journal: journal.path, control: sock, migrationUri: cfg.migrationUri, checkpointDelayMs: cfg.checkpointDelayMs, watchdogBoundMs: bound ?? null, fence: cfg.fence !== undefined });
      view.say(`pair ${cfg.name}: operation ${operation}, control socket ${sock}`);
      if (!cfg.fence) view.say('warning: no "fence" in the pair file: a failover cannot take the failed side off the clients\' network');
      try {
        const { primary, secondary, ...o } = { ...coloPairOptions(cfg.description), operationId: operation, onEvent };
        if (how === 'reprotect') {
          // On failure reprotect leaves the survivor serving and kills the fresh secondary: nothing to reap.
          pair = await reprotect({ ...o, survivor: primary, secondary }, { timeoutMs: cfg.startTimeoutMs, signal: abort.signal });
        } else {
          pair = await ColoPair.connect({ ...o, primary, secondary }, 30_000, abort.signal);
          await pair.start({ timeoutMs: cfg.startTimeoutMs, signal: abort.signal });
        }
        started = true;
        // Replicating: nothing is left to reap if this process dies now (the pair runs on, unwatched, like a detach).
        journal.remove();
        view.say(`replicating; ${bound === undefined ? 'NO watchdog' : `watchdog on (a hung side is noticed within ${bound} ms)`}; stop with \`remus colo stop\` or SIGINT`);
        view.event('replicating', { status: pair.status() });
        if (cfg.autoReprotect) watch = startAutoReprotect(pair);
        return await ended;
      } catch (e) {
        const got = (await Promise.race([ended, Promise.resolve(undefined)])) ?? { how: 'failed' as const, error: asRemusError(e) };
        return got.how === 'interrupted' ? { ...got, error: asRemusError(e) } : got;
      }
    },
    finish: async (journal, { result }) => {
      ending = result ?? { how: 'failed', error: new RemusError('OP_FAILED', 'the start ended without an outcome') };
      // A reprotect in progress is aborted (it puts the survivor back); the pair watched last is the one to stop or leave.
      await watch?.stop();
      try {
        if (ending.how === 'stopped' && ending.signal && pair) {
          view.say(`${ending.signal}: stopping the pair (--stop-on-exit)`);
          await pair.stop();
        }
        if (ending.how === 'detached') {
          const st = pair?.status();
          view.say(
            st?.state === 'replicating'
              ? `${ending.signal}: detached. The pair keeps replicating and NOTHING WATCHES IT ANY MORE: QEMU has no watchdog, a dead peer goes unnoticed and clients may hang`
              : `${ending.signal}: detached (state ${st?.state ?? 'unknown'}, serving: ${st?.active ?? 'unknown'})`,
          );
          view.event('detached', { signal: ending.signal, unwatched: st?.state === 'replicating' });
        }
      } catch (e) {
        ending = { how: 'failed', error: asRemusError(e) };
      }
      await pair?.close();
      if (started) return true;
      // The driver tears down what a failed start set up; reaping by the operation's tag catches the rest.
      const r = pair ? await cleanupRun(journal.data) : { removed: [], errors: [] };
      for (const l of r.removed) view.say(`removed ${l}`);
      for (const l of r.errors) view.say(`could not remove: ${l} (run \`remus cleanup\`)`);
      return r.errors.length === 0;
    },
  });
  const clean = lifecycle.clean;
  const ok = ending.how === 'stopped' || ending.how === 'detached';
  const status = pair?.status();
  view.event('end', { ok, how: ending.how, clean, ...(status ? { status } : {}), ...(ending.error ? { error: ending.error.toJSON() } : {}) });
  if (mode !== 'json') {
    if (status) io.out.write(formatColoStatus(status));
    io.out.write(`${ending.how}${ending.error ? `: [${ending.error.code}] ${ending.error.message}` : ''}\n`);
  }
  return ok && clean ? 0 : 1;
}

function asRemusError(e: unknown): RemusError {
  return e instanceof RemusError ? e : new RemusError('OP_FAILED', describeCause(e) ?? 'unknown failure', { cause: e });
}

/** Which pair a status/failover/stop is about: from the pair file, --name, or the only control socket in the state dir. */
async function target(v: { _: string[]; name?: string; 'state-dir'?: string }, forWhat: string): Promise<{ name: string; sock: string; cfg?: ColoPairConfig }> {
  const dir = stateDir(v['state-dir']);
  if (v._[0] !== undefined) {
    const cfg = await loadPairConfig(v._[0], `${forWhat} (reading the pair file)`, false);
    return { name: cfg.name, sock: controlSocketPath(dir, cfg.name), cfg };
  }
  let name = v.name === undefined ? undefined : validateName(v.name, '--name (the pair name)');
  if (name === undefined) {
    const names = controlSocketNames(dir);
    if (names.length !== 1) {
      throw new RemusError('INVALID_ARGUMENT', names.length === 0 ? `no colo driver runs here (no control socket in ${dir}): give the pair file` : `several pairs in ${dir} (${names.join(', ')}): give the pair file or --name`);
    }
    name = names[0] as string;
  }
  return { name, sock: controlSocketPath(dir, name) };
}

async function coloStatus(rest: readonly string[], io: Io): Promise<number> {
  const v = args(rest, { ...COMMON, etcd: { type: 'string' }, prefix: { type: 'string' } }, 1);
  if (v.etcd !== undefined) return coloHaStatusCommand({ etcd: v.etcd, prefix: v.prefix, json: v.json }, io);
  const t = await target(v, 'remus colo status');
  const view = new ProgressView(viewMode(v.json, io), io.out as never, new RunFigures());
  if (await socketLive(t.sock)) {
    const r = await requestControl(t.sock, { command: 'status' }, () => {}, 10_000);
    if (!r.ok) throw new RemusError('OP_FAILED', `the colo driver refused: ${r.error?.message}`);
    const status = statusOf(r, t.sock);
    view.event('status', { driver: true, ...r });
    view.say(`pair ${t.name}: driver pid ${String(r.pid)}, operation ${String(r.operation)}`);
    if (view.mode !== 'json') io.out.write('pauseMs' in status ? formatColoStatus(status) : `state: ${status.state}\n`);
    return 0;
  }
  if (!t.cfg) throw new RemusError('STATE', `no colo driver runs for pair ${t.name} (${t.sock}): give the pair file to ask the QEMUs directly`);
  view.say(`pair ${t.name}: no driver runs (no answer on ${t.sock}); asking the QEMUs`);
  const { formatQmpAddress } = await loadQmp('remus colo status (asking the QEMUs without a driver)');
  const sides: Record<string, unknown> = {};
  for (const role of ['primary', 'secondary'] as const) {
    const s = t.cfg[role];
    const address = s.qmpEvents ?? s.qmp;
    const q = await querySide(address);
    sides[role] = s.pid === undefined ? q : { ...q, pid: s.pid, pidAlive: processStart(s.pid) !== undefined };
    view.say(
      q.ok
        ? `${role} (${formatQmpAddress(address)}): COLO mode ${q.colo.mode}${q.colo.reason && q.colo.reason !== 'none' ? ` (last ${q.colo['last-mode']}, reason ${q.colo.reason})` : ''}, migration ${q.migrate.status ?? 'none'}, VM ${q.run.status}`
        : `${role} (${formatQmpAddress(address)}): no answer: ${q.error}${s.pid !== undefined && processStart(s.pid) === undefined ? ` (process ${s.pid} is gone)` : ''}`,
    );
  }
  view.event('status', { driver: false, name: t.name, sides });
  return Object.values(sides).every((s) => (s as SideAnswer).ok) ? 0 : 1;
}

/**
 * The status in a driver's answer, checked: a full ColoStatus, or just a
 * `state` while connecting. Anything else is `cli/CONTROL_PROTOCOL`.
 */
export function statusOf(r: ControlResult, sock: string): ColoStatus | { state: string } {
  const s = r.status as Record<string, unknown> | null | undefined;
  const bad = (): never => {
    throw new RemusError(CliErrors.CONTROL_PROTOCOL, `the colo driver at ${sock} answered a malformed status: ${JSON.stringify(r.status)?.slice(0, 200)}`);
  };
  if (s === null || typeof s !== 'object' || Array.isArray(s) || typeof s.state !== 'string') return bad();
  if (s.pauseMs === undefined) return { state: s.state };
  const p = s.pauseMs as Record<string, unknown> | null;
  const numOrNull = (x: unknown): boolean => x === undefined || x === null || typeof x === 'number';
  if (typeof s.active !== 'string' || typeof s.checkpoints !== 'number' || typeof s.onDemandCheckpoints !== 'number' || p === null || typeof p !== 'object' || !numOrNull(p.p50) || !numOrNull(p.p99) || !numOrNull(p.max)) return bad();
  if (!numOrNull(s.timeToFirstCheckpointMs)) return bad();
  const f = s.failover as Record<string, unknown> | undefined;
  if (f !== undefined && (f === null || typeof f !== 'object' || typeof f.survivor !== 'string' || typeof f.why !== 'string' || typeof f.doneAt !== 'number' || typeof f.detectedAt !== 'number' || !Array.isArray(f.kept))) return bad();
  return s as unknown as ColoStatus;
}

type SideAnswer =
  | { ok: true; colo: { mode: string; 'last-mode'?: string; reason?: string }; migrate: { status?: string }; run: { status: string; running: boolean } }
  | { ok: false; error: string };

/** One side's COLO, migration and run state, straight from its QEMU (bounded). */
async function querySide(address: QmpAddress): Promise<SideAnswer> {
  const { connectQmp } = await loadQmp('remus colo status (asking the QEMUs without a driver)');
  let c;
  try {
    c = await connectQmp(address, { timeoutMs: 5000, commandTimeoutMs: 5000 });
  } catch (e) {
    return { ok: false, error: describeCause(e) ?? 'unreachable' };
  }
  try {
    const colo = await c.execute<{ mode: string; 'last-mode'?: string; reason?: string }>('query-colo-status');
    const migrate = await c.execute<{ status?: string }>('query-migrate');
    const run = await c.execute<{ status: string; running: boolean }>('query-status');
    return { ok: true, colo, migrate, run };
  } catch (e) {
    return { ok: false, error: describeCause(e) ?? 'failed' };
  } finally {
    await c.close().catch(() => {});
  }
}

async function coloRequest(command: 'failover' | 'stop', rest: readonly string[], io: Io): Promise<number> {
  const v = args(rest, { ...COMMON, to: { type: 'string' } }, 1);
  let req: ControlRequest = { command: 'stop' };
  if (command === 'failover') {
    if (v.to !== 'primary' && v.to !== 'secondary') throw new RemusError('INVALID_ARGUMENT', `--to ${v.to === undefined ? 'is required' : `${JSON.stringify(v.to)} is not a side`}: use --to primary or --to secondary`);
    req = { command: 'failover', to: v.to };
  } else if (v.to !== undefined) throw new RemusError('INVALID_ARGUMENT', '--to belongs to remus colo failover');
  const t = await target(v, `remus colo ${command}`);
  if (!(await socketLive(t.sock))) {
    throw new RemusError('STATE', `no colo driver runs for pair ${t.name} (${t.sock}); ${command} goes through the driver (remus colo start), which fences the other side`);
  }
  const view = new ProgressView(viewMode(v.json, io), io.out as never, new RunFigures());
  const t0 = performance.now();
  const r = await requestControl(t.sock, req, (e) => show(view, e), 180_000);
  const took = performance.now() - t0;
  view.event('end', { ...r, ms: took });
  if (!r.ok) {
    if (view.mode !== 'json') io.err.write(`remus: ${command} failed: [${r.error?.code}] ${r.error?.message}\n`);
    return 1;
  }
  if (view.mode !== 'json') {
    const status = statusOf(r, t.sock);
    io.out.write('pauseMs' in status ? formatColoStatus(status) : `state: ${status.state}\n`);
    io.out.write(`${command === 'stop' ? 'stopped' : 'failover done'} in ${ms(took)}\n`);
  }
  return 0;
}
