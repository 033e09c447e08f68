/**
 * @remus/nic-netbuf: network buffering (output commit) for Remus.
 *
 * - {@link nicNetbuf}: the `nic-netbuf` subkind for devices of kind `nic`.
 * - {@link plugin}: plugin metadata for `loadPlugin('@remus/nic-netbuf')`.
 */
import { createRequire } from 'node:module';
import { definePlugin } from '@remus/core';
import { nicNetbuf } from './subkinds.js';

/** This package's manifest: the plugin's name and version come from it, so a release never leaves them stale. */
const pkg = createRequire(import.meta.url)('../package.json') as { name: string; version: string };

export { nicNetbuf, SETUP_STEPS } from './subkinds.js';
export type { NicNetbufOptions, SetupStep } from './subkinds.js';

/** Plugin metadata, checked by the core when the package is loaded. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  description: 'Buffers a VM NIC’s outgoing packets in a sch_plug qdisc until each checkpoint is committed',
  subkinds: { 'nic-netbuf': nicNetbuf },
});
