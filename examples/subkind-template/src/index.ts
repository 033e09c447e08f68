/**
 * remus-subkind-template: a complete external Remus subkind package.
 *
 * - {@link plugin}: what `remus` loads by package name (`plugins[].package` in the config).
 * - {@link markerSubkind}: the factory, also usable directly with `createCheckpointDevices`.
 * - {@link MarkerErrors}: this plugin's namespaced error codes.
 */
import { createRequire } from 'node:module';
import { definePlugin } from '@remus/core';
import { MarkerErrors, markerSubkind } from './marker.js';

/** This package's manifest: the plugin's name and version come from it, so a release never leaves them stale. */
const pkg = createRequire(import.meta.url)('../package.json') as { name: string; version: string };

/** The plugin export `remus` looks for. Its @remus/core range is package.json's peerDependencies, checked when it is loaded. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  description: 'marker: a file per device recording every checkpoint (a template for subkind authors)',
  subkinds: { marker: markerSubkind },
  errors: MarkerErrors,
});

export { MarkerErrors, markerSubkind } from './marker.js';
export type { MarkerOptions } from './marker.js';
