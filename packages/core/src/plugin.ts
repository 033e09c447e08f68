/**
 * Plugin metadata and loading. A plugin package exports `plugin`, made with
 * {@link definePlugin}: its name and version (read from its package.json),
 * its subkind factories and its own error codes. Which @remus/core it works
 * with is said once, in its package.json's `peerDependencies`; the core
 * checks it when the plugin is loaded, so a wrong or missing plugin fails
 * before any device is touched, with both versions named.
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import semver from 'semver';
import { RemusError, isPluginErrorCode } from './errors.js';
import type { SubkindOps } from './ops.js';
import { validateOpsList } from './validate.js';

const require = createRequire(import.meta.url);
/** This core's version, as plugins' peer ranges are checked against it. */
export const CORE_VERSION: string = (require('../package.json') as { version: string }).version;

/** Makes a subkind's ops from its options (validated by the factory; throw INVALID_ARGUMENT on bad ones). */
export type SubkindFactory<O = any> = (options?: O) => SubkindOps;

/** What a plugin package exports as `plugin`. */
export interface RemusPlugin {
  /** The package name, e.g. `@remus/nic-netbuf` (read it from the package.json). */
  readonly name: string;
  /** The package version (read it from the package.json, so a release never leaves it stale). */
  readonly version: string;
  /** One-line description for `remus doctor`. */
  readonly description?: string;
  /** Subkind name -> factory. Each factory's ops must carry that same name. */
  readonly subkinds: Readonly<Record<string, SubkindFactory>>;
  /** The plugin's own error codes, as {@link defineErrorCodes} returns them (for docs and `remus doctor`). */
  readonly errors?: Readonly<Record<string, string>>;
}

/**
 * Declares a plugin: checks its metadata at once (a malformed plugin fails
 * where it is written, not when a user loads it) and returns it.
 * Compatibility with the core is not declared here: it is the
 * `peerDependencies["@remus/core"]` range of the plugin's package.json,
 * checked by {@link loadPlugin}.
 */
export function definePlugin<P extends RemusPlugin>(plugin: P): P {
  return checkPlugin(plugin, plugin?.name ?? '(unnamed plugin)');
}

/** Validates plugin metadata. Throws PLUGIN_INVALID naming the package and the fix. */
export function checkPlugin<P extends RemusPlugin>(plugin: P, source: string): P {
  const bad = (why: string): never => {
    throw new RemusError('PLUGIN_INVALID', `plugin ${source}: ${why}`, { details: { plugin: source } });
  };
  if (plugin === null || typeof plugin !== 'object') bad('does not export `plugin` (made with definePlugin from @remus/core)');
  if (typeof plugin.name !== 'string' || plugin.name === '') bad('has no name');
  if (typeof plugin.version !== 'string' || !semver.valid(plugin.version)) bad(`version ${JSON.stringify(plugin.version)} is not semver`);
  if (plugin.subkinds === null || typeof plugin.subkinds !== 'object' || Object.keys(plugin.subkinds).length === 0) {
    bad('provides no subkinds');
  }
  for (const [k, f] of Object.entries(plugin.subkinds)) {
    if (typeof f !== 'function') bad(`subkind ${k} is not a factory function`);
  }
  if (plugin.errors !== undefined) {
    if (plugin.errors === null || typeof plugin.errors !== 'object') bad('errors must be the table defineErrorCodes returns');
    for (const code of Object.values(plugin.errors)) {
      if (!isPluginErrorCode(code)) bad(`error code ${JSON.stringify(code)} is not namespaced: declare codes with defineErrorCodes("ns", {...})`);
    }
  }
  return plugin;
}

/**
 * Checks that this core is in a plugin's `peerDependencies["@remus/core"]`
 * range (from the plugin's package.json). Throws PLUGIN_INVALID when the
 * range is missing or malformed, PLUGIN_INCOMPATIBLE naming both versions.
 */
export function checkCoreCompatibility(manifest: { name?: unknown; version?: unknown; peerDependencies?: unknown }, source: string): void {
  const peers = manifest.peerDependencies as Record<string, unknown> | undefined;
  const range = peers && typeof peers === 'object' ? peers['@remus/core'] : undefined;
  if (typeof range !== 'string' || !semver.validRange(range)) {
    throw new RemusError(
      'PLUGIN_INVALID',
      `plugin ${source}: its package.json must name the @remus/core versions it works with as a peer dependency, e.g. "peerDependencies": { "@remus/core": "^${CORE_VERSION}" }${range === undefined ? '' : ` (found ${JSON.stringify(range)})`}`,
      { details: { plugin: source } },
    );
  }
  if (!semver.satisfies(CORE_VERSION, range, { includePrerelease: true })) {
    const version = typeof manifest.version === 'string' ? manifest.version : '?';
    throw new RemusError(
      'PLUGIN_INCOMPATIBLE',
      `plugin ${source}@${version} works with @remus/core ${range}, but this remus has @remus/core ${CORE_VERSION}: install a release of ${source} made for @remus/core ${CORE_VERSION}, or a remus whose core is in ${range}`,
      { details: { plugin: source, version, coreRange: range, core: CORE_VERSION } },
    );
  }
}

export interface LoadPluginOptions {
  /**
   * Directories whose `node_modules` may hold the package (the config's own
   * directory, the directory remus is installed in). Only these are looked
   * at, never their parents: a `node_modules` higher up (a shared temporary
   * directory, say) is not trusted. Default: the current directory.
   */
  readonly from?: string | readonly string[];
  /** The install command to suggest when the package is missing (default: npm, pnpm and yarn forms). */
  readonly installHint?: (packageName: string) => string;
}

/** Where {@link loadPlugin} found a package. */
export interface PluginLocation {
  /** The package directory (symlinks resolved). */
  readonly dir: string;
  /** The module file loaded. */
  readonly entry: string;
  /** The package.json as read. */
  readonly manifest: Record<string, unknown>;
}

const PACKAGE_NAME = /^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i;

/**
 * Finds a plugin package in `<dir>/node_modules/<name>` for each directory
 * of `from`, in order, without walking up to parents. Throws
 * INVALID_ARGUMENT or PLUGIN_NOT_FOUND (naming the directories looked in and
 * the install command).
 */
export function locatePlugin(packageName: string, options: LoadPluginOptions = {}): PluginLocation {
  if (typeof packageName !== 'string' || !PACKAGE_NAME.test(packageName)) {
    throw new RemusError('INVALID_ARGUMENT', `plugin name ${JSON.stringify(packageName)} is not a package name (e.g. "@remus/nic-netbuf")`);
  }
  const from = options.from === undefined ? [process.cwd()] : typeof options.from === 'string' ? [options.from] : [...options.from];
  for (const d of from) {
    if (typeof d !== 'string' || d === '') throw new RemusError('INVALID_ARGUMENT', `plugin search directory ${JSON.stringify(d)} is not a path`);
    const pkgDir = join(resolvePath(d), 'node_modules', ...packageName.split('/'));
    const manifestPath = join(pkgDir, 'package.json');
    if (!existsSync(manifestPath)) continue;
    let manifest: Record<string, unknown>;
    try {
      manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new RemusError('PLUGIN_INVALID', `plugin ${packageName}: ${manifestPath} is not readable JSON: ${(e as Error).message}`, {
        cause: e,
        details: { plugin: packageName },
      });
    }
    if (manifest === null || typeof manifest !== 'object' || manifest['name'] !== packageName) {
      throw new RemusError('PLUGIN_INVALID', `plugin ${packageName}: ${manifestPath} names another package (${JSON.stringify(manifest?.['name'])})`, {
        details: { plugin: packageName },
      });
    }
    const dir = realpathSync(pkgDir);
    return { dir, entry: packageEntry(packageName, dir, manifest), manifest };
  }
  const hint = options.installHint?.(packageName) ?? `npm install ${packageName} (or pnpm add ${packageName}, yarn add ${packageName})`;
  throw new RemusError(
    'PLUGIN_NOT_FOUND',
    `plugin ${packageName} is not installed (looked in ${from.map((d) => join(resolvePath(d), 'node_modules')).join(' and ')}): install it next to your config with \`${hint}\``,
    { details: { plugin: packageName, from } },
  );
}

/** The file an ESM `import` of the package loads: its `exports["."]` (import/default) or `main`, else index.js. */
function packageEntry(name: string, dir: string, manifest: Record<string, unknown>): string {
  let rel: unknown = manifest['exports'];
  const pick = (v: unknown): unknown => {
    if (typeof v === 'string' || v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const o = v as Record<string, unknown>;
    if ('.' in o) return pick(o['.']);
    for (const c of ['import', 'node', 'default']) if (c in o) return pick(o[c]);
    return undefined;
  };
  rel = rel === undefined ? (manifest['main'] ?? 'index.js') : pick(rel);
  if (typeof rel !== 'string' || isAbsolute(rel) || rel.split(/[\\/]/).includes('..')) {
    throw new RemusError('PLUGIN_INVALID', `plugin ${name}: its package.json has no usable entry ("exports" or "main")`, { details: { plugin: name } });
  }
  const entry = join(dir, rel);
  if (!existsSync(entry) || !statSync(entry).isFile()) {
    throw new RemusError('PLUGIN_INVALID', `plugin ${name}: its entry ${entry} is missing (is the package built?)`, { details: { plugin: name } });
  }
  return entry;
}

/**
 * Loads a plugin by package name, as a user installed it: found by
 * {@link locatePlugin}, its core range checked from its package.json, its
 * `plugin` export checked. Throws PLUGIN_NOT_FOUND, PLUGIN_INVALID or
 * PLUGIN_INCOMPATIBLE, all before any of its subkinds runs.
 */
export async function loadPlugin(packageName: string, options: LoadPluginOptions = {}): Promise<RemusPlugin> {
  const where = locatePlugin(packageName, options);
  checkCoreCompatibility(where.manifest, packageName);
  let mod: { plugin?: RemusPlugin; default?: RemusPlugin };
  try {
    mod = (await import(pathToFileURL(where.entry).href)) as typeof mod;
  } catch (e) {
    if (e instanceof RemusError) throw e;
    throw new RemusError('PLUGIN_INVALID', `plugin ${packageName}: loading ${where.entry} failed: ${(e as Error)?.message ?? String(e)}`, {
      cause: e,
      details: { plugin: packageName },
    });
  }
  const plugin = checkPlugin((mod.plugin ?? mod.default) as RemusPlugin, packageName);
  if (plugin.name !== packageName || plugin.version !== where.manifest['version']) {
    throw new RemusError(
      'PLUGIN_INVALID',
      `plugin ${packageName}: its \`plugin\` says ${plugin.name}@${plugin.version} but its package.json says ${packageName}@${String(where.manifest['version'])}: read name and version from package.json`,
      { details: { plugin: packageName } },
    );
  }
  return plugin;
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
