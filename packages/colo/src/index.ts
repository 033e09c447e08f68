/**
 * @remus/colo: QEMU COLO for the Remus device layer.
 *
 * COLO reuses the core with other ops lists: {@link coloPrimaryOps} for the
 * primary QEMU (COLO proxy + block replication child), {@link coloSecondaryOps}
 * for the secondary (proxy redirectors/rewriter + NBD export). Each list's
 * subkinds share one QMP connection to their QEMU.
 */
import { definePlugin, type OpsList } from '@remus/core';
import { coloPrimaryDisk, coloPrimaryNic, coloSecondaryDisk, coloSecondaryNic } from './subkinds.js';
import type { ColoQemuOptions } from './qemu.js';

export { coloPrimaryDisk, coloPrimaryNic, coloSecondaryDisk, coloSecondaryNic } from './subkinds.js';
export type { ColoPrimaryDiskParams, ColoPrimaryNicParams, ColoSecondaryDiskParams, ColoSecondaryNicParams } from './subkinds.js';
export type { ColoSocketAddress } from './address.js';
export { COLO_BASE_REQUIREMENTS } from './qemu.js';
export type { ColoDeviceData, ColoQemuOptions, ColoShared, Observed, Requirement, Resource } from './qemu.js';

/** The ops list for the COLO primary QEMU: `[colo-primary-nic, colo-primary-disk]`. */
export function coloPrimaryOps(options: ColoQemuOptions): OpsList {
  return [coloPrimaryNic(options), coloPrimaryDisk(options)];
}

/** The ops list for the COLO secondary QEMU: `[colo-secondary-nic, colo-secondary-disk]`. Set it up before the primary's. */
export function coloSecondaryOps(options: ColoQemuOptions): OpsList {
  return [coloSecondaryNic(options), coloSecondaryDisk(options)];
}

/** Plugin metadata, for `loadPlugin('@remus/colo')`. */
export const plugin = definePlugin({
  name: '@remus/colo',
  version: '0.1.0',
  coreRange: '>=0.1.0 <1.0.0',
  description: 'QEMU COLO over QMP: COLO proxy and block replication subkinds for the primary and the secondary',
  subkinds: {
    'colo-primary-nic': coloPrimaryNic,
    'colo-primary-disk': coloPrimaryDisk,
    'colo-secondary-nic': coloSecondaryNic,
    'colo-secondary-disk': coloSecondaryDisk,
  },
});
