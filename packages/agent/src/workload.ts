/**
 * The protected workload: what the agent runs while its host is primary and
 * replicates to the backup. The agent owns the arbiter, the epoch, the peer
 * channel and the checkpoint loop; a workload only provides
 *
 * - a checker for the state records the backup receives (`checkState`),
 * - `startPrimary`: start serving from the last acknowledged state record
 *   (or from nothing on a fresh pair) and hand the loop a core
 *   `DomainAdapter` (suspend, save -> `StateSink.send`, resume, waitAck ->
 *   `StateSink.waitAck`) plus its output device (a `SubkindOps`; its
 *   `commit` is the only place output may leave, its `teardown` drops what
 *   was never released),
 * - `close`: stop and fail closed (held output dropped, the service gone).
 *
 * Implementations: the counter service (`service.type: "counter"`), `process`
 * (below) and `criu` (criu-workload.ts); `workloadFor` (workloads.ts) picks one.
 * See the README, "The protected service (workloads)", for when each member is called.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { RemusError, createSubkind, describeCause, loadPlugin, newOperationId, type DomainAdapter, type SubkindOps } from '@remus/core';
import { ProcessDomain, cleanupOperationCgroup } from '@remus/domain-process';
import { forHost, type ProcessServiceConfig, type ServiceOutputConfig } from './config.js';
import { CounterService, type Release, type StateSink } from './service.js';

/** What `startPrimary` receives. */
export interface WorkloadStart {
  /** This host's name (stamped on answers, used in messages). */
  readonly host: string;
  /** The fencing epoch of the role this primary holds. */
  readonly epoch: number;
  /**
   * The last state record this host acknowledged as backup (bytes a
   * previous primary's `save` sent), or undefined: start from nothing
   * (a fresh pair).
   */
  readonly state: Uint8Array | undefined;
  /** Where clients reach the service on this host (`hosts[i].service`). */
  readonly listen: { readonly host: string; readonly port: number };
  /** Called by the output device's commit with what it released (the `release` event). */
  readonly onRelease: (r: Release) => void;
  /**
   * A workload whose output device is a subkind (its replies leave through
   * the kernel) calls this before its service can send anything: the agent
   * reaps what a killed agent's device left, then sets the device up, and it
   * holds everything from then (the phase's first checkpoint loop uses it).
   * Without it the service's first replies (until the loop starts) would
   * leave unheld. At most once per phase; the agent tears it down if
   * `startPrimary` then fails.
   */
  readonly hold: (output: SubkindOps, params?: Readonly<Record<string, unknown>>) => Promise<void>;
  /** Aborted when the agent stops. */
  readonly signal: AbortSignal;
}

/** A workload running as primary. One per primary phase; closed when the phase ends. */
export interface PrimaryWorkload {
  /** The domain the checkpoint loop drives; `save` must send one whole state record through `sink`. */
  domain(sink: StateSink): DomainAdapter;
  /** The output device's operations; the agent adds one device `{ id: 'output', kind: output.kind, params: outputParams }`. */
  readonly output: SubkindOps;
  /** The output device's params (a NIC subkind's `ifname`, `netns`...). */
  readonly outputParams?: Readonly<Record<string, unknown>>;
  /** Fail closed: drop unreleased output, stop the service. Idempotent; called on deposition and stop. */
  close(): Promise<void>;
}

/** A pluggable protected workload (selected by `service.type`, or passed as `AgentOptions.workload`). */
export interface AgentWorkload {
  /** The `service.type` it implements. */
  readonly type: string;
  /** Largest state record the backup accepts from this workload's primary, bytes. Default 1 MiB. */
  readonly maxStateBytes?: number;
  /**
   * Backup side: checks a state record the backup just received (it is
   * already acknowledged). Returns fields shown in `status.latest` and the
   * `state` event; throws to refuse it (the backup then drops the state and
   * the session, and is not eligible until a good full state arrives).
   */
  checkState(state: Uint8Array): Record<string, unknown>;
  /** Primary side: start serving from `start.state`. Throws if the service cannot start (the agent resigns). */
  startPrimary(start: WorkloadStart): Promise<PrimaryWorkload>;
}

/** The built-in counter service as a workload: state `{"counter": N}`. */
export function counterWorkload(): AgentWorkload {
  return {
    type: 'counter',
    checkState(state) {
      const counter = (JSON.parse(Buffer.from(state).toString('utf8')) as { counter?: unknown }).counter;
      if (typeof counter !== 'number' || !Number.isSafeInteger(counter) || counter < 0) throw new Error('state is not {"counter": N}');
      return { counter };
    },
    async startPrimary(start) {
      const counter = start.state ? (this.checkState(start.state).counter as number) : 0;
      const service = new CounterService(start.host, counter);
      await service.listen(start.listen);
      return {
        domain: (sink) => service.domain(sink),
        output: service.outputSubkind(start.onRelease),
        close: () => service.close(),
      };
    },
  };
}

/** The output device's ops of a `service.output` plugin, loaded once (from next to the config) on first use. */
export function pluginOutput(o: ServiceOutputConfig): () => Promise<SubkindOps> {
  let ops: Promise<SubkindOps> | undefined;
  return () => (ops ??= loadPlugin(o.package, { from: o.from }).then((p) => createSubkind(p, o.subkind, {})));
}

/** Largest state file the process workload replicates (a state record is sent whole each checkpoint). */
export const MAX_PROCESS_STATE_BYTES = 4 << 20;

/** Reaps the cgroup (and the processes in it) a killed agent's primary phase left, as its record names it. */
export async function reapPrevious(record: string): Promise<void> {
  let prev: { operation?: unknown; cgroup?: unknown };
  try {
    prev = JSON.parse(readFileSync(record, 'utf8')) as typeof prev;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new RemusError('STATE', `${record} (the last primary phase's cgroup) is unreadable: ${describeCause(e)}; remove it once no process of the service runs`);
  }
  if (typeof prev.operation !== 'string' || typeof prev.cgroup !== 'string') throw new RemusError('STATE', `${record} is not a cgroup record: remove it once no process of the service runs`);
  // Only `<freezer root>/remus-<operation>` is touched (cleanupOperationCgroup checks the form first).
  await cleanupOperationCgroup({ operation: prev.operation, path: prev.cgroup, mode: 'reap' });
  rmSync(record, { force: true });
}

/** The state file's bytes; empty when the command has not written it yet. */
function readState(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
    throw e;
  }
}

/** Replaces `file` with `bytes` atomically (a temporary file in the same directory, then rename; mode 0600). */
export function writeAtomic(file: string, bytes: Uint8Array): void {
  const tmp = `${file}.remus-${randomBytes(6).toString('hex')}`;
  writeFileSync(tmp, bytes, { mode: 0o600 });
  renameSync(tmp, file);
}

/**
 * `service.type: "process"`: the operator's command under the process
 * domain. Its state is the file `stateFile`, which the command keeps (and
 * replaces atomically: a frozen command must never leave it half written).
 * - `startPrimary`: the last acknowledged state record is written to
 *   `stateFile` first (an empty record: the file is removed; a fresh pair
 *   keeps the file as it is), then the
 *   command starts (`{host}` in its arguments and in `stateFile` is this
 *   host's name), in its own cgroup with `REMUS_HOST`, `REMUS_EPOCH`,
 *   `REMUS_STATE_FILE` and `REMUS_LISTEN` (`HOST:PORT`, `hosts[i].service`)
 *   in its environment;
 * - the domain: suspend/resume freeze and thaw the cgroup; `save` reads
 *   `stateFile` while frozen (no file yet: an empty record) and sends it whole (refused above
 *   {@link MAX_PROCESS_STATE_BYTES}); `waitAck` is the sink's;
 * - the output: the plugin's subkind (loaded once, from next to the config)
 *   on the device params given: its commit is the only place the command's
 *   replies leave, its teardown drops what was never released;
 * - `close`: the command is stopped (SIGTERM, then SIGKILL) and its cgroup removed.
 */
export function processWorkload(s: ProcessServiceConfig): AgentWorkload {
  const output = pluginOutput(s.output);
  return {
    type: 'process',
    // The record is the file, plus the frame's own bytes.
    maxStateBytes: MAX_PROCESS_STATE_BYTES + 4096,
    checkState(state) {
      if (state.byteLength > MAX_PROCESS_STATE_BYTES) throw new Error(`state record of ${state.byteLength} bytes is larger than ${MAX_PROCESS_STATE_BYTES}`);
      return { stateBytes: state.byteLength };
    },
    async startPrimary(start) {
      const stateFile = forHost(s.stateFile, start.host);
      // A previous primary phase of this host that ended without close() (agent killed) left its
      // cgroup, perhaps with the command in it: reap it first (its record names it).
      const record = `${stateFile}.operation`;
      await reapPrevious(record);
      const out = await output();
      // Held before the command can answer anyone.
      await start.hold(out, s.output.params);
      // The last acknowledged state; an empty record is "no file yet" (the command starts fresh).
      if (start.state && start.state.byteLength > 0) writeAtomic(stateFile, start.state);
      else if (start.state) rmSync(stateFile, { force: true });
      const domain = new ProcessDomain({
        command: s.command.map((a) => forHost(a, start.host)),
        env: { REMUS_HOST: start.host, REMUS_EPOCH: String(start.epoch), REMUS_STATE_FILE: stateFile, REMUS_LISTEN: `${start.listen.host}:${start.listen.port}` },
        stdio: ['ignore', 'ignore', 'inherit'],
        operation: newOperationId(),
        // Recorded before the cgroup exists, so a killed agent's successor finds it.
        onResource: (r) => {
          if (r.type === 'cgroup') writeAtomic(record, Buffer.from(JSON.stringify({ operation: domain.operation, cgroup: r.path })));
        },
      });
      await domain.start(AbortSignal.any([start.signal, AbortSignal.timeout(30_000)]));
      return {
        domain: (sink): DomainAdapter => ({
          name: `process ${s.command[0]}`,
          suspend: (ctx) => domain.suspend(ctx),
          save: (ctx) => {
            const bytes = readState(stateFile);
            if (bytes.byteLength > MAX_PROCESS_STATE_BYTES) {
              throw new RemusError('OP_FAILED', `service.stateFile ${stateFile} holds ${bytes.byteLength} bytes, more than the ${MAX_PROCESS_STATE_BYTES} a state record may carry`);
            }
            sink.send(ctx, bytes);
          },
          resume: (ctx) => domain.resume(ctx),
          waitAck: (ctx) => sink.waitAck(ctx),
        }),
        output: out,
        outputParams: s.output.params,
        close: async () => {
          await domain.stop();
          rmSync(record, { force: true });
        },
      };
    },
  };
}
