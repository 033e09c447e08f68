/**
 * @remus/nic-nfqueue: a NIC subkind that buffers a guest NIC's output per
 * epoch in a userspace NFQUEUE buffer, for kernels without `sch_plug`.
 *
 * ```ts
 * import { nicNfqueue } from '@remus/nic-nfqueue';
 * const ops = [nicNetbuf(), nicNfqueue()]; // the kernel buffer where it exists, this one elsewhere
 * ```
 */
import { createRequire } from 'node:module';
import { definePlugin } from '@remus/core';
import { nicNfqueue } from './subkinds.js';

/** This package's manifest: the plugin's name and version come from it, so a release never leaves them stale. */
const pkg = createRequire(import.meta.url)('../package.json') as { name: string; version: string };

export { nicNfqueue, SETUP_STEPS } from './subkinds.js';
export type { NicNfqueueOptions, SetupStep } from './subkinds.js';
export type { QueueStats } from './buffer-protocol.js';

/** Plugin metadata: `loadPlugin('@remus/nic-nfqueue')` finds the `nic-nfqueue` subkind here. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  description: 'NIC output buffering per epoch with NFQUEUE and a batch verdict (no sch_plug needed)',
  subkinds: { 'nic-nfqueue': nicNfqueue },
});
