/**
 * `remus run`: load the plugins, set the domain and devices up, run the
 * checkpoint loop until stopped, tear everything down. The journal is on disk
 * before anything is created, so a crash leaves nothing `remus cleanup`
 * cannot remove.
 */
import {
  RemusError,
  applyRealtime,
  createCheckpointDevices,
  describeCause,
  newOperationId,
  runCheckpointLoop,
  type CheckpointDevices,
  type CheckpointFigures,
  type DomainAdapter,
  type LoopResult,
  type RealtimeHandle,
} from '@remus/core';
import type { ProcessDomain, ProcessDomainOptions } from '@remus/domain-process';
import type { CriuDomain } from '@remus/domain-criu';
import { loadDomainProcess } from './libs.js';
import { criuRunDomain } from './criu/domain.js';
import type { Writable } from 'node:stream';
import { checkConfig, configError, readJsonFile, type RemusConfig } from './config.js';
import { Journal, stateDir } from './journal.js';
import { runLifecycle } from './lifecycle.js';
import { collectOps, pluginDirsFor, type BuiltOps } from './plugins.js';
import { ProgressView, ms, sumStats, type RunSummary, type ViewMode } from './progress.js';

export interface RunOptions {
  readonly config: RemusConfig;
  /** Where the config came from (for messages). */
  readonly source: string;
  /** Directories plugins resolve from (the config file's first). */
  readonly pluginDirs: readonly string[];
  readonly stateDir: string;
  readonly view: ProgressView;
  /** Journal `command` field. Default `run`. */
  readonly command?: string;
  /** Use this journal (already holding resources made before the run) instead of a new one. */
  readonly journal?: Journal;
  readonly operation?: string;
  /** stdio of a started command. Default `inherit`. */
  readonly stdio?: ProcessDomainOptions['stdio'];
  /** Wraps the domain the loop drives (the demo records step times). */
  readonly wrapDomain?: (d: ProcessDomain) => DomainAdapter;
  /** Called after each committed checkpoint, after the view. */
  readonly onCheckpoint?: (f: CheckpointFigures, devices: CheckpointDevices) => void;
  /** Called once the loop runs (devices set up). */
  readonly onRunning?: (ctx: { domain: ProcessDomain; devices: CheckpointDevices; stop: AbortController }) => void;
  /** Handle SIGINT/SIGTERM (first: graceful stop, second: abort). Default true. */
  readonly handleSignals?: boolean;
}

export interface RunOutcome {
  readonly ok: boolean;
  readonly summary: RunSummary;
  readonly loop: LoopResult | undefined;
  readonly error: RemusError | undefined;
  /** What stopped the run by request: a signal name or `duration`; undefined otherwise. */
  readonly stoppedBy: string | undefined;
  /** True when everything the run made was removed (the journal is gone). */
  readonly clean: boolean;
  readonly operation: string;
}

/**
 * Loads the config file and the plugins it names, and checks every device
 * against them (kinds, params, each subkind's checkParams): everything that
 * can fail before the host is touched. Throws one error listing every
 * problem (config keys and values, plugins, kinds, params) at once.
 */
export async function prepare(file: string): Promise<{ config: RemusConfig; built: BuiltOps; dirs: string[] }> {
  const { config, problems } = checkConfig(readJsonFile(file));
  if (config === undefined) throw configError(file, problems);
  const dirs = pluginDirsFor(file);
  // Plugins load only from a valid list; devices are checked only when the list of them is valid.
  const pluginsValid = !problems.some((p) => p.path.startsWith('plugins'));
  const devicesValid = !problems.some((p) => p.path.startsWith('devices'));
  const found = pluginsValid ? await collectOps(config.plugins, devicesValid ? config.devices : undefined, dirs) : { built: { ops: [], plugins: [] }, problems: [], code: undefined };
  const all = [...problems, ...found.problems];
  if (all.length > 0) throw configError(file, all, all.every((p) => p.path.endsWith('.package')) ? found.code : undefined);
  return { config, built: found.built, dirs };
}

/** Runs one protected operation; never throws for run failures (see `RunOutcome.error`). */
export async function runProtected(options: RunOptions, built: BuiltOps): Promise<RunOutcome> {
  const { config, view } = options;
  const operation = options.journal?.data.operation ?? options.operation ?? newOperationId();
  const figures = view.figures;
  // Everything below that can reject input does so before the journal exists.
  const stop = new AbortController();
  const abort = new AbortController();
  const devices = createCheckpointDevices({
    ops: built.ops,
    devices: config.devices,
    timeouts: config.timeouts,
    operationId: operation,
    signal: abort.signal,
  });
  const d = config.domain;
  let journal: Journal | undefined = options.journal;
  const domain: ProcessDomain | CriuDomain =
    d.type === 'criu'
      ? await criuRunDomain(d, { operation, pluginDirs: options.pluginDirs, forWhat: `remus ${options.command ?? 'run'}`, onCgroup: (path) => journal?.addCgroup(path), onWarning: (w) => view.say(w), onDump: (f) => view.event('dump', { ...f }) })
      : (await loadDomainProcess(`remus ${options.command ?? 'run'} (the process domain)`, options.pluginDirs)).processDomain({
          ...(d.command ? { command: d.command } : { pid: d.pid as number }),
          cwd: d.cwd,
          env: d.env,
          cgroup: d.cgroup,
          operation,
          stdio: options.stdio ?? 'inherit',
          ack: d.ack.type === 'remote' ? { type: 'remote', address: 'path' in d.ack ? { path: d.ack.path } : { host: d.ack.host, port: d.ack.port } } : d.ack,
          onResource: (r) => (r.type === 'cgroup' ? journal?.addCgroup(r.path) : journal?.addProcess(r.pid, 'domain command')),
        });
  /** The process domain, for the demo's hooks (undefined for a criu domain). */
  const processOnly = d.type === 'criu' ? undefined : (domain as ProcessDomain);
  const journalSpec = {
    stateDir: options.stateDir,
    operation,
    command: options.command ?? 'run',
    plugins: config.plugins.map((p, i) => {
      const loaded = built.plugins[i];
      return { package: p.package, from: loaded?.from ?? process.cwd(), ...(loaded ? { dir: loaded.dir, version: loaded.plugin.version } : {}), subkinds: p.subkinds };
    }),
    devices: [...config.devices],
    domainMode: d.type !== 'criu' && d.command ? ('command' as const) : ('pid' as const),
  };

  let stoppedBy: string | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (!stop.signal.aborted) {
      stoppedBy = sig;
      view.say(`${sig}: stopping after the current checkpoint (again to abort)`);
      view.event('stopping', { signal: sig });
      stop.abort(new RemusError('ABORTED', `stopped by ${sig}`));
    } else {
      view.event('aborting', { signal: sig });
      abort.abort(new RemusError('ABORTED', `aborted by a second ${sig}`));
    }
  };

  let error: RemusError | undefined;
  let loop: LoopResult | undefined;
  let realtime: RealtimeHandle | undefined;
  const lifecycle = await runLifecycle({
    journal: options.journal ?? journalSpec,
    ...((options.handleSignals ?? true) ? { onSignal } : {}),
    body: async (j) => {
      journal = j;
      const durationTimer =
        config.durationMs === undefined
          ? undefined
          : setTimeout(() => {
              stoppedBy ??= 'duration';
              stop.abort();
            }, config.durationMs);
      view.event('start', { operation, journal: j.path, intervalMs: config.intervalMs, devices: config.devices.map((x) => x.id), ops: built.ops.map((o) => o.name) });
      try {
        await domain.start(AbortSignal.any([abort.signal, AbortSignal.timeout(30_000)]));
        view.say(`domain ${domain.name}: pid ${domain.pid}, cgroup ${domain.cgroupPath} (v${domain.cgroupVersion})`);
        view.event('domain', { name: domain.name, pid: domain.pid, cgroup: domain.cgroupPath, cgroupVersion: domain.cgroupVersion });
        if (stop.signal.aborted) return;
        await devices.setup();
        const assignments = devices.assignments().map((a) => ({ device: a.device, subkind: a.subkind }));
        for (const a of assignments) view.say(`device ${a.device}: ${a.subkind}`);
        view.event('setup', { assignments });
        realtime = await loopScheduling(config.realtime, view, abort.signal);
        view.start();
        if (processOnly) options.onRunning?.({ domain: processOnly, devices, stop });
        loop = await runCheckpointLoop({
          devices,
          domain: options.wrapDomain && processOnly ? options.wrapDomain(processOnly) : domain,
          intervalMs: config.intervalMs,
          schedule: config.schedule,
          maxCheckpoints: config.maxCheckpoints,
          onFailure: config.onFailure,
          domainTimeoutMs: config.domainTimeoutMs,
          stop: stop.signal,
          signal: abort.signal,
          onCheckpoint: (f) => {
            const perDevice = devices.stats();
            const totals = sumStats(perDevice);
            figures.add(f, totals);
            view.checkpoint(f, totals, perDevice);
            options.onCheckpoint?.(f, devices);
          },
        });
      } finally {
        view.stop();
        if (durationTimer) clearTimeout(durationTimer);
        // Teardown runs at normal priority (what it starts would not inherit the policy anyway: reset-on-fork).
        const left = await realtime?.restore();
        if (left) view.say(`warning: ${left}`);
      }
    },
    finish: async (_j, { error: e }) => {
      if (e !== undefined) error = e instanceof RemusError ? e : new RemusError('OP_FAILED', describeCause(e) ?? 'unknown failure', { cause: e });
      // The loop tears the devices down; this covers a failure before the loop ran.
      let clean = true;
      await devices.teardown().catch((t: unknown) => {
        clean = false;
        error ??= t as RemusError;
      });
      try {
        await domain.stop();
      } catch (t) {
        clean = false;
        error ??= t as RemusError;
      }
      const leftover = (f: RemusError): boolean => f.op === 'teardown' || f.op === 'cleanup';
      if (error && (error.op === 'teardown' || error.failures.some(leftover))) clean = false;
      return clean;
    },
  });
  const summary = figures.summary();
  return { ok: error === undefined, summary, loop, error, stoppedBy, clean: lifecycle.clean, operation };
}

/**
 * Puts the thread that runs the checkpoint loop (this one) under SCHED_FIFO
 * as `mode` says (see `RemusConfig.realtime`), and tells the view what it
 * runs under (`scheduling` event). `auto`: a refusal is a warning and the
 * loop runs at normal priority; `on`: a refusal fails the run.
 */
async function loopScheduling(mode: RemusConfig['realtime'], view: ProgressView, signal: AbortSignal): Promise<RealtimeHandle | undefined> {
  const { handle: h, refused, report } = await applyRealtime(mode, { signal });
  if (h) view.say(`checkpoint loop: SCHED_FIFO priority ${h.priority}${h.already ? ' (as started)' : ''}`);
  if (refused) view.say(`warning: the checkpoint loop runs at normal priority: ${refused.message} (set "realtime": "off" in the config, or --realtime off, to not ask)`);
  view.event('scheduling', { ...report });
  return h;
}

/** Prints the end of a run: summary lines, or the `end` event. */
export function report(view: ProgressView, out: Writable, outcome: RunOutcome, mode: ViewMode): void {
  const s = outcome.summary;
  if (mode === 'json') {
    view.event('end', {
      ok: outcome.ok,
      operation: outcome.operation,
      stoppedBy: outcome.stoppedBy ?? outcome.loop?.stoppedBy,
      clean: outcome.clean,
      summary: s,
      ...(outcome.error ? { error: outcome.error.toJSON() } : {}),
    });
    return;
  }
  if (mode === 'quiet') return;
  out.write(
    [
      `checkpoints: ${s.checkpoints} (${s.rate.toFixed(1)}/s)`,
      `pause: p50 ${ms(s.pauseP50Ms)}, p99 ${ms(s.pauseP99Ms)}`,
      `commit latency: p50 ${ms(s.commitLatencyP50Ms)}, p99 ${ms(s.commitLatencyP99Ms)}`,
      ...(['held', 'released', 'dropped'] as const).filter((k) => s.devices[k] !== undefined).map((k) => `${k === 'held' ? 'held now' : k}: ${s.devices[k]} packets`),
      outcome.error ? `failed: [${outcome.error.code}] ${outcome.error.message}` : `stopped: ${outcome.stoppedBy ?? outcome.loop?.stoppedBy ?? 'request'}`,
      ...(outcome.clean ? [] : ['some resources could not be removed: run `remus cleanup`']),
    ].join('\n') + '\n',
  );
}

export { stateDir };
