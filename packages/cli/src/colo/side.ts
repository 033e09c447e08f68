/**
 * `remus colo side SIDE.json [--json]`: one host's side of a COLO pair split
 * across two hosts, run on that host (its agent for COLO). It drives only
 * its own QEMU over QMP (@remus/colo's `ColoSideDriver`), decides every
 * failover through the etcd arbiter (@remus/arbiter-etcd) with fencing
 * epochs, attaches its QEMU's tap to the clients' bridge when it serves and
 * detaches it when it must release nothing more. Both sides run the same
 * command with their own side file; the primary's side starts COLO once the
 * secondary's side is ready.
 *
 * The side file is validated like a pair file (every problem at once, each
 * with its JSON path and a fix) before anything is touched; see the README
 * ("COLO across two hosts") for its keys.
 *
 * Commands, one JSON object per line on stdin (a supervisor's channel; an
 * ended stdin is not a stop): `{"command":"reprotect","devices":[...],
 * "migrationUri":"tcp:HOST:PORT"}` makes a side that serves alone protect
 * again onto a fresh secondary (its side started and `ready`), with the
 * primary devices given. A bad line is refused with a `command-refused`
 * event and changes nothing.
 *
 * Output: one line per event; with `--json` one JSON object per line with
 * `type`, `time`, and `t` (wall-clock ms, sub-millisecond). SIGTERM or
 * SIGINT: the side detaches from its QEMU (which stays as it is) and the
 * command exits 0. A start that fails exits 1.
 */
import { isAbsolute } from 'node:path';
import { createInterface } from 'node:readline';
import { RemusError, describeCause, formatSocketAddress, openEpochStore, parseSocketAddress, runScript, validateName, type DeviceSpec } from '@remus/core';
import type { ColoRole, ColoSideDriver, ColoSideEvent, ColoWatchdogOptions } from '@remus/colo';
import { args } from '../args.js';
import { configError, readJsonFile, type ConfigProblem } from '../config.js';
import type { Io } from '../io.js';
import { loadArbiterEtcd, loadColo } from '../libs.js';
import { isObject, num, unknownKeys, type Report } from '../validation.js';
import { runHook } from './auto-reprotect.js';
import { fenceNames, loadPairLibs, validateColoDevices, validateCommandHook, validateSide, validateWatchdog, type ColoAutoReprotectConfig, type ColoSideConfig, type PairLibs } from './pair.js';

export const SIDE_USAGE = `  remus colo side SIDE.json [--json]   (one host's side of a pair across two hosts: its own QEMU, the etcd arbiter)
`;

/** A validated side file. */
export interface ColoSideFile {
  readonly role: ColoRole;
  readonly host: string;
  readonly peer: string;
  /** Tags what the subkinds add; both sides give the same one. */
  readonly operationId: string;
  readonly qemu: ColoSideConfig;
  /** Primary: the secondary's -incoming. */
  readonly migrationUri: string | undefined;
  readonly checkpointDelayMs: number;
  readonly commandTimeoutMs: number;
  readonly startTimeoutMs: number;
  readonly etcd: { readonly endpoints: readonly string[]; readonly prefix: string; readonly ttlSeconds: number };
  /** The host's highest-epoch store (absolute path): never act as primary below it. */
  readonly epochStore: string;
  /** This side's tap on the clients' bridge. */
  readonly fence: { readonly netns?: string; readonly tap: string; readonly bridge: string } | undefined;
  /** Run before a secondary promotes; its failure blocks the promotion. */
  readonly hardFence: ColoAutoReprotectConfig | undefined;
  /** With --json: a `status` event this often, ms (0: none). */
  readonly statusEveryMs: number;
  /** The watchdog over this side's own QEMU (@remus/colo's DEFAULT_WATCHDOG where not given). */
  readonly watchdog: Required<ColoWatchdogOptions>;
  /** After this side went on alone (`solo` or `promoted`): the command that starts a fresh secondary and prints the reprotect command. */
  readonly autoReprotect: ColoAutoReprotectConfig | undefined;
}

const TOP_KEYS = ['$schema', 'role', 'host', 'peer', 'operationId', 'qemu', 'migrationUri', 'checkpointDelayMs', 'commandTimeoutMs', 'startTimeoutMs', 'etcd', 'epochStore', 'fence', 'hardFence', 'statusEveryMs', 'autoReprotect', 'watchdog'];
const ETCD_KEYS = ['endpoints', 'prefix', 'ttlSeconds'];
const FENCE_KEYS = ['netns', 'tap', 'bridge'];
const MIGRATION_URI = /^(tcp|unix|rdma|exec|fd):\S+$/;

/** Validates a parsed side file; throws INVALID_ARGUMENT listing every problem. */
export function validateSideFile(raw: unknown, libs: PairLibs, source = 'side.json', livePids = true): ColoSideFile {
  const problems: ConfigProblem[] = [];
  const p: Report = (path, message, fix) => void problems.push({ path, message, fix });
  if (!isObject(raw)) {
    throw configError(source, [{ path: '$', message: 'must be a JSON object', fix: 'write { "role": "primary", "host": "ha", "peer": "hb", "qemu": {...}, "etcd": {...}, ... }' }]);
  }
  unknownKeys(raw, TOP_KEYS, '', p);
  const role = raw.role;
  if (role !== 'primary' && role !== 'secondary') p('role', role === undefined ? 'is missing' : `${JSON.stringify(role)} is not a COLO role`, 'the role this side starts in: "primary" or "secondary"');
  const name = (key: string, what: string, fix: string): string | undefined => {
    try {
      return validateName(raw[key], what);
    } catch {
      p(key, raw[key] === undefined ? 'is missing' : `${JSON.stringify(raw[key])} is not a usable ${what}`, fix);
      return undefined;
    }
  };
  const host = name('host', 'host name', "this host's name (letters, digits, \"-\", \"_\", \".\"): it holds the role in etcd under it");
  const peer = name('peer', 'host name', "the other host's name, as its own side file gives it");
  if (host !== undefined && host === peer) p('peer', `names the same host as "host" (${host})`, 'a pair spans two hosts: give the other host\'s name');
  const operationId = name('operationId', 'operation id', 'the same id in both side files (it tags the filters and chardevs), e.g. "web1"');
  const sideRole: ColoRole = role === 'secondary' ? 'secondary' : 'primary';
  const qemu = validateSide(raw.qemu, sideRole, p, livePids, libs, 'qemu');
  const migrationUri = raw.migrationUri;
  if (migrationUri !== undefined && (typeof migrationUri !== 'string' || !MIGRATION_URI.test(migrationUri))) {
    p('migrationUri', `${JSON.stringify(migrationUri)} is not a migration URI`, 'where the secondary listens, as given to its -incoming, e.g. "tcp:10.0.0.2:9998"');
  } else if (role === 'primary' && migrationUri === undefined) {
    p('migrationUri', 'is missing (the primary starts COLO)', 'where the secondary listens, as given to its -incoming, e.g. "tcp:10.0.0.2:9998"');
  }
  const checkpointDelayMs = num(raw, 'checkpointDelayMs', '', p, { def: 2000, min: 1, integer: true, fix: "QEMU's x-checkpoint-delay: ms between checkpoints while the outputs agree, e.g. 2000" }) as number;
  const commandTimeoutMs = num(raw, 'commandTimeoutMs', '', p, { def: 10_000, min: 1, fix: 'time limit of each QMP command in ms, e.g. 10000' }) as number;
  const startTimeoutMs = num(raw, 'startTimeoutMs', '', p, { def: 150_000, min: 1, fix: 'time limit of the start (set-up, waiting for the peer, migration) in ms, e.g. 150000' }) as number;
  const statusEveryMs = num(raw, 'statusEveryMs', '', p, { def: 0, min: 0, fix: 'ms between status events with --json, e.g. 1000 (0: none)' }) as number;
  const etcd = validateEtcd(raw.etcd, p);
  const epochStore = raw.epochStore;
  if (typeof epochStore !== 'string' || !isAbsolute(epochStore) || epochStore.includes('\0')) {
    p('epochStore', epochStore === undefined ? 'is missing' : `${JSON.stringify(epochStore)} is not an absolute path`, "the file where this host keeps the highest epoch it has seen (on this host's disk), e.g. \"/var/lib/remus/web1-epoch.json\"");
  }
  const fence = validateSideFence(raw.fence, p);
  const hardFence = validateCommandHook(raw.hardFence, 'hardFence', p, 'a command that cuts the other host off (IPMI, PDU, switch port) before this side promotes; its failure blocks the promotion', ['/usr/local/sbin/fence-host', 'hb'], 30_000);
  const autoReprotect = validateCommandHook(raw.autoReprotect, 'autoReprotect', p, 'the command that starts a fresh secondary (QEMU and its side) and prints the reprotect command', ['/usr/local/sbin/start-spare-side', 'web1'], 180_000);
  if (raw.watchdog === false) p('watchdog', 'cannot be false for a side', "a side always watches its own QEMU (a hung one must not keep the role): give longer bounds instead, e.g. { \"probeTimeoutMs\": 5000, \"misses\": 4 }");
  const watchdog = validateWatchdog(raw.watchdog === false ? undefined : raw.watchdog, p, libs.colo.DEFAULT_WATCHDOG) as Required<ColoWatchdogOptions>;
  if (problems.length > 0) throw configError(source, problems);
  return {
    role: role as ColoRole,
    host: host as string,
    peer: peer as string,
    operationId: operationId as string,
    qemu: qemu as ColoSideConfig,
    migrationUri: migrationUri as string | undefined,
    checkpointDelayMs,
    commandTimeoutMs,
    startTimeoutMs,
    etcd: etcd as ColoSideFile['etcd'],
    epochStore: epochStore as string,
    fence,
    hardFence,
    statusEveryMs,
    autoReprotect,
    watchdog,
  };
}

function validateEtcd(e: unknown, p: Report): ColoSideFile['etcd'] | undefined {
  const example = '{ "endpoints": ["10.0.0.10:2379", "10.0.0.11:2379", "10.0.0.12:2379"], "prefix": "/remus/web1/colo", "ttlSeconds": 2 }';
  if (!isObject(e)) {
    p('etcd', e === undefined ? 'is missing' : 'must be an object', `the etcd cluster that arbitrates the pair: ${example}`);
    return undefined;
  }
  unknownKeys(e, ETCD_KEYS, 'etcd', p);
  const endpoints: string[] = [];
  if (!Array.isArray(e.endpoints) || e.endpoints.length < 3) {
    p('etcd.endpoints', e.endpoints === undefined ? 'is missing' : 'must list at least three members', 'three or more "HOST:PORT" of etcd members: a third voter decides, never one of the two hosts alone');
  } else {
    e.endpoints.forEach((x, i) => {
      try {
        const a = parseSocketAddress(x as string, `etcd.endpoints[${i}]`);
        if (!('port' in a)) throw new Error('not host:port');
        endpoints.push(formatSocketAddress(a));
      } catch {
        p(`etcd.endpoints[${i}]`, `${JSON.stringify(x)} is not HOST:PORT`, 'an etcd member\'s client address, e.g. "10.0.0.10:2379"');
      }
    });
    if (new Set(endpoints).size !== endpoints.length) p('etcd.endpoints', `names a member twice (${endpoints.join(', ')})`, 'list each member once');
  }
  if (typeof e.prefix !== 'string' || !e.prefix.startsWith('/') || e.prefix.length > 256) {
    p('etcd.prefix', e.prefix === undefined ? 'is missing' : `${JSON.stringify(e.prefix)} is not a key prefix`, 'the election prefix both sides use (it starts with "/"), e.g. "/remus/web1/colo"');
  }
  const ttlSeconds = num(e, 'ttlSeconds', 'etcd', p, { def: 2, min: 2, integer: true, fix: "the lease TTL in whole seconds, from 2 (etcd's minimum), e.g. 2" }) as number;
  return { endpoints, prefix: e.prefix as string, ttlSeconds };
}

function validateSideFence(f: unknown, p: Report): ColoSideFile['fence'] {
  if (f === undefined) return undefined;
  if (!isObject(f)) {
    p('fence', 'must be an object', 'this side\'s tap and the clients\' bridge: { "tap": "tap0", "bridge": "br0" } (and "netns" when they are in one)');
    return undefined;
  }
  unknownKeys(f, FENCE_KEYS, 'fence', p);
  return fenceNames(f, ['tap', 'bridge'], p) ? (f as unknown as ColoSideFile['fence']) : undefined;
}

/** A `reprotect` command line from stdin: the survivor's new primary devices and the fresh secondary's -incoming. */
export function parseSideCommand(line: string, libs: PairLibs): { command: 'reprotect'; devices: DeviceSpec[]; migrationUri: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new RemusError('INVALID_ARGUMENT', 'a command line must be one JSON object, e.g. {"command":"reprotect","devices":[...],"migrationUri":"tcp:10.0.0.2:9998"}');
  }
  const problems: ConfigProblem[] = [];
  const p: Report = (path, message, fix) => void problems.push({ path, message, fix });
  if (!isObject(raw) || raw.command !== 'reprotect') {
    throw new RemusError('INVALID_ARGUMENT', `unknown command ${JSON.stringify(isObject(raw) ? raw.command : raw)}: the one command is "reprotect"`);
  }
  unknownKeys(raw, ['command', 'devices', 'migrationUri'], '', p);
  const devices = validateColoDevices(raw.devices, 'primary', p, libs, 'devices');
  if (typeof raw.migrationUri !== 'string' || !MIGRATION_URI.test(raw.migrationUri)) {
    p('migrationUri', raw.migrationUri === undefined ? 'is missing' : `${JSON.stringify(raw.migrationUri)} is not a migration URI`, "the fresh secondary's -incoming, e.g. \"tcp:10.0.0.2:9998\"");
  }
  if (problems.length > 0) throw configError('reprotect command', problems);
  return { command: 'reprotect', devices: devices as DeviceSpec[], migrationUri: raw.migrationUri as string };
}

/** What the autoReprotect command gets on stdin: this side, the other host and the event after which it serves alone. */
export function sideHookInput(cfg: ColoSideFile, event: { type: 'solo' | 'promoted'; epoch: number; why: string }): Record<string, unknown> {
  return { host: cfg.host, peer: cfg.peer, operationId: cfg.operationId, event: event.type, epoch: event.epoch, why: event.why };
}

/**
 * Runs the autoReprotect command after this side went on alone and returns
 * the reprotect it printed: one JSON object, `{"devices":[...primary
 * devices...],"migrationUri":"tcp:HOST:PORT"}` (`"command":"reprotect"`
 * may be given), checked like a stdin command. The command gets
 * {@link sideHookInput} on stdin and `REMUS_COLO_HOST`, `REMUS_COLO_PEER`,
 * `REMUS_COLO_EPOCH` in its environment; it starts a fresh secondary (its
 * QEMU and its `remus colo side`), waits until that side is `ready`, prints,
 * and exits 0 within `timeoutMs` (then its process group is killed). Throws
 * SCRIPT_FAILED / SCRIPT_TIMEOUT / ABORTED from the command, INVALID_ARGUMENT
 * naming the command when its output is not a usable reprotect.
 */
export async function reprotectFromHook(cfg: ColoSideFile, hook: ColoAutoReprotectConfig, event: { type: 'solo' | 'promoted'; epoch: number; why: string }, libs: PairLibs, signal: AbortSignal): Promise<ReturnType<typeof parseSideCommand>> {
  const { raw: printed, source } = await runHook(
    hook,
    sideHookInput(cfg, event),
    { REMUS_COLO_HOST: cfg.host, REMUS_COLO_PEER: cfg.peer, REMUS_COLO_EPOCH: String(event.epoch) },
    `{"devices":[...the survivor's primary devices...],"migrationUri":"tcp:HOST:PORT"}`,
    signal,
  );
  // `"command"` may be left out of what the hook prints.
  const raw = isObject(printed) && printed.command === undefined ? { command: 'reprotect', ...printed } : printed;
  try {
    return parseSideCommand(JSON.stringify(raw), libs);
  } catch (e) {
    throw new RemusError('INVALID_ARGUMENT', `${source}: ${describeCause(e)}`, { cause: e });
  }
}

/** A side event as one line for people. */
export function sideEventText(type: string, body: Record<string, unknown>): string {
  switch (type) {
    case 'state':
      return `state: ${String(body.state)}`;
    case 'step':
      return `step ${String(body.step)} (${Number(body.ms).toFixed(0)} ms)`;
    case 'role':
      return `holds the role, epoch ${String(body.epoch)}`;
    case 'checkpoint':
      return `checkpoint ${String(body.index)} (paused ${Number(body.pauseMs).toFixed(1)} ms${body.onDemand ? ', on demand' : ''})`;
    case 'promoted':
    case 'solo':
      return `${type === 'promoted' ? 'promoted to primary' : 'serving alone'}, epoch ${String(body.epoch)}: ${String(body.why)} (${Number(body.ms).toFixed(0)} ms)`;
    case 'fenced':
      return `fenced: ${String(body.why)}`;
    case 'peer-failure':
      return `peer failure: ${String(body.why)}`;
    case 'error':
    case 'start-failed':
    case 'reprotect-failed':
      return `${type}: ${String((body.error as { message?: string } | undefined)?.message ?? body.message)}`;
    case 'command-refused':
      return `command refused: ${String(body.message)}`;
    case 'auto-reprotect':
      return `serving alone (${String(body.event)}, epoch ${String(body.epoch)}): running autoReprotect.command for a fresh secondary`;
    case 'auto-reprotect-failed':
      return `automatic reprotect failed, serving on unprotected: ${String((body.error as { message?: string } | undefined)?.message)}`;
    case 'reprotected':
      return `protected again: ${String(body.bytes)} disk bytes mirrored in ${Number(body.mirrorMs).toFixed(0)} ms, guest paused ${Number(body.pausedMs).toFixed(0)} ms (${Number(body.ms).toFixed(0)} ms in all)`;
    default:
      return `${type}${Object.keys(body).length ? ` ${JSON.stringify(body)}` : ''}`;
  }
}

/** `remus colo side SIDE.json [--json]`. */
export async function coloSide(rest: readonly string[], io: Io): Promise<number> {
  const v = args(rest, { json: { type: 'boolean' } }, 1);
  const file = v._[0];
  if (file === undefined) throw new RemusError('INVALID_ARGUMENT', `remus colo side takes one side file: remus colo side SIDE.json [--json]`);
  const forWhat = 'remus colo side';
  const libs = await loadPairLibs(forWhat);
  const cfg = validateSideFile(readJsonFile(file, 'side file'), libs, file);
  const { etcdArbiter } = await loadArbiterEtcd(forWhat);
  const { ColoSideDriver } = await loadColo(forWhat);
  const json = v.json ?? false;
  const emit = (type: string, body: Record<string, unknown> = {}): void => {
    if (json) io.out.write(`${JSON.stringify({ type, time: new Date().toISOString(), t: performance.timeOrigin + performance.now(), ...body })}\n`);
    else io.out.write(`${cfg.host}: ${sideEventText(type, body)}\n`);
  };

  const arbiter = etcdArbiter({ ...cfg.etcd, host: cfg.host, onEvent: (e) => emit('arbiter', { event: e as unknown as Record<string, unknown> }) });
  const ip = async (argv: string[], signal: AbortSignal): Promise<void> => {
    await runScript('ip', [...(cfg.fence?.netns ? ['-n', cfg.fence.netns] : []), ...argv], { timeoutMs: 5000, signal });
  };
  const fence = cfg.fence;
  const hard = cfg.hardFence;
  const ended = new AbortController();
  let driver: ColoSideDriver | undefined;
  /** One reprotect at a time, from stdin or the hook. */
  let reprotecting = false;
  const reprotect = async (cmd: ReturnType<typeof parseSideCommand>): Promise<void> => {
    if (!driver) return;
    reprotecting = true;
    const t0 = performance.now();
    try {
      const r = await driver.reprotect({ devices: cmd.devices, migrationUri: cmd.migrationUri });
      emit('reprotected', { ms: performance.now() - t0, ...r });
    } finally {
      reprotecting = false;
    }
  };
  const auto = cfg.autoReprotect;
  const onAlone = (e: { type: 'solo' | 'promoted'; epoch: number; why: string }): void => {
    if (!auto || reprotecting || ended.signal.aborted) return;
    reprotecting = true;
    emit('auto-reprotect', { event: e.type, epoch: e.epoch });
    void reprotectFromHook(cfg, auto, e, libs, ended.signal)
      .then((cmd) => {
        reprotecting = false;
        return reprotect(cmd);
      })
      .catch((err: unknown) => {
        reprotecting = false;
        emit('auto-reprotect-failed', { error: err instanceof RemusError ? err.toJSON() : { message: describeCause(err) } });
      });
  };
  let side;
  try {
    side = await ColoSideDriver.connect({
      role: cfg.role,
      host: cfg.host,
      peer: cfg.peer,
      qmp: cfg.qemu.qmp,
      ...(cfg.qemu.qmpEvents ? { qmpEvents: cfg.qemu.qmpEvents } : {}),
      ...(cfg.qemu.pid !== undefined ? { pid: cfg.qemu.pid } : {}),
      devices: cfg.qemu.devices,
      ...(cfg.migrationUri ? { migrationUri: cfg.migrationUri } : {}),
      checkpointDelayMs: cfg.checkpointDelayMs,
      commandTimeoutMs: cfg.commandTimeoutMs,
      watchdog: cfg.watchdog,
      operationId: cfg.operationId,
      arbiter,
      epochs: openEpochStore(cfg.epochStore),
      ...(fence
        ? {
            fence: {
              attach: (s: AbortSignal) => ip(['link', 'set', fence.tap, 'master', fence.bridge], s),
              detach: (s: AbortSignal) => ip(['link', 'set', fence.tap, 'nomaster'], s),
            },
          }
        : {}),
      ...(hard ? { hardFence: async (s: AbortSignal) => void (await runScript(hard.command[0] as string, hard.command.slice(1), { timeoutMs: hard.timeoutMs, signal: s })) } : {}),
      onEvent: (e: ColoSideEvent) => {
        emit(e.type, e.type === 'error' ? { error: e.error.toJSON() } : (({ type: _t, ...rest }) => rest)(e as Exclude<ColoSideEvent, { type: 'error' }>));
        if (e.type === 'solo' || e.type === 'promoted') onAlone(e);
      },
    });
  } catch (e) {
    await arbiter.close();
    throw e;
  }
  driver = side;
  const d = side;

  let stopped: (() => void) | undefined;
  const stop = new Promise<void>((r) => (stopped = r));
  const onSignal = (): void => stopped?.();
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const timer = json && cfg.statusEveryMs > 0 ? setInterval(() => emit('status', { status: d.status() }), cfg.statusEveryMs) : undefined;
  const commands = createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    if (line.trim() === '') return;
    let cmd: ReturnType<typeof parseSideCommand>;
    try {
      cmd = parseSideCommand(line, libs);
    } catch (e) {
      emit('command-refused', { message: describeCause(e) });
      return;
    }
    if (reprotecting) {
      emit('command-refused', { message: 'a reprotect is already running' });
      return;
    }
    reprotect(cmd).catch((e: unknown) => emit('reprotect-failed', { error: e instanceof RemusError ? e.toJSON() : { message: describeCause(e) } }));
  });
  let code = 0;
  try {
    await Promise.race([
      d.start({ timeoutMs: cfg.startTimeoutMs }).then(() => emit('started', { status: d.status() })),
      stop,
    ]);
    await stop;
  } catch (e) {
    emit('start-failed', { error: e instanceof RemusError ? e.toJSON() : { message: describeCause(e) } });
    code = 1;
  } finally {
    ended.abort(new RemusError('ABORTED', 'remus colo side stopped'));
    if (timer) clearInterval(timer);
    commands.close();
    // Stop reading stdin, or it keeps this process alive after the side ended.
    process.stdin.pause();
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    await d.close().catch(() => undefined);
    await arbiter.close().catch(() => undefined);
  }
  emit('stopped', { status: d.status() });
  return code;
}
