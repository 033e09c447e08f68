/**
 * The `remus` command line: argument parsing and dispatch. Exit codes: 0
 * success (a run stopped by SIGINT/SIGTERM, its limit or duration is a
 * success), 1 a run or check failed, 2 bad usage or configuration.
 */
import { createRequire } from 'node:module';
import { RemusError, createCheckpointDevices, describeCause, formatSocketAddress, isRemusError, parseSocketAddress, type Assignment } from '@remus/core';
import { cleanupAll } from './cleanup.js';
import { formatDoctor, hostChecks, pluginReports, type DoctorReport } from './doctor.js';
import { runDemo } from './demo/demo.js';
import { checkStateDir, stateDir } from './journal.js';
import { pluginDirsFor } from './plugins.js';
import { loadDomainProcess } from './libs.js';
import { ProgressView, RunFigures } from './progress.js';
import { prepare, report, runProtected } from './run.js';
import { args, countFlag, durationFlag, need, realtimeFlag, viewMode } from './args.js';
import { cmdColo, COLO_USAGE } from './colo/commands.js';
import { CRIU_USAGE, cmdCriuBackup, cmdFailover, domainFlag, withoutDomainFlag } from './criu/commands.js';
import type { Command, Io } from './io.js';
import { localListenOnly } from './validation.js';

export type { Io } from './io.js';

const require = createRequire(import.meta.url);
const VERSION = (require('../package.json') as { version: string }).version;

const USAGE = `remus ${VERSION}: Remus checkpoint replication for a process tree, and QEMU COLO pairs

usage:
  remus run --config FILE [--json] [--state-dir DIR] [--checkpoints N] [--duration MS] [--realtime auto|on|off]
  remus plan --config FILE [--json]
  remus doctor [--config FILE] [--json]
  remus cleanup [--state-dir DIR] [--operation ID] [--json]
  remus demo [--duration MS] [--interval MS] [--json] [--state-dir DIR] [--no-net-buffer] [--realtime auto|on|off]
  remus backup --listen 127.0.0.1:PORT|PATH
${CRIU_USAGE}${COLO_USAGE}  remus agent run|init|status ...   (one per host of a pair; needs @remus/agent, see remus agent --help)
  remus --version | --help

run        protect the configured workload until SIGINT/SIGTERM (second signal: abort)
plan       show which subkind would take each device; changes nothing
doctor     what this host can do, which installed plugins would take which devices, and fixes
cleanup    remove what crashed runs left (from their journals in the state directory)
demo       a self-contained end-to-end run in its own network namespaces
           (--no-net-buffer: leave the NIC unprotected; the output-commit check must then fail)
backup     a backup endpoint that receives checkpoint state and acknowledges it
           (--domain criu: CRIU images of a process tree, restored by remus failover)
failover   restore the criu domain's service on this backup host from its last complete checkpoint
colo       run a QEMU COLO pair: start (stays in the foreground: it is the watchdog),
           status, failover, stop (see remus colo --help)

--realtime: the checkpoint loop's thread under SCHED_FIFO (reset-on-fork): auto (default: try,
           warn and go on at normal priority when refused), on (refused: fail), off

state directory (run journals, colo control sockets): --state-dir, else $REMUS_STATE_DIR, else /run/remus
`;

/** The commands, by name. */
const COMMANDS: Readonly<Record<string, Command>> = {
  run: cmdRun,
  plan: cmdPlan,
  doctor: cmdDoctor,
  cleanup: cmdCleanup,
  demo: cmdDemo,
  backup: cmdBackup,
  failover: cmdFailover,
  colo: cmdColo,
  agent: cmdAgent,
};

/** Runs the command line `argv` (without node and script); resolves with the exit code. */
export async function main(argv: readonly string[], io: Io = { out: process.stdout, err: process.stderr }): Promise<number> {
  const [command, ...rest] = argv;
  try {
    const run = command !== undefined && Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
    if (run) return await run(rest, io);
    switch (command) {
      case '--version':
      case 'version':
        io.out.write(`${VERSION}\n`);
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        io.out.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        io.err.write(`remus: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    return fail(io, e, argv.includes('--json'));
  }
}

function fail(io: Io, e: unknown, json: boolean): number {
  const usage = isRemusError(e, 'INVALID_ARGUMENT') || isRemusError(e, 'PLUGIN_NOT_FOUND') || isRemusError(e, 'PLUGIN_INVALID') || isRemusError(e, 'PLUGIN_INCOMPATIBLE') || isRemusError(e, 'SUBKIND_NOT_FOUND') || isRemusError(e, 'INVALID_SUBKIND');
  if (json) {
    const err = e instanceof RemusError ? e.toJSON() : { message: describeCause(e) };
    io.out.write(`${JSON.stringify({ type: 'error', time: new Date().toISOString(), error: err })}\n`);
  } else {
    io.err.write(`remus: ${e instanceof RemusError ? `[${e.code}] ` : ''}${describeCause(e)}\n`);
  }
  return usage ? 2 : 1;
}

async function cmdRun(rest: readonly string[], io: Io): Promise<number> {
  const v = args(rest, {
    config: { type: 'string' },
    json: { type: 'boolean' },
    'state-dir': { type: 'string' },
    checkpoints: { type: 'string' },
    duration: { type: 'string' },
    realtime: { type: 'string' },
  });
  const file = need(v.config, '--config');
  const realtime = realtimeFlag(v.realtime);
  const checkpoints = countFlag(v.checkpoints, '--checkpoints');
  const duration = durationFlag(v.duration, '--duration');
  const dir = stateDir(v['state-dir']);
  checkStateDir(dir, false);
  const { config: loaded, built, dirs } = await prepare(file);
  const config = { ...loaded, maxCheckpoints: checkpoints ?? loaded.maxCheckpoints, durationMs: duration ?? loaded.durationMs, realtime: realtime ?? loaded.realtime };
  const mode = viewMode(v.json, io);
  const figures = new RunFigures();
  const view = new ProgressView(mode, io.out as never, figures);
  const outcome = await runProtected({ config, source: file, pluginDirs: dirs, stateDir: dir, view, stdio: mode === 'json' ? ['ignore', 'ignore', 'inherit'] : 'inherit' }, built);
  report(view, io.out as never, outcome, mode);
  if (outcome.error && mode !== 'json') io.err.write(`remus: run failed: [${outcome.error.code}] ${outcome.error.message}\n`);
  return outcome.ok && outcome.clean ? 0 : 1;
}

async function cmdPlan(rest: readonly string[], io: Io): Promise<number> {
  const v = args(rest, { config: { type: 'string' }, json: { type: 'boolean' } });
  const file = need(v.config, '--config');
  const { config, built } = await prepare(file);
  const assignments = await createCheckpointDevices({ ops: built.ops, devices: config.devices, operationId: `plan${process.pid}` }).plan();
  const rows = assignments.map((a) => ({ device: a.device, kind: a.kind, subkind: a.subkind, declined: a.declined, ...(a.error ? { error: a.error.message, code: a.error.code } : {}) }));
  if (v.json) io.out.write(`${JSON.stringify({ type: 'plan', ops: built.ops.map((o) => o.name), devices: rows })}\n`);
  else {
    io.out.write(`ops list: ${built.ops.map((o) => `${o.name} (${o.kind})`).join(', ') || 'empty'}\n`);
    for (const r of rows) {
      const why = r.declined.map((x) => `${x.subkind}: ${x.reason}`).join('; ');
      io.out.write(`${r.device} (${r.kind}): ${r.subkind ?? unmatched(r)}${why ? `  [declined: ${why}]` : ''}\n`);
    }
  }
  return rows.every((r) => r.subkind !== undefined) ? 0 : 1;
}

/** Why a device has no subkind: every subkind declined (NOT SUPPORTED), or matching failed (a match threw: that is not a verdict). */
export function unmatched(a: { error?: string; code?: string }): string {
  if (a.code === undefined || a.code === 'DEVICE_NOT_SUPPORTED') return `NOT SUPPORTED: ${a.error ?? ''}`;
  return `MATCH FAILED: [${a.code}] ${a.error ?? ''}`;
}

async function cmdDoctor(rest: readonly string[], io: Io): Promise<number> {
  const v = args(rest, { config: { type: 'string' }, json: { type: 'boolean' } });
  const dirs = pluginDirsFor(v.config);
  let devices: DoctorReport['devices'];
  if (v.config) {
    const { config, built } = await prepare(v.config);
    const plan = await createCheckpointDevices({ ops: built.ops, devices: config.devices, operationId: `doctor${process.pid}` }).plan();
    devices = plan.map((a: Assignment) => ({ device: a.device, subkind: a.subkind, declined: [...a.declined], ...(a.error ? { error: a.error.message, code: a.error.code } : {}) }));
  }
  const r: DoctorReport = { checks: await hostChecks(), plugins: await pluginReports(dirs), ...(devices ? { devices } : {}) };
  io.out.write(v.json ? `${JSON.stringify({ type: 'doctor', ...r })}\n` : formatDoctor(r));
  return 0;
}

async function cmdCleanup(rest: readonly string[], io: Io): Promise<number> {
  const v = args(rest, { 'state-dir': { type: 'string' }, operation: { type: 'string' }, json: { type: 'boolean' } });
  const dir = stateDir(v['state-dir']);
  const results = await cleanupAll(dir, v.operation);
  if (v.json) io.out.write(`${JSON.stringify({ type: 'cleanup', stateDir: dir, results })}\n`);
  else {
    if (results.length === 0) io.out.write(`nothing to clean up in ${dir}\n`);
    for (const r of results) {
      io.out.write(`${r.operation ?? r.journal}: ${r.status === 'running' ? 'still running, left alone' : r.status}\n`);
      for (const l of r.removed) io.out.write(`  ${l}\n`);
      for (const l of r.errors) io.out.write(`  error: ${l}\n`);
    }
  }
  return results.some((r) => r.status === 'failed') ? 1 : 0;
}

async function cmdDemo(rest: readonly string[], io: Io): Promise<number> {
  const v = args(rest, { duration: { type: 'string' }, interval: { type: 'string' }, json: { type: 'boolean' }, 'state-dir': { type: 'string' }, 'no-net-buffer': { type: 'boolean' }, realtime: { type: 'string' } });
  const realtime = realtimeFlag(v.realtime);
  return runDemo({
    ...(realtime ? { realtime } : {}),
    durationMs: durationFlag(v.duration, '--duration') ?? 5000,
    intervalMs: durationFlag(v.interval, '--interval') ?? 50,
    mode: v.json ? 'json' : io.out.isTTY ? 'tty' : 'lines',
    stateDir: stateDir(v['state-dir']),
    io,
    noNetBuffer: v['no-net-buffer'] ?? false,
  });
}

async function cmdBackup(rest: readonly string[], io: Io): Promise<number> {
  if (domainFlag(rest) === 'criu') return cmdCriuBackup(rest, io);
  const v = args(withoutDomainFlag(rest), { listen: { type: 'string' } });
  const listen = need(v.listen, '--listen');
  // HOST:PORT with an explicit host: `:7788` (every interface by accident) is refused.
  const address = localListenOnly(
    parseSocketAddress(listen, '--listen (127.0.0.1:PORT or the path of a Unix socket)', { allowPath: true }),
    '--listen',
    'checkpoint state and be acknowledged',
  );
  const { BackupServer } = await loadDomainProcess('remus backup');
  const backup = await BackupServer.listen(address);
  io.out.write(`backup listening on ${formatSocketAddress(backup.address)}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await backup.close();
  io.out.write(`backup: ${backup.stats.acked} checkpoints acknowledged, ${backup.stats.bytes} bytes\n`);
  return 0;
}

/**
 * `remus agent ...` lives in the separately installed `@remus/agent` (it
 * brings etcd and TLS; the CLI does not depend on it): imported on use from
 * where the CLI is installed.
 */
async function cmdAgent(rest: readonly string[], io: Io): Promise<number> {
  let mod: { agentMain(argv: readonly string[], io: Io): Promise<number> };
  try {
    mod = await import('@remus/agent' as string);
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND' || !String((e as Error).message).includes('@remus/agent')) throw e;
    throw new RemusError('INVALID_ARGUMENT', 'remus agent needs the @remus/agent package: install it next to @remus/cli (npm install @remus/agent)');
  }
  return mod.agentMain(rest, io);
}
