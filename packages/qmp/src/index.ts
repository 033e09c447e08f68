/**
 * @remus/qmp: a QEMU Machine Protocol client.
 *
 * - {@link connectQmp} / {@link QmpClient}: one connection; commands with ids and per-command timeouts, typed events, HMP passthrough.
 * - {@link QmpSchema}: probe what a QEMU offers from `query-qmp-schema`.
 * - {@link QmpPool} / {@link sharedQmpPool}: one shared connection per QEMU monitor (a monitor serves one client at a time).
 * - {@link QmpError}: QEMU's refusals, with their class and description (code QMP_FAILED).
 */
export { QmpClient, connectQmp, formatQmpAddress, parseQmpAddress } from './client.js';
export type { QmpAddress, QmpCommandOptions, QmpConnectOptions, QmpEventStream, QmpEventStreamOptions, QmpGreeting } from './client.js';
export { QmpError, isQmpError } from './errors.js';
export type { KnownQmpEvent, QmpEvent, QmpEventListener, QmpEventMap } from './events.js';
export { QmpSchema } from './schema.js';
export type { SchemaInfo } from './schema.js';
export { QmpPool, sharedQmpPool } from './pool.js';
export type { QmpLease } from './pool.js';
