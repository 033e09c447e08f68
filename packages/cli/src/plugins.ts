/**
 * Turns a config's `plugins` into an ops list: each package loaded by name
 * (core's loadPlugin), each subkind made by its factory (createSubkind) with
 * its options. Fails with the config path of the culprit, before anything
 * on the host is touched.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RemusError, createSubkind, describeCause, isRemusError, loadPlugin, type DeviceSpec, type RemusPlugin, type SubkindOps } from '@remus/core';
import { configError, type PluginConfig } from './config.js';

/** The directory of this CLI's install: plugins installed next to remus resolve from here. */
export const CLI_DIR = fileURLToPath(new URL('..', import.meta.url));

/** A loaded plugin and where it was resolved from. */
export interface LoadedPlugin {
  readonly plugin: RemusPlugin;
  /** Directory the package was resolved from (recorded in the journal for `remus cleanup`). */
  readonly from: string;
}

/** Loads `name` from each directory in turn (then from the CLI's own install). */
export async function loadPluginFrom(name: string, dirs: readonly string[]): Promise<LoadedPlugin> {
  const tried = [...new Set([...dirs, CLI_DIR])];
  let last: unknown;
  for (const from of tried) {
    try {
      return { plugin: await loadPlugin(name, { from }), from };
    } catch (e) {
      if (!isRemusError(e, 'PLUGIN_NOT_FOUND')) throw e;
      last = e;
    }
  }
  throw new RemusError('PLUGIN_NOT_FOUND', `plugin ${name} is not installed (looked from ${tried.join(', ')}): install it with \`pnpm add ${name}\` next to your config, or next to remus`, {
    cause: last,
    details: { plugin: name, tried },
  });
}

export interface BuiltOps {
  readonly ops: SubkindOps[];
  readonly plugins: LoadedPlugin[];
}

/**
 * Loads every plugin of `configs` and makes their subkinds, in config order
 * (the ops-list order: first match wins). Checks that every device's kind has
 * a subkind. Throws INVALID_ARGUMENT (or the loader's PLUGIN_* code) naming
 * the config path.
 */
export async function buildOps(configs: readonly PluginConfig[], devices: readonly DeviceSpec[], dirs: readonly string[], source = 'config'): Promise<BuiltOps> {
  const ops: SubkindOps[] = [];
  const plugins: LoadedPlugin[] = [];
  for (const [i, pc] of configs.entries()) {
    let loaded: LoadedPlugin;
    try {
      loaded = await loadPluginFrom(pc.package, dirs);
    } catch (e) {
      const code = isRemusError(e) ? e.code : 'PLUGIN_INVALID';
      throw new RemusError(code, `${source}: plugins[${i}].package: ${describeCause(e)}`, { cause: e, details: { path: `plugins[${i}].package` } });
    }
    plugins.push(loaded);
    for (const [name, options] of Object.entries(pc.subkinds)) {
      const path = `plugins[${i}].subkinds.${name}`;
      try {
        ops.push(createSubkind(loaded.plugin, name, options));
      } catch (e) {
        const fix = isRemusError(e, 'SUBKIND_NOT_FOUND')
          ? `use one of: ${Object.keys(loaded.plugin.subkinds).join(', ')}`
          : 'see the plugin README for its options';
        throw configError(source, [{ path, message: describeCause(e) as string, fix }]);
      }
    }
  }
  const kinds = new Set(ops.map((o) => o.kind));
  const problems = devices.flatMap((d, i) =>
    kinds.has(d.kind)
      ? []
      : [{
          path: `devices[${i}].kind`,
          message: `no subkind in plugins handles kind "${d.kind}" (kinds present: ${[...kinds].join(', ') || 'none'})`,
          fix: `add a plugin with a "${d.kind}" subkind to plugins, or correct the kind`,
        }],
  );
  if (problems.length > 0) throw configError(source, problems);
  return { ops, plugins };
}

/**
 * Plugin packages installed where `dirs` (and the CLI) can see them: every
 * `@remus/*` package except core and cli, and any package whose
 * package.json lists the keyword `remus-plugin`. For `remus doctor`.
 */
export function findInstalledPlugins(dirs: readonly string[]): string[] {
  const names = new Set<string>();
  for (const start of [...dirs, CLI_DIR]) {
    for (let d = start; ; d = dirname(d)) {
      const nm = join(d, 'node_modules');
      if (existsSync(nm)) {
        for (const entry of safeList(nm)) {
          if (entry.startsWith('@')) {
            for (const sub of safeList(join(nm, entry))) consider(names, join(nm, entry, sub), `${entry}/${sub}`);
          } else if (!entry.startsWith('.')) consider(names, join(nm, entry), entry);
        }
      }
      if (dirname(d) === d) break;
    }
  }
  return [...names].sort();
}

function consider(names: Set<string>, dir: string, name: string): void {
  if (name === '@remus/core' || name === '@remus/cli') return;
  if (name.startsWith('@remus/')) {
    names.add(name);
    return;
  }
  try {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { keywords?: string[] };
    if (pkg.keywords?.includes('remus-plugin')) names.add(name);
  } catch {
    // Not a package.
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
