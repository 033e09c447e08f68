/**
 * @remus/colo: QEMU COLO for the Remus device layer.
 *
 * COLO reuses the core with other ops lists: {@link coloPrimaryOps} for the
 * primary QEMU (COLO proxy + block replication child), {@link coloSecondaryOps}
 * for the secondary (proxy redirectors/rewriter + NBD export). Each list's
 * subkinds share one QMP connection to their QEMU; their device params are
 * defined once in {@link COLO_DEVICE_PARAMS}. {@link ColoPair} drives a
 * whole pair: set-up, replication, status, watchdog and failover;
 * {@link reprotect} makes a survivor the primary of a new pair.
 */
import { createRequire } from 'node:module';
import { definePlugin } from '@remus/core';
import { coloPrimaryDisk, coloPrimaryNic, coloSecondaryDisk, coloSecondaryNic } from './subkinds.js';

export { coloPrimaryDisk, coloPrimaryNic, coloPrimaryOps, coloSecondaryDisk, coloSecondaryNic, coloSecondaryOps } from './subkinds.js';
export type { ColoPrimaryDiskParams, ColoPrimaryNicParams, ColoSecondaryDiskParams, ColoSecondaryNicParams } from './subkinds.js';
export { COLO_DEVICE_PARAMS, COLO_PARAM_FIX, coloParamProblems, readColoParam } from './params.js';
export type { ColoDeviceKind, ColoParamKind, ColoParamProblem, ColoParamSpec, ColoRole } from './params.js';
export { COLO_BASE_REQUIREMENTS } from './qemu.js';
export type { ColoQemuOptions, Requirement } from './qemu.js';
export { coloIds } from './ids.js';
export type { ColoIds, ColoPrimaryNicIds, ColoSecondaryNicIds } from './ids.js';
export { LEAVE_COLO_MS, RESUME_GRACE_MS, coloFailoverOnPrimary, coloFailoverOnSecondary } from './failover.js';
export type { ColoFailoverOptions, ColoFailoverResult } from './failover.js';
export { coloPairOptions, commandFence } from './description.js';
export type { ColoFenceDescription, ColoPairDescription, ColoSideDescription } from './description.js';
export { ColoPair } from './driver.js';
export type { ColoDriverEvent, ColoPairOptions, ColoSide, ColoStartOptions, ColoState, ColoStatus } from './driver.js';
export { autoReprotect, reprotect } from './reprotect.js';
export type { ColoAutoReprotect, ColoAutoReprotectOptions, ColoReprotectOptions, ColoReprotectRunOptions } from './reprotect.js';
export { COLO_OUTDATED_RECORD, COLO_STATE_RECORD, ColoSideDriver, coloHaStatus } from './side.js';
export type { ColoHaStatus, ColoPairRecord, ColoSideEvent, ColoSideFence, ColoSideOptions, ColoSideState, ColoSideStatus } from './side.js';
export { KILL_CONFIRM_MS } from './fence.js';
export type { ColoNetworkFence } from './fence.js';
export { DEFAULT_WATCHDOG, processAlive, watchdogBoundMs } from './watchdog.js';
export type { ColoWatchdogOptions } from './watchdog.js';

/** This package's manifest: the plugin's name and version come from it, so a release never leaves them stale. */
const pkg = createRequire(import.meta.url)('../package.json') as { name: string; version: string };

/** Plugin metadata, for `loadPlugin('@remus/colo')`. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  description: 'QEMU COLO over QMP: COLO proxy and block replication subkinds for the primary and the secondary, and a pair driver with a watchdog and failover',
  subkinds: {
    'colo-primary-nic': coloPrimaryNic,
    'colo-primary-disk': coloPrimaryDisk,
    'colo-secondary-nic': coloSecondaryNic,
    'colo-secondary-disk': coloSecondaryDisk,
  },
});
