/**
 * The agent: one long-running process per host of a Remus pair. It runs
 * this host's side, primary or backup, and moves between them:
 *
 *     start ── etcd reachable? (else ARBITER_FAILED, nothing runs)
 *       └─> backup ── eligible ──> campaigning ── lease won ──> promoting ── fence ok ──> primary
 *             ^                                                      │ fence failed: resign      │
 *             └──────────────────────────────────────────────────────┴──── role lost (deposed) ──┘
 *
 * Safety (see ha.md; the numbers are its rules):
 * - (2, 3, 4) The primary runs core's `runCheckpointLoop` under the etcd
 *   arbiter: an epoch's answers leave only after the backup acknowledged the
 *   checkpoint and while the role is held before its monotonic deadline.
 *   Without a connected backup nothing is released ("no backup, no output":
 *   the service stalls rather than release state the backup lacks).
 * - Fail-closed policy of a primary that loses its role: it releases
 *   nothing more (core fails the commit with ROLE_LOST and suspends the
 *   domain), drops its held answers, stops its service, and comes back as a
 *   backup that takes a full state from the new primary before it may
 *   campaign again (6) — except a primary that had marked its backup
 *   outdated: it keeps its last acknowledged state and may campaign with it
 *   while the `outdated` record is still its own mark (see #notEligible).
 * - (5) A backup campaigns only when it holds state acknowledged under the
 *   current primary (`synced`), or when the cluster was never initialized
 *   (no `initialized` record in etcd: a fresh pair). etcd grants the role
 *   only after the old lease is gone on the server plus `marginMs`; then the
 *   hard fence runs (a failure blocks the promotion: resign, stay backup),
 *   then the backup's last acknowledged state becomes the primary's.
 * - (2) Every state frame and ack carries the epoch; a backup admits the
 *   primary's epoch into its persisted epoch store and refuses lower ones.
 */
import { chmodSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import {
  RemusError,
  applyRealtime,
  createCheckpointDevices,
  describeCause,
  isRemusError,
  openEpochStore,
  reapDevices,
  roleLapse,
  runCheckpointLoop,
  runScript,
  sleep,
  withDeadline,
  type Arbiter,
  type CheckpointDevices,
  type DomainStepContext,
  type DeviceSpec,
  type EpochStore,
  type RealtimeHandle,
  type Role,
  type SubkindOps,
} from '@remus/core';
import { etcdArbiter } from '@remus/arbiter-etcd';
import { BackupLink, BackupServer } from '@remus/domain-process';
import { forHost, pairOf, type AgentConfig, type HostConfig } from './config.js';
import { AgentErrors, connectPeer, listenPeer, loadTls, type PeerConnection, type PeerMessage, type TlsMaterial } from './peer.js';
import { monoNow, type Release, type StateSink } from './service.js';
import { writeAtomic, type AgentWorkload, type PrimaryWorkload } from './workload.js';
import { workloadFor } from './workloads.js';

/** Where the agent is in its lifecycle (see the file header). */
export type AgentMode = 'starting' | 'backup' | 'campaigning' | 'promoting' | 'primary' | 'stopped';

/** One line of `--json` output. Every event has `type`, `host`, `time` (ISO) and `mono` (CLOCK_MONOTONIC ms). */
export interface AgentEvent {
  readonly type: string;
  readonly host: string;
  readonly time: string;
  readonly mono: number;
  readonly [field: string]: unknown;
}

/** What `remus agent status` shows. */
export interface AgentStatus {
  readonly host: string;
  readonly cluster: string;
  readonly mode: AgentMode;
  /** Epoch of the role held, or of the primary whose state this backup holds. */
  readonly epoch: number;
  /** Highest epoch this host has seen (persisted). */
  readonly highestEpoch: number;
  readonly roleHeld: boolean;
  /** ms until the role's deadline (negative: passed); null when not held. */
  readonly deadlineInMs: number | null;
  /** Backup: holds the primary's last acknowledged state. */
  readonly synced: boolean;
  /** The last acknowledged state: epoch, checkpoint, and the workload's `checkState` fields (the counter's `counter`). */
  readonly latest: { readonly epoch: number; readonly checkpoint: number; readonly [field: string]: unknown } | null;
  /** Primary: checkpoints committed in this role; backup: checkpoints acknowledged. */
  readonly checkpoints: number;
  readonly peerConnected: boolean;
  readonly pid: number;
}

export interface AgentOptions {
  readonly config: AgentConfig;
  /** Which host of the config this agent is. */
  readonly host: string;
  readonly onEvent?: (e: AgentEvent) => void;
  /** The arbiter; default the etcd arbiter of the config. */
  readonly arbiter?: Arbiter;
  /** The protected workload; default the one of `config.service.type` (see workload.ts). */
  readonly workload?: AgentWorkload;
}

/** Record in the arbiter saying the pair has had a primary (a backup without state may no longer campaign). */
const INITIALIZED = 'initialized';
/** Record naming the backup the primary released output without (`<host>@<epoch>`; empty: none). */
const OUTDATED = 'outdated';

/** The sink of a primary running without a backup: nothing sent, every checkpoint acknowledged at once. */
const SOLO: StateSink = { send: () => undefined, waitAck: () => Promise.resolve() };

export class Agent {
  readonly config: AgentConfig;
  readonly self: HostConfig;
  readonly peer: HostConfig;
  readonly stateDir: string;
  readonly workload: AgentWorkload;
  readonly #onEvent: ((e: AgentEvent) => void) | undefined;
  #arbiter: Arbiter | undefined;
  #epochs: EpochStore | undefined;
  #tls: TlsMaterial | undefined;
  #mode: AgentMode = 'starting';
  /** Role epoch while campaigning/promoting/primary; the session's epoch as backup. */
  #epoch = 0;
  /**
   * Backup state. Invariant: `latest` is the last state this backup
   * acknowledged, under `latest.epoch`; `synced` is true exactly when it is
   * set. Cleared when this host is deposed (its own state is then worthless).
   */
  #latest: { epoch: number; checkpoint: number; state: Uint8Array; fields: Record<string, unknown>; own?: true } | undefined;
  /** The primary's session to this backup (at most one). */
  #session: PeerConnection | undefined;
  /** The primary's link to the backup (at most one). */
  #link: PeerConnection | undefined;
  #checkpoints = 0;
  #stateWake: (() => void) | undefined;
  #servers: (Server | TlsServer)[] = [];
  /** The backup protocol's receiving end; sessions are handed to it after the hello. */
  #backup: BackupServer | undefined;

  constructor(options: AgentOptions) {
    this.config = options.config;
    const { self, peer } = pairOf(options.config, options.host);
    this.self = self;
    this.peer = peer;
    this.stateDir = forHost(options.config.stateDir, self.name);
    this.#onEvent = options.onEvent;
    this.#arbiter = options.arbiter;
    this.workload = options.workload ?? workloadFor(options.config.service, self.name);
  }

  get mode(): AgentMode {
    return this.#mode;
  }

  status(): AgentStatus {
    const role = this.#arbiter?.role();
    return {
      host: this.self.name,
      cluster: this.config.cluster,
      mode: this.#mode,
      epoch: this.#epoch,
      highestEpoch: this.#epochs?.highest() ?? 0,
      roleHeld: role?.held ?? false,
      deadlineInMs: role?.held ? (Number.isFinite(role.deadline) ? Math.round(role.deadline - performance.now()) : null) : null,
      synced: this.#latest !== undefined,
      latest: this.#latest ? { ...this.#latest.fields, epoch: this.#latest.epoch, checkpoint: this.#latest.checkpoint } : null,
      checkpoints: this.#checkpoints,
      peerConnected: !!((this.#session && !this.#session.closed) || (this.#link && !this.#link.closed)),
      pid: process.pid,
    };
  }

  #emit(type: string, fields: Record<string, unknown> = {}): void {
    try {
      this.#onEvent?.({ type, host: this.self.name, time: new Date().toISOString(), mono: monoNow(), ...fields });
    } catch {
      // A listener's fault does not stop the agent.
    }
  }

  #setMode(mode: AgentMode, fields: Record<string, unknown> = {}): void {
    this.#mode = mode;
    this.#emit('mode', { mode, epoch: this.#epoch, ...fields });
  }

  /**
   * Runs until `stop` fires (then a primary finishes its checkpoint and
   * resigns, so the backup takes over without waiting for the lease).
   * Rejects before anything runs when the TLS material is bad, etcd cannot be
   * reached (ARBITER_FAILED) or an address cannot be bound.
   */
  async run(stop: AbortSignal): Promise<void> {
    const c = this.config;
    this.#tls = loadTls(c, this.self.name);
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    let lastWaiting = '';
    this.#epochs = openEpochStore(join(this.stateDir, 'epoch.json'));
    const arbiter = (this.#arbiter ??= etcdArbiter({
      endpoints: c.etcd.endpoints,
      prefix: c.etcd.prefix,
      host: this.self.name,
      ttlSeconds: c.ttlSeconds,
      marginMs: c.marginMs,
      promotionMarginMs: c.marginMs,
      onEvent: (e) => {
        // The election is polled: say "waiting" once per holder waited for, not every poll.
        if (e.type === 'waiting') {
          const behind = e.behind.map((b) => b.key).join(',');
          if (behind === lastWaiting) return;
          lastWaiting = behind;
        } else lastWaiting = '';
        this.#emit('arbiter', { event: e });
      },
    }));
    if (typeof arbiter.read !== 'function' || typeof arbiter.publish !== 'function') {
      throw new RemusError('INVALID_ARGUMENT', `arbiter ${arbiter.name} has no fenced records (publish/read): the agent needs them to know whether a backup is outdated`);
    }
    try {
      try {
        await withDeadline((s) => arbiter.read?.(INITIALIZED, s), { what: `reading the pair's record from etcd (${c.etcd.endpoints.join(', ')})`, timeoutMs: Math.max(3000, c.ttlSeconds * 1000), signal: stop });
      } catch (e) {
        throw new RemusError('ARBITER_FAILED', `etcd is not reachable at start (${c.etcd.endpoints.join(', ')}): ${describeCause(e)}; nothing was started: this host runs neither primary nor backup. Check with: etcdctl --endpoints ${c.etcd.endpoints.join(',')} endpoint health`, { cause: e });
      }
      await this.#listen();
      this.#emit('started', { peer: this.peer.name, listen: `${this.self.peer.host}:${this.self.peer.port}`, ttlSeconds: c.ttlSeconds, marginMs: c.marginMs, pid: process.pid });
      while (!stop.aborted) {
        const promoted = await this.#backupPhase(stop);
        if (!promoted) break;
        await this.#primaryPhase(promoted.role, promoted.state, stop);
      }
    } finally {
      this.#setMode('stopped');
      this.#session?.close('agent stopping');
      this.#link?.close('agent stopping');
      await arbiter.close();
      for (const s of this.#servers) s.close();
      await this.#backup?.close();
      rmSync(join(this.stateDir, 'agent.sock'), { force: true });
    }
  }

  /** Peer listener (mutual TLS) and control socket (Unix, 0600). */
  async #listen(): Promise<void> {
    const tls = this.#tls as TlsMaterial;
    const backup = BackupServer.create({ epochs: this.#epochs, maxFrameBytes: this.workload.maxStateBytes ?? 1 << 20, maxConnections: 2 });
    backup.on('state', (e: { checkpoint: number; epoch: number }) => this.#onState(e));
    backup.on('refused', (e: RemusError) => this.#emit('state-refused', { code: e.code, reason: e.message }));
    this.#backup = backup;
    this.#servers.push(
      await listenPeer({
        tls,
        address: this.self.peer,
        expect: this.peer.name,
        onConnection: (conn) => this.#accept(conn),
        onRefused: (why, from) => this.#emit('peer-refused', { from, reason: why }),
      }),
    );
    const path = join(this.stateDir, 'agent.sock');
    rmSync(path, { force: true });
    const control = createServer((s) => {
      s.on('error', () => s.destroy());
      s.end(`${JSON.stringify(this.status())}\n`);
    });
    await new Promise<void>((resolve, reject) => {
      control.once('error', reject);
      control.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    this.#servers.push(control);
  }

  // ---- backup side -------------------------------------------------------

  /** A primary connected: hello, epoch check, then state frames acknowledged one by one (N+1). */
  #accept(conn: PeerConnection): void {
    const epochs = this.#epochs as EpochStore;
    const hello = setTimeout(() => conn.close('no hello within 5 s'), 5000);
    let session = false;
    const refuse = (code: string, message: string): void => {
      this.#emit('state-refused', { from: conn.peer, code, reason: message });
      conn.send({ t: 'refuse', code, message, mode: this.#mode, epoch: this.#epoch });
      conn.close(message);
    };
    conn.onClose((why) => {
      clearTimeout(hello);
      if (this.#session === conn) {
        this.#session = undefined;
        this.#emit('session-closed', { from: conn.peer, reason: why });
      }
    });
    conn.onMessage((m) => {
      if (!session) {
        clearTimeout(hello);
        if (m.t !== 'hello' || m.cluster !== this.config.cluster || m.host !== conn.peer) {
          return refuse(AgentErrors.PEER_REFUSED, `expected hello from ${conn.peer} of cluster ${this.config.cluster}, got ${JSON.stringify(m).slice(0, 200)}`);
        }
        const epoch = Number(m.epoch);
        if (this.#mode !== 'backup' && this.#mode !== 'campaigning') {
          if (this.#mode === 'primary' && epoch > this.#epoch) {
            // A primary with a higher epoch exists: this host's role is certainly gone. Fence now rather than at the deadline.
            this.#emit('higher-epoch-seen', { epoch, own: this.#epoch });
            void this.#arbiter?.resign();
          }
          return refuse('STATE', `${this.self.name} is ${this.#mode} (epoch ${this.#epoch}), not a backup`);
        }
        try {
          epochs.admit(epoch, `epoch of primary ${conn.peer}`);
        } catch (e) {
          return refuse(isRemusError(e) ? e.code : 'EPOCH_STALE', describeCause(e) ?? 'epoch refused');
        }
        this.#session?.close('replaced by a newer session');
        this.#session = conn;
        this.#epoch = epoch;
        session = true;
        conn.send({ t: 'welcome', host: this.self.name, highest: epochs.highest() });
        this.#emit('session', { from: conn.peer, epoch });
        // From here the stream carries @remus/domain-process's state/ack frames (N+1 only, epochs, bounds).
        (this.#backup as BackupServer).accept(conn.detach());
        return;
      }
    });
  }

  /** A state the backup server acknowledged: it becomes this backup's latest. */
  #onState(e: { checkpoint: number; epoch: number }): void {
    const server = this.#backup as BackupServer;
    const state = Uint8Array.from(server.latest);
    let fields: Record<string, unknown>;
    try {
      fields = this.workload.checkState(state);
    } catch (err) {
      // Acknowledged already (the frame was whole): keep nothing and drop the session.
      this.#emit('state-refused', { code: AgentErrors.PEER_REFUSED, reason: `checkpoint ${e.checkpoint}: ${describeCause(err) ?? 'state refused'}` });
      this.#latest = undefined;
      this.#session?.close('bad state');
      return;
    }
    this.#latest = { epoch: e.epoch, checkpoint: e.checkpoint, state, fields };
    this.#checkpoints++;
    this.#stateWake?.();
  }

  /**
   * Waits until this host may campaign, campaigns, fences and promotes.
   * Resolves with the role and the state to start from, or undefined on stop.
   */
  async #backupPhase(stop: AbortSignal): Promise<{ role: Role; state: Uint8Array | undefined } | undefined> {
    const arbiter = this.#arbiter as Arbiter;
    while (!stop.aborted) {
      this.#setMode('backup', { synced: this.#latest !== undefined });
      if (!(await this.#eligible(stop))) return undefined;
      this.#setMode('campaigning', { synced: this.#latest !== undefined });
      let role: Role;
      try {
        role = await arbiter.acquire(stop);
      } catch (e) {
        if (stop.aborted) return undefined;
        this.#emit('campaign-failed', { error: errorJson(e) });
        await sleep(1000, stop).catch(() => undefined);
        continue;
      }
      this.#epoch = role.epoch;
      this.#setMode('promoting', { epoch: role.epoch });
      this.#session?.close('this host won the role');
      const blocked = await this.#promotionBlocked(role, stop);
      if (blocked) {
        this.#emit('promotion-blocked', { epoch: role.epoch, reason: blocked });
        await arbiter.resign();
        await sleep(1000, stop).catch(() => undefined);
        continue;
      }
      return { role, state: this.#latest?.state };
    }
    return undefined;
  }

  /** Why this host, holding `role`, must not promote; undefined when it may (and then it is recorded). */
  async #promotionBlocked(role: Role, stop: AbortSignal): Promise<string | undefined> {
    const arbiter = this.#arbiter as Arbiter;
    const c = this.config;
    try {
      const why = await this.#notEligible(stop);
      if (why !== undefined) return why;
      (this.#epochs as EpochStore).admit(role.epoch, 'epoch of the role won');
      // Eligible without state means a fresh pair: no primary ever ran, there is nobody to fence.
      const fresh = !this.#latest;
      if (c.hardFence && !fresh) {
        const [file, ...args] = c.hardFence.command as [string, ...string[]];
        this.#emit('fencing', { command: c.hardFence.command, peer: this.peer.name, epoch: role.epoch });
        await runScript(file, args, {
          timeoutMs: c.hardFence.timeoutMs,
          signal: stop,
          env: { REMUS_FENCE_PEER: this.peer.name, REMUS_EPOCH: String(role.epoch), REMUS_CLUSTER: c.cluster },
        });
        this.#emit('fenced', { peer: this.peer.name, epoch: role.epoch });
      }
      if (fresh) await arbiter.publish?.(INITIALIZED, String(role.epoch), AbortSignal.any([stop, AbortSignal.timeout(3000)]));
      const lapse = roleLapse(arbiter.role(), role.epoch);
      if (lapse) return `the role lapsed while promoting: ${lapse}`;
      return undefined;
    } catch (e) {
      if (isRemusError(e, 'SCRIPT_FAILED') || isRemusError(e, 'SCRIPT_TIMEOUT')) {
        this.#emit('fence-failed', { error: errorJson(e) });
        return `${AgentErrors.FENCE_FAILED}: the hard fence failed (${describeCause(e)}); promotion blocked`;
      }
      return describeCause(e) ?? 'promotion failed';
    }
  }

  /**
   * Resolves true once this host may campaign: it holds state and the
   * primary has not marked it outdated, or the pair was never initialized.
   * False on stop. Reads the arbiter's records every 500 ms and whenever a
   * state arrives.
   */
  async #eligible(stop: AbortSignal): Promise<boolean> {
    let said = '';
    while (!stop.aborted) {
      try {
        const why = await this.#notEligible(stop);
        if (why === undefined) return true;
        if (why !== said) this.#emit('not-eligible', { reason: why });
        said = why;
      } catch (e) {
        if (stop.aborted) return false;
        this.#emit('etcd-error', { error: errorJson(e) });
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, 500);
        // Each wait gives its listener back: a backup may wait here for hours.
        function done(): void {
          clearTimeout(t);
          stop.removeEventListener('abort', done);
          resolve();
        }
        this.#stateWake = done;
        stop.addEventListener('abort', done, { once: true });
      });
      this.#stateWake = undefined;
    }
    return false;
  }

  /** Why this host may not act as primary now (records read linearizably), or undefined. */
  async #notEligible(stop: AbortSignal): Promise<string | undefined> {
    const arbiter = this.#arbiter as Arbiter;
    const read = (name: string): Promise<string | undefined> =>
      withDeadline(async (s) => arbiter.read?.(name, s), { what: `reading the ${name} record`, timeoutMs: 3000, signal: stop });
    const init = await read(INITIALIZED);
    if (init === undefined) return undefined;
    if (!this.#latest) return `no state of the current primary (the pair was initialized at epoch ${init}): waiting for a full state`;
    const outdated = await read(OUTDATED);
    if (this.#latest.own) {
      // Its own state of a primary run that marked the peer outdated: valid only while that mark
      // (a fenced write of epoch latest.epoch) is still the record: then no other host released output since.
      const mark = `${this.peer.name}@${this.#latest.epoch}`;
      if (outdated !== mark) return `own state of epoch ${this.#latest.epoch} is no longer the newest (the outdated record is ${JSON.stringify(outdated ?? '')}, not ${JSON.stringify(mark)}): waiting for a full state`;
      return undefined;
    }
    if (outdated?.startsWith(`${this.self.name}@`)) return `outdated: the primary released output this host never received (${outdated}): waiting for a full state`;
    return undefined;
  }

  // ---- primary side ------------------------------------------------------

  /** This process's output devices set up and not yet torn down (their operation ids). */
  readonly #liveOutputs = new Set<string>();

  /**
   * The record `STATE_DIR/outputs.json`: operation ids of output devices set up
   * and not yet torn down, written before each setup, so the next primary phase
   * on this host (this agent or one started after it was killed) reaps what a
   * dead one left.
   */
  #outputSetUp(id: string): void {
    this.#liveOutputs.add(id);
    this.#writeOutputs([...new Set([...this.#readOutputs(), id])]);
  }

  #outputTornDown(id: string): void {
    this.#liveOutputs.delete(id);
    this.#writeOutputs(this.#readOutputs().filter((x) => x !== id));
  }

  #readOutputs(): string[] {
    try {
      const v = JSON.parse(readFileSync(join(this.stateDir, 'outputs.json'), 'utf8')) as unknown;
      return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(x)) : [];
    } catch {
      return [];
    }
  }

  #writeOutputs(ids: readonly string[]): void {
    writeAtomic(join(this.stateDir, 'outputs.json'), Buffer.from(JSON.stringify(ids)));
  }

  /** Reaps the output devices a dead agent's loops left (their operation ids in the record), through the subkind's `reap`. */
  async #reapOutputs(ops: SubkindOps, device: DeviceSpec): Promise<void> {
    for (const id of this.#readOutputs()) {
      if (this.#liveOutputs.has(id)) continue;
      if (ops.reap) {
        const r = await reapDevices([ops], id, [{ subkind: ops.name, device }], { signal: AbortSignal.timeout(30_000) });
        this.#emit('output-reaped', { operation: id, removed: r.removed.flatMap((x) => x.lines), errors: r.errors.map((e) => errorJson(e)) });
        if (r.errors.length > 0) continue;
      }
      this.#writeOutputs(this.#readOutputs().filter((x) => x !== id));
    }
  }

  /**
   * Runs the primary until the role is lost or `stop`. With a backup linked,
   * every checkpoint waits for its ack. Without one (dead, cut off, not yet
   * started), the primary first marks the backup outdated in the arbiter (a
   * fenced write: it succeeds only while this host holds the role), then
   * runs solo (answers released with no replication) while it keeps trying
   * to link; an outdated backup never promotes. When the backup is linked
   * again and acknowledged a full state, the mark is cleared. If the mark
   * cannot be written (etcd unreachable), nothing is released.
   */
  async #primaryPhase(role: Role, state: Uint8Array | undefined, stop: AbortSignal): Promise<void> {
    const arbiter = this.#arbiter as Arbiter;
    const c = this.config;
    const epoch = role.epoch;
    const from = this.#latest?.fields;
    this.#latest = undefined;
    this.#checkpoints = 0;
    let service: PrimaryWorkload;
    let operation = 0;
    const deviceOf = (ops: SubkindOps, params: Readonly<Record<string, unknown>> | undefined): DeviceSpec => ({ id: 'output', kind: ops.kind, ...(params ? { params: { ...params } } : {}) });
    let reaped = false;
    /**
     * Sets the output device up under a new operation id. The phase's first one first reaps what a killed
     * agent's loops left on this host (kernel objects of the output device, e.g. NFQUEUE rules).
     */
    const setUpOutput = async (ops: SubkindOps, device: DeviceSpec): Promise<{ devices: CheckpointDevices; operationId: string }> => {
      if (!reaped) {
        reaped = true;
        await this.#reapOutputs(ops, device).catch((e: unknown) => this.#emit('output-reaped', { errors: [errorJson(e)] }));
      }
      const operationId = `agent${process.pid}x${++operation}`;
      this.#outputSetUp(operationId);
      const devices = createCheckpointDevices({ ops: [ops], devices: [device], operationId });
      await devices.setup();
      return { devices, operationId };
    };
    /** The output device a workload set up (through `hold`) before its service could send: the phase's first loop uses it. */
    let held: { devices: CheckpointDevices; operationId: string } | undefined;
    const hold = async (ops: SubkindOps, params?: Readonly<Record<string, unknown>>): Promise<void> => {
      if (held) throw new RemusError('STATE', 'the output device is already held for this primary phase');
      held = await setUpOutput(ops, deviceOf(ops, params));
    };
    const releaseHeld = async (): Promise<void> => {
      const h = held;
      held = undefined;
      if (!h) return;
      await h.devices.teardown().catch((e: unknown) => this.#emit('output-teardown-failed', { error: errorJson(e) }));
      if (h.devices.state === 'torn-down') this.#outputTornDown(h.operationId);
    };
    // The checkpoint loops of this phase run under SCHED_FIFO as the config says (core's applyRealtime).
    let realtime: RealtimeHandle | undefined;
    try {
      const r = await applyRealtime(c.realtime, { signal: stop });
      realtime = r.handle;
      this.#emit('scheduling', { ...r.report });
    } catch (e) {
      this.#emit('realtime-refused', { error: errorJson(e), policy: 'realtime "on": this host does not serve as primary; the role is given back' });
      await arbiter.resign();
      await sleep(1000, stop).catch(() => undefined);
      return;
    }
    try {
      service = await this.workload.startPrimary({ host: this.self.name, epoch, state, listen: this.self.service, onRelease: (r) => this.#released(r), hold, signal: stop });
    } catch (e) {
      await releaseHeld();
      this.#emit('service-failed', { error: errorJson(e) });
      await realtime?.restore();
      await arbiter.resign();
      await sleep(1000, stop).catch(() => undefined);
      return;
    }
    this.#setMode('primary', { epoch, service: this.workload.type, ...(from ?? {}) });
    const phase = new AbortController();
    const phaseSignal = AbortSignal.any([stop, phase.signal]);
    // The link maker: keeps one link to the backup ready while none is in use.
    let ready: PeerConnection | undefined;
    let linkWake: AbortController = new AbortController();
    let attempted = false;
    let firstAttempt!: () => void;
    const attemptedOnce = new Promise<void>((r) => (firstAttempt = r));
    const linker = (async () => {
      while (!phaseSignal.aborted) {
        if (!ready && !(this.#link && !this.#link.closed)) {
          try {
            ready = await this.#connectBackup(epoch, phaseSignal);
            linkWake.abort();
          } catch (e) {
            if (phaseSignal.aborted) break;
            if (!attempted) this.#emit('backup-unreachable', { error: errorJson(e) });
          }
          attempted = true;
          firstAttempt();
        }
        await sleep(300, phaseSignal).catch(() => undefined);
      }
    })();
    let outdated = false;
    let acked: Uint8Array | undefined;
    let reason = 'stopped';
    const outputDevice = deviceOf(service.output, service.outputParams);
    const runLoop = async (link: PeerConnection | undefined, loopStop: AbortSignal): Promise<'role-lost' | 'ended'> => {
      // The first loop takes the device held since before the service started (it has held everything sent since).
      const { devices, operationId } = held ?? (await setUpOutput(service.output, outputDevice));
      held = undefined;
      let clearing = false;
      const sink = link ? sessionSink(link, epoch) : undefined;
      const base = sink ?? SOLO;
      let sent: { checkpoint: number; state: Uint8Array } | undefined;
      // Remembers the last state acknowledged (by the backup, or at once when solo): kept after a deposition (see below).
      const tracked: StateSink = {
        send: (ctx, state) => {
          sent = { checkpoint: ctx.checkpoint, state };
          base.send(ctx, state);
        },
        waitAck: async (ctx) => {
          await base.waitAck(ctx);
          if (sent?.checkpoint === ctx.checkpoint) acked = sent.state;
        },
      };
      try {
        await runCheckpointLoop({
          devices,
          domain: service.domain(tracked),
          arbiter,
          epochs: this.#epochs,
          intervalMs: c.intervalMs,
          domainTimeoutMs: c.stepTimeoutMs,
          stop: loopStop,
          onCheckpoint: () => {
            this.#checkpoints++;
            if (link && outdated && !clearing) {
              // The backup acknowledged a full state: it may promote again.
              clearing = true;
              arbiter.publish?.(OUTDATED, '', AbortSignal.timeout(3000)).then(
                () => {
                  outdated = false;
                  this.#emit('backup-current', { backup: this.peer.name, epoch });
                },
                () => (clearing = false),
              );
            }
          },
        });
        return 'ended';
      } catch (e) {
        if (isRemusError(e, 'ROLE_LOST')) {
          reason = describeCause(e) ?? 'role lost';
          this.#emit('role-lost', { epoch, error: errorJson(e), policy: 'fail closed: nothing released, service stopped, held answers dropped; back as a backup after a full state' });
          return 'role-lost';
        }
        this.#emit('checkpoint-failed', { epoch, linked: !!link, error: errorJson(e) });
        return 'ended';
      } finally {
        sink?.close();
        // The loop tore its devices down (or reported what it could not: then the record stays for the next reap).
        if (devices.state === 'torn-down') this.#outputTornDown(operationId);
      }
    };
    try {
      await Promise.race([attemptedOnce, sleep(1500, phaseSignal).catch(() => undefined)]);
      while (!stop.aborted) {
        const lapse = roleLapse(arbiter.role(), epoch);
        if (lapse) {
          reason = lapse;
          break;
        }
        if (ready) {
          const link = ready;
          ready = undefined;
          this.#link = link;
          if ((await runLoop(link, stop)) === 'role-lost') break;
          continue;
        }
        if (!outdated) {
          try {
            await arbiter.publish?.(OUTDATED, `${this.peer.name}@${epoch}`, AbortSignal.any([stop, AbortSignal.timeout(3000)]));
            outdated = true;
            this.#emit('backup-outdated', { backup: this.peer.name, epoch, policy: 'solo: answers released without replication until the backup has a full state again' });
          } catch (e) {
            this.#emit('outdate-failed', { error: errorJson(e), policy: 'nothing released until the backup is linked or the mark is written' });
            await sleep(300, stop).catch(() => undefined);
            continue;
          }
        }
        linkWake = new AbortController();
        if (ready) continue;
        if ((await runLoop(undefined, AbortSignal.any([stop, linkWake.signal]))) === 'role-lost') break;
      }
    } finally {
      phase.abort();
      await linker;
      ready?.close('primary phase ended');
      await service.close();
      await releaseHeld();
      const left = await realtime?.restore();
      if (left) this.#emit('scheduling-restore-failed', { message: left });
      // Stopped or deposed: give the role back either way. A deposed primary that kept its lease
      // would keep its leader key, and the backup would wait behind it forever (an arbiter may
      // even answer a late keepalive after the lapse).
      await arbiter.resign();
    }
    if (stop.aborted) return;
    // Liveness after a deposition: a primary that marked its backup outdated (a fenced write of this
    // epoch, not cleared) keeps its last acknowledged state as its own backup state. It may campaign
    // with it only while the record is still exactly that mark (#notEligible): no other host can have
    // released output since, because the marked backup cannot promote and any other primary would
    // have rewritten the record. Otherwise (backup current) the state is dropped as before.
    let kept: Record<string, unknown> | undefined;
    if (outdated && acked) {
      try {
        kept = this.workload.checkState(acked);
        this.#latest = { epoch, checkpoint: 0, state: acked, fields: kept, own: true };
      } catch {
        kept = undefined;
      }
    }
    this.#emit('deposed', { epoch, reason, keptOwnState: kept !== undefined, ...(kept ? { kept } : {}) });
  }

  #released(r: Release): void {
    if (r.count > 0) this.#emit('release', { ...r });
  }

  /** Connects to the backup's agent and opens a session under `epoch`. */
  async #connectBackup(epoch: number, stop: AbortSignal): Promise<PeerConnection> {
    const conn = await connectPeer({ tls: this.#tls as TlsMaterial, address: this.peer.peer, expect: this.peer.name, timeoutMs: 2000, signal: stop });
    try {
      conn.send({ t: 'hello', cluster: this.config.cluster, host: this.self.name, epoch });
      const answer = await new Promise<PeerMessage>((resolve, reject) => {
        const t = setTimeout(() => reject(new RemusError(AgentErrors.PEER_UNREACHABLE, `backup ${this.peer.name} did not answer the hello within 3 s`)), 3000);
        conn.onMessage((m) => {
          clearTimeout(t);
          resolve(m);
        });
        conn.onClose((why) => {
          clearTimeout(t);
          reject(new RemusError(AgentErrors.PEER_REFUSED, `backup ${this.peer.name} closed the session before welcoming it: ${why} (a refused certificate shows up like this; see the backup's peer-refused event)`));
        });
      });
      if (answer.t !== 'welcome') {
        if (Number(answer.epoch) > epoch && answer.mode === 'primary') {
          this.#emit('higher-epoch-seen', { epoch: answer.epoch, own: epoch });
          await (this.#arbiter as Arbiter).resign();
        }
        throw new RemusError(AgentErrors.PEER_REFUSED, `backup ${this.peer.name} refused the session: [${String(answer.code)}] ${String(answer.message)}`);
      }
      this.#link = conn;
      this.#emit('linked', { to: this.peer.name, epoch });
      return conn;
    } catch (e) {
      conn.close('session refused');
      throw e;
    }
  }
}

/** The primary's end of a session: @remus/domain-process's backup link over the authenticated socket. */
function sessionSink(conn: PeerConnection, epoch: number): StateSink & { close(): void } {
  const link = BackupLink.over(conn.detach(), { epoch });
  return {
    send(ctx: DomainStepContext, state) {
      link.send(ctx.checkpoint, Buffer.from(state.buffer, state.byteOffset, state.byteLength), ctx.epoch);
    },
    waitAck: (ctx: DomainStepContext) => link.waitAck(ctx.checkpoint, ctx.signal),
    close: () => {
      link.close();
      conn.close('loop ended');
    },
  };
}

function errorJson(e: unknown): unknown {
  return e instanceof RemusError ? { code: e.code, message: e.message } : { message: describeCause(e) };
}
