/**
 * Plugin metadata and loading. A plugin package exports `plugin`, made with
 * {@link definePlugin}: its name, version, the @remus/core range it works
 * with, and a factory per subkind it provides. The core checks all of it at
 * load time, so a wrong or missing plugin fails before any device is touched.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import semver from 'semver';
import { RemusError } from './errors.js';
import type { SubkindOps } from './ops.js';
import { validateOpsList } from './validate.js';

const require = createRequire(import.meta.url);
/** This core's version, as plugins' `coreRange` is checked against it. */
export const CORE_VERSION: string = (require('../package.json') as { version: string }).version;

/** Makes a subkind's ops from its options (validated by the factory; throw INVALID_ARGUMENT on bad ones). */
export type SubkindFactory<O = any> = (options?: O) => SubkindOps;

/** What a plugin package exports as `plugin`. */
export interface RemusPlugin {
  /** The package name, e.g. `@remus/nic-netbuf`. */
  readonly name: string;
  /** The package version. */
  readonly version: string;
  /** Semver range of @remus/core this plugin works with, e.g. `>=0.1.0 <1.0.0`. */
  readonly coreRange: string;
  /** One-line description for `remus doctor`. */
  readonly description?: string;
  /** Subkind name -> factory. Each factory's ops must carry that same name. */
  readonly subkinds: Readonly<Record<string, SubkindFactory>>;
}

/**
 * Declares a plugin: checks its metadata at once (a malformed plugin fails
 * where it is written, not when a user loads it) and returns it.
 */
export function definePlugin<P extends RemusPlugin>(plugin: P): P {
  return checkPlugin(plugin, plugin?.name ?? '(unnamed plugin)');
}

/**
 * Validates plugin metadata and that this core is in its `coreRange`.
 * Throws PLUGIN_INVALID or PLUGIN_INCOMPATIBLE naming the package and the fix.
 */
export function checkPlugin<P extends RemusPlugin>(plugin: P, source: string): P {
  const bad = (why: string): never => {
    throw new RemusError('PLUGIN_INVALID', `plugin ${source}: ${why}`, { details: { plugin: source } });
  };
  if (plugin === null || typeof plugin !== 'object') bad('does not export `plugin` (made with definePlugin from @remus/core)');
  if (typeof plugin.name !== 'string' || plugin.name === '') bad('has no name');
  if (typeof plugin.version !== 'string' || !semver.valid(plugin.version)) bad(`version ${JSON.stringify(plugin.version)} is not semver`);
  if (typeof plugin.coreRange !== 'string' || !semver.validRange(plugin.coreRange)) {
    bad(`coreRange ${JSON.stringify(plugin.coreRange)} is not a semver range`);
  }
  if (plugin.subkinds === null || typeof plugin.subkinds !== 'object' || Object.keys(plugin.subkinds).length === 0) {
    bad('provides no subkinds');
  }
  for (const [k, f] of Object.entries(plugin.subkinds)) {
    if (typeof f !== 'function') bad(`subkind ${k} is not a factory function`);
  }
  if (!semver.satisfies(CORE_VERSION, plugin.coreRange, { includePrerelease: true })) {
    throw new RemusError(
      'PLUGIN_INCOMPATIBLE',
      `plugin ${plugin.name}@${plugin.version} needs @remus/core ${plugin.coreRange}, but ${CORE_VERSION} is installed: install a ${plugin.name} release built for @remus/core ${CORE_VERSION}, or a core in ${plugin.coreRange}`,
      { details: { plugin: plugin.name, coreRange: plugin.coreRange, core: CORE_VERSION } },
    );
  }
  return plugin;
}

export interface LoadPluginOptions {
  /** Directory to resolve the package from (the user's project). Default: the current directory. */
  readonly from?: string;
}

/**
 * Loads a plugin by package name, as a user installed it. Throws
 * PLUGIN_NOT_FOUND ("install @remus/disk-drbd"), PLUGIN_INVALID or
 * PLUGIN_INCOMPATIBLE.
 */
export async function loadPlugin(packageName: string, options: LoadPluginOptions = {}): Promise<RemusPlugin> {
  if (typeof packageName !== 'string' || !/^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i.test(packageName)) {
    throw new RemusError('INVALID_ARGUMENT', `plugin name ${JSON.stringify(packageName)} is not a package name (e.g. "@remus/nic-netbuf")`);
  }
  const from = options.from ?? process.cwd();
  let resolved: string;
  try {
    resolved = createRequire(join(from, '__remus_resolve__.js')).resolve(packageName);
  } catch (e) {
    throw new RemusError(
      'PLUGIN_NOT_FOUND',
      `plugin ${packageName} is not installed (looked from ${from}): install it with \`pnpm add ${packageName}\` (or npm install ${packageName})`,
      { cause: e, details: { plugin: packageName, from } },
    );
  }
  const mod = (await import(pathToFileURL(resolved).href)) as { plugin?: RemusPlugin; default?: RemusPlugin };
  return checkPlugin((mod.plugin ?? mod.default) as RemusPlugin, packageName);
}

/**
 * Makes one subkind's ops from a loaded plugin. Throws SUBKIND_NOT_FOUND
 * listing what the plugin provides, or INVALID_SUBKIND if the factory's ops
 * are malformed or named differently.
 */
export function createSubkind(plugin: RemusPlugin, subkind: string, options?: unknown): SubkindOps {
  const factory = plugin.subkinds[subkind];
  if (!factory) {
    throw new RemusError(
      'SUBKIND_NOT_FOUND',
      `plugin ${plugin.name} has no subkind ${JSON.stringify(subkind)}; it provides: ${Object.keys(plugin.subkinds).join(', ')}`,
      { subkind, details: { plugin: plugin.name } },
    );
  }
  const ops = factory(options);
  validateOpsList([ops]);
  if (ops.name !== subkind) {
    throw new RemusError('INVALID_SUBKIND', `plugin ${plugin.name}: factory for ${subkind} returned ops named ${ops.name}`, {
      subkind,
    });
  }
  return ops;
}
