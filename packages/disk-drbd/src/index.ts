/**
 * @remus/disk-drbd: the `disk-drbd` subkind for Remus, a checkpoint barrier
 * on DRBD disks.
 *
 * - {@link diskDrbd}: the subkind's factory (kind `disk`).
 * - {@link plugin}: plugin metadata for `loadPlugin('@remus/disk-drbd')`.
 * - {@link openProcDrbd} / {@link parseProcDrbd}: the built-in DRBD 8.4 state source.
 */
import { createRequire } from 'node:module';
import { definePlugin } from '@remus/core';
import { diskDrbd } from './subkinds.js';

export { diskDrbd, SUBKIND } from './subkinds.js';
export type { DiskDrbdOptions, DrbdCheckpointChannel, DrbdCheckpointIoctls } from './subkinds.js';
export { openProcDrbd, parseProcDrbd, PROC_DRBD } from './state.js';
export type { DrbdMinorState, DrbdStateSource, DrbdStateSourceFactory, DrbdStatus } from './state.js';
export { DRBD_MAJOR } from './target.js';

const pkg = createRequire(import.meta.url)('../package.json') as { name: string; version: string };

/** The plugin: one subkind, `disk-drbd`. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  description: 'DRBD disks: refuses unusable DRBD devices with a fix, and holds each checkpoint until the peer acknowledged every write issued before the suspend',
  subkinds: { 'disk-drbd': diskDrbd },
});
