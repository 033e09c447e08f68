/**
 * Turns a config's `plugins` into an ops list: each package loaded by name
 * (core's loadPlugin), each subkind made by its factory (createSubkind) with
 * its options. Fails with the config path of the culprit, before anything
 * on the host is touched.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RemusError, checkDevices, closestName, createSubkind, describeCause, isRemusError, loadPlugin, locatePlugin, type DeviceSpec, type RemusPlugin, type SubkindOps } from '@remus/core';
import { configError, type ConfigProblem, type PluginConfig } from './config.js';
import { checkNicHost } from './nic-host.js';

/** The directory of this CLI's install: plugins installed next to remus resolve from here. */
export const CLI_DIR = fileURLToPath(new URL('..', import.meta.url));

/**
 * The directories "next to remus": this package's own directory (its
 * dependencies) and, when it is installed in a `node_modules`, the project
 * or prefix that `node_modules` belongs to (so `npm install @remus/cli
 * @remus/nic-netbuf` puts the plugin where remus finds it).
 */
export function remusDirs(): string[] {
  const dirs = [CLI_DIR];
  let d = resolve(CLI_DIR);
  if (basename(dirname(d)).startsWith('@')) d = dirname(d);
  if (basename(dirname(d)) === 'node_modules') dirs.push(dirname(dirname(d)));
  return [...new Set(dirs)];
}

/**
 * Where a config's plugins resolve from: the config file's own directory,
 * then next to remus ({@link remusDirs}). Never the current directory or a
 * parent's `node_modules`.
 */
export function pluginDirsFor(configFile: string | undefined): string[] {
  return [...new Set([...(configFile === undefined ? [] : [dirname(resolve(configFile))]), ...remusDirs()])];
}

/** The package manager the user works with: from npm_config_user_agent, else the lockfile in `dir`; npm by default. */
export function packageManager(dir: string | undefined, env: NodeJS.ProcessEnv = process.env): 'pnpm' | 'npm' | 'yarn' {
  const agent = env.npm_config_user_agent ?? '';
  if (agent.startsWith('pnpm/')) return 'pnpm';
  if (agent.startsWith('yarn/')) return 'yarn';
  if (agent.startsWith('npm/')) return 'npm';
  if (dir !== undefined) {
    if (existsSync(join(dir, 'pnpm-lock.yaml'))) return 'pnpm';
    if (existsSync(join(dir, 'yarn.lock'))) return 'yarn';
  }
  return 'npm';
}

/** The command that installs `pkg` with the user's package manager (see {@link packageManager}). */
export function installCommand(pkg: string, dir?: string): string {
  const pm = packageManager(dir);
  return pm === 'npm' ? `npm install ${pkg}` : `${pm} add ${pkg}`;
}

/** A loaded plugin and where it was resolved from. */
export interface LoadedPlugin {
  readonly plugin: RemusPlugin;
  /** Directory the package was resolved from (recorded in the journal for `remus cleanup`). */
  readonly from: string;
  /** The package's own directory, symlinks resolved (recorded in the journal). */
  readonly dir: string;
}

/**
 * Loads `name` from `<dir>/node_modules` of each directory in turn, then
 * next to remus; no parent directory is looked in. PLUGIN_NOT_FOUND names
 * the install command in the user's package manager.
 */
export async function loadPluginFrom(name: string, dirs: readonly string[]): Promise<LoadedPlugin> {
  const tried = [...new Set([...dirs, ...remusDirs()])];
  let last: unknown;
  for (const from of tried) {
    try {
      const dir = locatePlugin(name, { from }).dir;
      return { plugin: await loadPlugin(name, { from }), from, dir };
    } catch (e) {
      if (!isRemusError(e, 'PLUGIN_NOT_FOUND')) throw e;
      last = e;
    }
  }
  throw new RemusError('PLUGIN_NOT_FOUND', `plugin ${name} is not installed (looked in ${tried.map((d) => join(d, 'node_modules')).join(', ')}): install it with \`${installCommand(name, dirs[0])}\` next to your config, or next to remus`, {
    cause: last,
    details: { plugin: name, tried },
  });
}

/**
 * Loads a plugin for `remus cleanup`: from where the run loaded it only if
 * that is still the package the run had (same directory, version, not
 * writable by group or others), else by the normal resolution next to remus.
 * A directory a journal names is never trusted by itself.
 */
export async function loadPluginForCleanup(name: string, recorded: { from: string; dir?: string; version?: string }): Promise<LoadedPlugin> {
  if (recorded.dir !== undefined && recorded.version !== undefined) {
    try {
      const where = locatePlugin(name, { from: recorded.from });
      const st = statSync(where.dir);
      const uid = process.getuid?.() ?? 0;
      if (where.dir === recorded.dir && where.manifest['version'] === recorded.version && (st.uid === 0 || st.uid === uid) && (st.mode & 0o022) === 0) {
        return { plugin: await loadPlugin(name, { from: recorded.from }), from: recorded.from, dir: where.dir };
      }
    } catch {
      // Not there any more: the normal resolution.
    }
  }
  return loadPluginFrom(name, []);
}

export interface BuiltOps {
  readonly ops: SubkindOps[];
  readonly plugins: LoadedPlugin[];
}

/**
 * Loads every plugin of `configs` and makes their subkinds, in config order
 * (the ops-list order: first match wins), then checks every device against
 * them: a kind no subkind handles, each device's params through core's
 * checkDevices (unknown params naming the closest known one, each subkind's
 * own checkParams), and that the namespace and interface a `nic` device
 * names exist (read-only, {@link checkNicHost}). Nothing on the host is
 * changed. Returns every problem found (with `prior` ones
 * first) without throwing; see {@link buildOps} for the throwing form.
 */
export async function collectOps(configs: readonly PluginConfig[], devices: readonly DeviceSpec[] | undefined, dirs: readonly string[]): Promise<{ built: BuiltOps; problems: ConfigProblem[]; code: PluginErrorCode | undefined }> {
  const ops: SubkindOps[] = [];
  const made: { ops: SubkindOps; options: unknown }[] = [];
  const plugins: LoadedPlugin[] = [];
  const problems: ConfigProblem[] = [];
  let code: PluginErrorCode | undefined;
  let pluginsOk = true;
  for (const [i, pc] of configs.entries()) {
    let loaded: LoadedPlugin;
    try {
      loaded = await loadPluginFrom(pc.package, dirs);
    } catch (e) {
      pluginsOk = false;
      code ??= isRemusError(e, 'PLUGIN_NOT_FOUND') ? 'PLUGIN_NOT_FOUND' : isRemusError(e, 'PLUGIN_INCOMPATIBLE') ? 'PLUGIN_INCOMPATIBLE' : 'PLUGIN_INVALID';
      problems.push({ path: `plugins[${i}].package`, message: describeCause(e) ?? 'cannot be loaded', fix: isRemusError(e, 'PLUGIN_NOT_FOUND') ? `install it: ${installCommand(pc.package, dirs[0])}` : 'install a release of the plugin made for this remus' });
      continue;
    }
    plugins.push(loaded);
    for (const [name, options] of Object.entries(pc.subkinds)) {
      const path = `plugins[${i}].subkinds.${name}`;
      try {
        const subkind = createSubkind(loaded.plugin, name, options);
        ops.push(subkind);
        made.push({ ops: subkind, options });
      } catch (e) {
        pluginsOk = false;
        const fix = isRemusError(e, 'SUBKIND_NOT_FOUND')
          ? `use one of: ${Object.keys(loaded.plugin.subkinds).join(', ')}`
          : 'see the plugin README for its options';
        problems.push({ path, message: describeCause(e) as string, fix });
      }
    }
  }
  // Kinds and params can only be judged against a complete ops list.
  if (pluginsOk && devices !== undefined) {
    const kinds = new Set(ops.map((o) => o.kind));
    // Devices with a problem already: their host objects are not looked for.
    const bad = new Set<number>();
    devices.forEach((d, i) => {
      if (!kinds.has(d.kind)) {
        bad.add(i);
        const near = closestName(d.kind, kinds);
        problems.push({
          path: `devices[${i}].kind`,
          message: `no subkind in plugins handles kind "${d.kind}" (kinds present: ${[...kinds].join(', ') || 'none'})`,
          fix: near ? `did you mean "${near}"?` : `add a plugin with a "${d.kind}" subkind to plugins, or correct the kind`,
        });
      }
    });
    for (const e of checkDevices(ops, devices)) {
      const i = devices.findIndex((d) => d.id === e.device);
      bad.add(i);
      const param = (e.details as { param?: string } | undefined)?.param;
      problems.push({
        path: i < 0 ? 'devices' : param !== undefined ? `devices[${i}].params.${param}` : `devices[${i}].params`,
        message: e.message,
        fix: param !== undefined ? 'correct or remove it (see the subkind README for its params)' : 'correct the params (see the subkind README)',
      });
    }
    problems.push(...(await checkNicHost(made, devices, bad)));
  }
  return { built: { ops, plugins }, problems, code };
}

type PluginErrorCode = 'PLUGIN_NOT_FOUND' | 'PLUGIN_INVALID' | 'PLUGIN_INCOMPATIBLE';

/**
 * {@link collectOps}, throwing one error listing every problem (code
 * INVALID_ARGUMENT, or the loader's PLUGIN_* code when loading a plugin was
 * the only kind of problem).
 */
export async function buildOps(configs: readonly PluginConfig[], devices: readonly DeviceSpec[], dirs: readonly string[], source = 'config'): Promise<BuiltOps> {
  const { built, problems, code } = await collectOps(configs, devices, dirs);
  if (problems.length > 0) throw configError(source, problems, problems.every((p) => p.path.endsWith('.package')) ? code : undefined);
  return built;
}

/**
 * Plugin packages installed where `dirs` (and remus) load them from (their
 * own `node_modules`, no parent's): every
 * `@remus/*` package except core and cli, and any package whose
 * package.json lists the keyword `remus-plugin`. For `remus doctor`.
 */
export function findInstalledPlugins(dirs: readonly string[]): string[] {
  const names = new Set<string>();
  for (const start of new Set([...dirs, ...remusDirs()])) {
    const nm = join(start, 'node_modules');
    if (!existsSync(nm)) continue;
    for (const entry of safeList(nm)) {
      if (entry.startsWith('@')) {
        for (const sub of safeList(join(nm, entry))) consider(names, join(nm, entry, sub), `${entry}/${sub}`);
      } else if (!entry.startsWith('.')) consider(names, join(nm, entry), entry);
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
