/**
 * @remus/colo: QEMU COLO for the Remus device layer.
 *
 * COLO reuses the core with other ops lists: {@link coloPrimaryOps} for the
 * primary QEMU (COLO proxy + block replication child), {@link coloSecondaryOps}
 * for the secondary (proxy redirectors/rewriter + NBD export). Each list's
 * subkinds share one QMP connection to their QEMU. {@link ColoPair} drives a
 * whole pair: set-up, replication, status, watchdog and failover.
 */
import { createRequire } from 'node:module';
import { definePlugin } from '@remus/core';
import { coloPrimaryDisk, coloPrimaryNic, coloSecondaryDisk, coloSecondaryNic } from './subkinds.js';

export { coloPrimaryDisk, coloPrimaryNic, coloPrimaryOps, coloSecondaryDisk, coloSecondaryNic, coloSecondaryOps } from './subkinds.js';
export type { ColoPrimaryDiskParams, ColoPrimaryNicParams, ColoSecondaryDiskParams, ColoSecondaryNicParams } from './subkinds.js';
export type { ColoSocketAddress } from './address.js';
export { COLO_BASE_REQUIREMENTS } from './qemu.js';
export type { ColoDeviceData, ColoQemuOptions, ColoShared, Observed, Requirement, Resource } from './qemu.js';
export { coloIds } from './ids.js';
export type { ColoIds, ColoPrimaryNicIds, ColoSecondaryNicIds } from './ids.js';
export { LEAVE_COLO_MS, coloFailoverOnPrimary, coloFailoverOnSecondary } from './failover.js';
export type { ColoFailoverOptions, ColoFailoverResult } from './failover.js';
export { coloPairOptions, commandFence } from './description.js';
export type { ColoFenceDescription, ColoPairDescription, ColoSideDescription } from './description.js';
export { ColoPair, DEFAULT_WATCHDOG, processAlive, watchdogBoundMs } from './driver.js';
export type {
  ColoDriverEvent,
  ColoNetworkFence,
  ColoPairOptions,
  ColoRole,
  ColoSide,
  ColoState,
  ColoStatus,
  ColoWatchdogOptions,
} from './driver.js';

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
