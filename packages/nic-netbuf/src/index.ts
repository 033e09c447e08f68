/**
 * @remus/nic-netbuf: network buffering (output commit) for Remus.
 *
 * - {@link nicNetbuf}: the `nic-netbuf` subkind for devices of kind `nic`.
 * - {@link plugin}: plugin metadata for `loadPlugin('@remus/nic-netbuf')`.
 */
import { definePlugin } from '@remus/core';
import { nicNetbuf } from './netbuf.js';

export { nicNetbuf, SETUP_STEPS } from './netbuf.js';
export type { NetbufShared, NicData, NicNetbufOptions, SetupStep } from './netbuf.js';

/** Plugin metadata, checked by the core when the package is loaded. */
export const plugin = definePlugin({
  name: '@remus/nic-netbuf',
  version: '0.1.0',
  coreRange: '>=0.1.0 <1.0.0',
  description: 'Buffers a VM NIC’s outgoing packets in a sch_plug qdisc until each checkpoint is committed',
  subkinds: { 'nic-netbuf': nicNetbuf },
});
