/**
 * The packages a command needs beyond @remus/core, loaded when the command
 * runs: @remus/cli depends on @remus/core alone, so installing it with one
 * plugin pulls nothing else. Each is resolved like a plugin (only from
 * `node_modules` next to the config, when there is one, and next to remus;
 * its `peerDependencies["@remus/core"]` checked against this core) and
 * imported once. A missing one is PLUGIN_NOT_FOUND naming the command that
 * needs it and the install command in the user's package manager.
 */
import { pathToFileURL } from 'node:url';
import { RemusError, checkCoreCompatibility, isRemusError, locatePlugin } from '@remus/core';
import type * as ArbiterEtcdModule from '@remus/arbiter-etcd';
import type * as ColoModule from '@remus/colo';
import type * as DomainCriuModule from '@remus/domain-criu';
import type * as DomainProcessModule from '@remus/domain-process';
import type * as QmpModule from '@remus/qmp';
import { installCommand, remusDirs } from './plugins.js';

export type DomainProcessLib = typeof DomainProcessModule;
export type DomainCriuLib = typeof DomainCriuModule;
export type ColoLib = typeof ColoModule;
export type ArbiterEtcdLib = typeof ArbiterEtcdModule;
export type QmpLib = typeof QmpModule;

const loaded = new Map<string, Promise<unknown>>();

/**
 * Loads package `name` for `forWhat` (e.g. "remus colo"), from `dirs`
 * (default: next to remus). Throws PLUGIN_NOT_FOUND, PLUGIN_INVALID or
 * PLUGIN_INCOMPATIBLE before any of its code runs.
 */
export function loadLibrary<T>(name: string, forWhat: string, dirs: readonly string[] = remusDirs()): Promise<T> {
  const key = `${name}\0${dirs.join('\0')}`;
  let p = loaded.get(key) as Promise<T> | undefined;
  if (!p) {
    p = (async () => {
      let entry: string;
      try {
        const where = locatePlugin(name, { from: dirs });
        checkCoreCompatibility(where.manifest, name);
        entry = where.entry;
      } catch (e) {
        if (!isRemusError(e, 'PLUGIN_NOT_FOUND')) throw e;
        throw new RemusError(
          'PLUGIN_NOT_FOUND',
          `${forWhat} needs ${name}, which is not installed (looked in ${dirs.map((d) => `${d}/node_modules`).join(', ')}): install it next to remus with \`${installCommand(name, dirs[0])}\`, or everything with \`${installCommand('@remus/all', dirs[0])}\``,
          { cause: e, details: { plugin: name, for: forWhat } },
        );
      }
      return (await import(pathToFileURL(entry).href)) as T;
    })();
    loaded.set(key, p);
    p.catch(() => loaded.delete(key));
  }
  return p;
}

/** @remus/domain-process: the process domain, the backup endpoint, cgroup cleanup. */
export function loadDomainProcess(forWhat: string, dirs?: readonly string[]): Promise<DomainProcessLib> {
  return loadLibrary<DomainProcessLib>('@remus/domain-process', forWhat, dirs);
}

/** @remus/domain-criu: the CRIU domain (its host checks for `remus doctor` and the demo). */
export function loadDomainCriu(forWhat: string, dirs?: readonly string[]): Promise<DomainCriuLib> {
  return loadLibrary<DomainCriuLib>('@remus/domain-criu', forWhat, dirs);
}

/**
 * One line on whether CRIU (the Remus path with real state) works here: the
 * first blocking finding of @remus/domain-criu's checks ("CRIU 4.1 or later
 * is needed on kernel 6.13+", "criu not found"...), or that it works. Never
 * throws; bounded by the checks' own time limit.
 */
export async function criuSummary(forWhat: string): Promise<{ readonly works: boolean; readonly line: string }> {
  let lib: DomainCriuLib;
  try {
    lib = await loadDomainCriu(forWhat);
  } catch (e) {
    return { works: false, line: `not installed (${installCommand('@remus/domain-criu')})` };
  }
  try {
    const checks = await lib.doctorChecks({ timeoutMs: 20_000 });
    const blocking = checks.find((c) => c.status === 'error');
    if (blocking) return { works: false, line: blocking.message };
    const warn = checks.find((c) => c.status === 'warning');
    return { works: true, line: `works on this kernel${warn ? ` (${warn.message})` : ''}` };
  } catch (e) {
    return { works: false, line: `its checks failed: ${(e as Error)?.message ?? String(e)}` };
  }
}

/** @remus/colo: the COLO driver. */
export function loadColo(forWhat: string): Promise<ColoLib> {
  return loadLibrary<ColoLib>('@remus/colo', forWhat);
}

/** @remus/arbiter-etcd: the etcd arbiter (a COLO side's role, the pair's status across hosts). */
export function loadArbiterEtcd(forWhat: string): Promise<ArbiterEtcdLib> {
  return loadLibrary<ArbiterEtcdLib>('@remus/arbiter-etcd', forWhat);
}

/** @remus/qmp: the QMP client. */
export function loadQmp(forWhat: string): Promise<QmpLib> {
  return loadLibrary<QmpLib>('@remus/qmp', forWhat);
}
