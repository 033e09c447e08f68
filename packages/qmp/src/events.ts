/**
 * Typed QMP events. QEMU sends events unprompted after capability
 * negotiation; the names below are those a COLO/Remus driver watches, with
 * the data QEMU 7.2 documents for them (qapi/*.json). Any other event still
 * arrives, typed with a generic `data`.
 */

/** Data of the events a replication driver watches, by event name. */
export interface QmpEventMap {
  /** The VM stopped (also at every COLO checkpoint on the primary). */
  STOP: Record<string, never>;
  /** The VM resumed (also at the end of every COLO checkpoint). */
  RESUME: Record<string, never>;
  /** QEMU is shutting down. */
  SHUTDOWN: { guest: boolean; reason: string };
  /** Migration status changed (`setup`, `active`, `colo`, `completed`, `failed`...). */
  MIGRATION: { status: string };
  /** A migration RAM pass began. */
  MIGRATION_PASS: { pass: number };
  /** COLO left colo mode: `mode` primary/secondary, `reason` request/error. */
  COLO_EXIT: { mode: 'primary' | 'secondary' | 'none'; reason: 'request' | 'error' | 'none' };
  /** Failover negotiated on this side. */
  FAILOVER_NEGOTIATED: { 'device-id': string };
  /** A quorum child disagreed or failed (e.g. the replication child lost its NBD server). */
  QUORUM_REPORT_BAD: { type: string; error?: string; 'node-name': string; 'sector-num': number; 'sectors-count': number };
  /** A quorum could not reach its vote threshold. */
  QUORUM_FAILURE: { reference: string; 'sector-num': number; 'sectors-count': number };
  /** A block export finished shutting down. */
  BLOCK_EXPORT_DELETED: { id: string };
  /** A device's frontend was removed. */
  DEVICE_DELETED: { device?: string; path: string };
}

/** The names with typed data. */
export type KnownQmpEvent = keyof QmpEventMap;

/** One event as QEMU sent it. `N` narrows `data` for known names. */
export interface QmpEvent<N extends string = string> {
  readonly event: N;
  readonly data: N extends KnownQmpEvent ? QmpEventMap[N] : Record<string, unknown>;
  /** QEMU's clock when it emitted the event. */
  readonly timestamp: { readonly seconds: number; readonly microseconds: number };
}

/** Receives every event; must not throw (a throw is swallowed so other listeners still run). */
export type QmpEventListener = (event: QmpEvent) => void;
