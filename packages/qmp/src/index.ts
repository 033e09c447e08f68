/**
 * @remus/qmp: a QEMU Machine Protocol client.
 *
 * - {@link connectQmp} / {@link QmpClient}: one connection; commands with ids and per-command timeouts, typed events, HMP passthrough.
 * - {@link QmpSchema}: probe what a QEMU offers from `query-qmp-schema`.
 * - {@link QmpPool} / {@link sharedQmpPool}: one shared connection per QEMU monitor (a monitor serves one client at a time).
 * - {@link QmpError}: QEMU's refusals and failed connections, code `qmp/QMP_FAILED` ({@link QmpErrorCodes}).
 * Addresses are core's `SocketAddress`; {@link parseQmpAddress} / {@link formatQmpAddress} are its QMP forms.
 */
export { QmpClient, connectQmp, formatQmpAddress, parseQmpAddress } from './client.js';
export type { QmpCommandOptions, QmpConnectOptions, QmpEventStream, QmpEventStreamOptions } from './client.js';
export { MAX_QMP_LINE } from './wire.js';
export type { QmpGreeting } from './wire.js';
export { QmpError, QmpErrorCodes, isQmpError, isQmpRefusal } from './errors.js';
export type { KnownQmpEvent, QmpEvent, QmpEventListener, QmpEventMap } from './events.js';
export { QmpSchema } from './schema.js';
export type { SchemaInfo } from './schema.js';
export { QmpPool, sharedQmpPool } from './pool.js';
export type { QmpLease } from './pool.js';
