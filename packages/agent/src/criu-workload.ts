/**
 * `service.type: "criu"`: the operator's command under @remus/domain-criu.
 * Its state is the process tree itself (memory, files, TCP connections).
 *
 * - Primary, fresh pair (`start.state` undefined): the command starts
 *   (`{host}` in its arguments replaced; detached, stdio on /dev/null, which
 *   CRIU restores anywhere; `REMUS_HOST`, `REMUS_EPOCH`, `REMUS_LISTEN` in its
 *   environment) and the CRIU domain takes its tree into a freezer cgroup.
 * - Primary after a failover (`start.state` a record): the tree is restored
 *   with `criu restore` from this host's last complete checkpoint, in the
 *   service's network namespace (`service.netns`), then protected the same
 *   way. A restored tree keeps the environment it was started with.
 * - Each checkpoint (core's loop): freeze; `criu dump` of the frozen tree
 *   into `<workDir>/dumps/<N>` (incremental over the last acknowledged dump of
 *   the same session; the first dump of each session is full); the images
 *   go to the backup as ONE state record (domain-criu's frames BEGIN,
 *   FILE..., END) inside the agents' authenticated session; thaw; wait for the
 *   backup's acknowledgement, which it sends only for a whole record.
 * - Backup (`checkState`): each record is stored with domain-criu's
 *   checkpoint receiver into `<workDir>/rx-<id>` (sha256 checked, synced, then
 *   the restore point moves); a refused record leaves the restore point as
 *   it was and the agent drops the session (it is then not eligible until a
 *   full record arrives). A restore consumes its directory; the next backup
 *   phase starts a new one.
 * - `close`: the tree is killed with its cgroup (SIGKILL of every member,
 *   the cgroup removed) and the local images removed.
 *
 * The cgroup is recorded in `<workDir>/service.json` before anything moves
 * into it; the next promotion on this host reaps what a killed agent's phase
 * left (the service it ran) before starting or restoring.
 *
 * Limits: PIDs are restored as they were (the backup must have them free: a
 * pid namespace per service, or another machine); the service's sockets need
 * the same local addresses on the backup (its own network namespace with the
 * same addresses on both hosts). One checkpoint record is at most
 * {@link MAX_CRIU_RECORD_BYTES}.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { RemusError, describeCause, isRemusError, newOperationId, type DomainStepContext } from '@remus/core';
import { CriuDomain, assertCriuReady, createCheckpointReceiver, failover, type CheckpointReceiver, type CheckpointTransport, type CriuReady } from '@remus/domain-criu';
import { cleanupOperationCgroup } from '@remus/domain-process';
import { forHost, type CriuServiceConfig } from './config.js';
import { pluginOutput, reapPrevious, writeAtomic, type AgentWorkload } from './workload.js';

/** Largest checkpoint record (one dump's images) a backup accepts, bytes. */
export const MAX_CRIU_RECORD_BYTES = 256 << 20;

/** Before the first session: a checkpoint cannot be sent. */
const NO_SESSION: CheckpointTransport = {
  send: () => {
    throw new RemusError('STATE', 'criu service: no session to the backup yet');
  },
  waitAck: () => Promise.reject(new RemusError('STATE', 'criu service: no session to the backup yet')),
};

/** The `criu` workload of host `host` (see the file header). */
export function criuWorkload(s: CriuServiceConfig, host: string): AgentWorkload {
  const workDir = forHost(s.workDir, host);
  const netns = s.netns === undefined ? undefined : forHost(s.netns, host);
  const record = join(workDir, 'service.json');
  /** Which criu, run where: for the checks, the restore and the domain alike. */
  const criu = { ...(s.criuPath ? { criuPath: s.criuPath } : {}), ...(netns !== undefined ? { netns } : {}) };
  const output = pluginOutput(s.output);
  let receiver: CheckpointReceiver | undefined;
  /**
   * CRIU's checks (three criu runs: seconds on a slow CPU), run once and kept: a backup starts them with its
   * first record, so a promotion does not wait for them. A failed check is run again next time.
   */
  let ready: Promise<CriuReady> | undefined;
  const readyOnce = (): Promise<CriuReady> =>
    (ready ??= assertCriuReady({ ...criu, signal: AbortSignal.timeout(60_000) }).catch((e: unknown) => {
      ready = undefined;
      throw e;
    }));
  /** The receiver of this backup phase; a new directory (and the others removed) when none is open or a restore consumed it. */
  const openReceiver = (): CheckpointReceiver => {
    if (receiver && !existsSync(join(receiver.dir, '.failover'))) return receiver;
    mkdirSync(workDir, { recursive: true });
    // Older chains (a killed agent's, a consumed restore's) are never restored: the session's state is in this agent's memory.
    for (const e of readdirSync(workDir)) if (e.startsWith('rx-')) rmSync(join(workDir, e), { recursive: true, force: true });
    receiver = createCheckpointReceiver({ dir: join(workDir, `rx-${randomBytes(6).toString('hex')}`), maxCheckpointBytes: MAX_CRIU_RECORD_BYTES });
    return receiver;
  };
  return {
    type: 'criu',
    maxStateBytes: MAX_CRIU_RECORD_BYTES,
    checkState(state) {
      if (state.byteLength === 0) throw new Error('an empty state record is not a CRIU checkpoint');
      const p = openReceiver().store(state);
      readyOnce().catch(() => undefined);
      return { criuCheckpoint: p.checkpoint, criuBytes: p.bytes, incremental: p.parent !== null };
    },
    async startPrimary(start) {
      const restore = start.state !== undefined && start.state.byteLength > 0;
      const rx = receiver;
      if (restore && !rx?.restorePoint()) throw new RemusError('STATE', `criu service: no complete checkpoint in ${workDir} to restore (the backup's records were not kept)`);
      // A phase of this host whose agent was killed left its cgroup, perhaps with the service in it: reaped first.
      await reapPrevious(record);
      const out = await output();
      // Held before the service can answer anyone (a restored tree answers the moment criu lets it run).
      await start.hold(out, s.output.params);
      mkdirSync(workDir, { recursive: true });
      const dumps = join(workDir, 'dumps');
      rmSync(dumps, { recursive: true, force: true });
      const signal = AbortSignal.any([start.signal, AbortSignal.timeout(120_000)]);
      const checked = await readyOnce();
      let pid: number;
      if (restore && rx) {
        pid = (await failover({ restorePoint: rx.dir, ...criu, ready: checked, signal })).pid;
        // The restored tree needs no image any more; the next backup phase opens a new directory.
        receiver = undefined;
        rmSync(rx.dir, { recursive: true, force: true });
      } else {
        pid = await startCommand(s.command.map((a) => forHost(a, start.host)), {
          REMUS_HOST: start.host,
          REMUS_EPOCH: String(start.epoch),
          REMUS_LISTEN: `${start.listen.host}:${start.listen.port}`,
        });
      }
      const domain: CriuDomain = new CriuDomain({
        pid,
        workDir: dumps,
        transport: NO_SESSION,
        ...criu,
        dumpArgs: s.dumpArgs,
        ...(s.fullEvery !== undefined ? { fullEvery: s.fullEvery } : {}),
        operation: newOperationId(),
        ready: checked,
        // Recorded before any process moves into it, so a killed agent's successor finds it.
        onResource: (r) => writeAtomic(record, Buffer.from(JSON.stringify({ operation: domain.operation, cgroup: r.path }))),
      });
      const kill = async (): Promise<void> => {
        const cgroup = domain.cgroupPath;
        if (cgroup) await cleanupOperationCgroup({ operation: domain.operation, path: cgroup, mode: 'reap' });
        else {
          // The domain never took the tree (its start failed and undid itself): the process this phase started or restored.
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
        await domain.stop();
        rmSync(record, { force: true });
        rmSync(dumps, { recursive: true, force: true });
      };
      try {
        await domain.start(signal);
      } catch (e) {
        await kill().catch(() => undefined);
        throw new RemusError(isRemusError(e) ? e.code : 'OP_FAILED', `criu service: cannot protect process ${pid}: ${describeCause(e)}`, { cause: e });
      }
      return {
        domain: (sink) => {
          // A new session: the next dump is full (the backup's chain starts again).
          domain.useTransport({ send: (ctx: DomainStepContext, rec: Buffer) => sink.send(ctx, rec), waitAck: (ctx: DomainStepContext) => sink.waitAck(ctx) });
          return domain;
        },
        output: out,
        outputParams: s.output.params,
        close: kill,
      };
    },
  };
}

/** Starts the service detached (its own session; stdio on /dev/null) and resolves with its pid. */
function startCommand(argv: readonly string[], env: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), { detached: true, stdio: 'ignore', env: { ...process.env, ...env } });
    child.once('error', (e) => reject(new RemusError('OP_FAILED', `criu service: cannot start ${argv[0]}: ${describeCause(e)}`, { cause: e })));
    child.once('spawn', () => {
      child.unref();
      resolve(child.pid as number);
    });
  });
}
