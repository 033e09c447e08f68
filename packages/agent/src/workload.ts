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
 * The counter service is one implementation (`service.type: "counter"`).
 * See the README, "The protected service (workloads)", for when each member is called.
 */
import type { DomainAdapter, SubkindOps } from '@remus/core';
import type { ServiceConfig } from './config.js';
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
  /** Aborted when the agent stops. */
  readonly signal: AbortSignal;
}

/** A workload running as primary. One per primary phase; closed when the phase ends. */
export interface PrimaryWorkload {
  /** The domain the checkpoint loop drives; `save` must send one whole state record through `sink`. */
  domain(sink: StateSink): DomainAdapter;
  /** The output device's operations; the agent adds one device `{ id: 'output', kind: output.kind }`. */
  readonly output: SubkindOps;
  /** Fail closed: drop unreleased output, stop the service. Idempotent; called on deposition and stop. */
  close(): Promise<void>;
}

/** A pluggable protected workload (selected by `service.type`, or passed as `AgentOptions.workload`). */
export interface AgentWorkload {
  /** The `service.type` it implements. */
  readonly type: string;
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

/** The workload of a validated `service` config. */
export function workloadFor(service: ServiceConfig): AgentWorkload {
  switch (service.type) {
    case 'counter':
      return counterWorkload();
  }
}
