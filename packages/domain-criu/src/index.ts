/**
 * @remus/domain-criu: Remus for a Linux process tree with real state. Each
 * checkpoint is an (incremental) CRIU dump of the frozen tree, sent to a
 * backup that keeps the last complete one; on failover the backup restores
 * the tree with its TCP connections and takes over the service address.
 *
 * - {@link criuDomain}: the {@link DomainAdapter} for core's checkpoint loop (primary).
 * - {@link createCriuBackup}: the receiver (backup); {@link createCheckpointReceiver}: the same
 *   store for checkpoints carried as records over a channel of the caller's (`remus agent`).
 * - {@link failover}: restore on the backup; one entry point an arbiter gates.
 * - {@link doctorChecks}: criu missing / too old for the kernel / no soft-dirty / not root.
 */
export { CriuDomain, criuDomain } from './domain.js';
export type { CheckpointTransport, CriuDomainOptions, DumpFigures } from './domain.js';
export { createCheckpointReceiver, createCriuBackup, readRestorePoint, verifyRestorePoint } from './backup.js';
export type { CheckpointManifest, CheckpointReceiver, CheckpointReceiverOptions, CriuBackup, CriuBackupOptions, PrimaryLost, RestorePoint } from './backup.js';
export { failover } from './failover.js';
export type { FailoverOptions, FailoverResult, ServiceAddress } from './failover.js';
export { CRIU_TOO_OLD_MESSAGE, assertCriuReady, doctorChecks } from './doctor.js';
export type { CriuReady, DoctorCheck, DoctorOptions } from './doctor.js';
export { CriuErrors } from './errors.js';
export { DEFAULT_MAX_FRAME_BYTES, Frame, FrameReader, encodeFrame, filePayload } from './wire.js';
export type { FrameType, WireFrame } from './wire.js';
