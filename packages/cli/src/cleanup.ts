/**
 * `remus cleanup`: after a run died without tearing down (crash, SIGKILL,
 * power loss of the process), remove what it left, from its journal.
 * Journals of runs whose process still runs are left alone.
 *
 * A journal is input, so cleanup acts only on what the run provably made:
 * - cgroups: exactly `<freezer root>/remus-<operation>` of a freezer
 *   hierarchy of this host, a real cgroup directory (domain-process's
 *   cleanupOperationCgroup); any other path is refused;
 * - network namespaces: only names that carry the operation
 *   (`remus-...-<operation>-...`), as the demo makes them;
 * - processes: only a live pid whose start time equals the recorded one
 *   (no recorded start time: not killed), never remus itself or an ancestor;
 * - kernel objects of devices: each subkind's `reap` through the engine
 *   (core's reapDevices), which finds them by the operation's tag; plugins
 *   load from where the run loaded them only if that is still the package it
 *   had, else by the normal resolution next to remus, never from a path the
 *   journal names by itself.
 * Journals are refused when they are not regular files owned by this user
 * and writable by no one else (see journal.ts); a bad journal is reported
 * and skipped, the others are cleaned.
 */
import { rmSync } from 'node:fs';
import { createSubkind, describeCause, procStat, reapDevices, type SubkindOps } from '@remus/core';
import { listJournals, processStart, sameProcess, stillRunning, type JournalData } from './journal.js';
import { removeNetns } from './netns.js';
import { loadDomainProcess } from './libs.js';
import { loadPluginForCleanup } from './plugins.js';

/** What cleanup did with one journal. */
export interface CleanupResult {
  readonly journal: string;
  readonly operation: string | undefined;
  /** `cleaned`: all removed, journal deleted; `running`: its run is alive, left alone; `failed`: something stayed or the journal was refused (journal kept). */
  readonly status: 'cleaned' | 'running' | 'failed';
  /** One line per object removed. */
  readonly removed: string[];
  readonly errors: string[];
}

/**
 * Cleans up after every dead run with a journal in `dir`. Throws
 * INVALID_ARGUMENT when `dir` is not a usable state directory (a file, a
 * symlink, a pseudo filesystem, foreign or shared-writable).
 */
export async function cleanupAll(dir: string, only?: string): Promise<CleanupResult[]> {
  const results: CleanupResult[] = [];
  for (const j of listJournals(dir)) {
    if (!j.data) {
      results.push({ journal: j.path, operation: undefined, status: 'failed', removed: [], errors: [`journal refused: ${j.error}`] });
      continue;
    }
    if (only !== undefined && j.data.operation !== only) continue;
    if (stillRunning(j.data.pid, j.data.pidStart)) {
      results.push({ journal: j.path, operation: j.data.operation, status: 'running', removed: [], errors: [] });
      continue;
    }
    const r = await cleanupRun(j.data);
    if (r.errors.length === 0) rmSync(j.path, { force: true });
    results.push({ journal: j.path, operation: j.data.operation, status: r.errors.length === 0 ? 'cleaned' : 'failed', ...r });
  }
  return results;
}

/** True when `name` carries the operation as one of its dash-separated parts, after a `remus-` prefix. */
export function netnsOfOperation(name: string, operation: string): boolean {
  return name.startsWith('remus-') && name.split('-').includes(operation);
}

/** Pids of this process and its ancestors (never signalled by cleanup). */
function selfAndAncestors(): Set<number> {
  const out = new Set<number>([process.pid]);
  let pid = process.ppid;
  for (let i = 0; i < 4096 && pid > 0 && !out.has(pid); i++) {
    out.add(pid);
    const stat = procStat(pid);
    if (stat === undefined) break;
    pid = stat.ppid;
  }
  return out;
}

/**
 * Removes what one dead run left: each subkind's `reap` through the engine
 * (rebuilt from the recorded plugins and options), then the processes it
 * started, its cgroup (killing what is in it, or, for a protected pid,
 * moving the processes to the parent cgroup alive), and its network
 * namespaces, each only when provably the run's (see the file comment).
 * Every step runs even if an earlier one failed; refusals are errors.
 */
export async function cleanupRun(data: JournalData): Promise<{ removed: string[]; errors: string[] }> {
  const removed: string[] = [];
  const errors: string[] = [];
  const step = async (what: string, f: () => Promise<readonly string[]> | readonly string[]): Promise<void> => {
    try {
      removed.push(...(await f()));
    } catch (e) {
      errors.push(`${what}: ${describeCause(e)}`);
    }
  };
  const ops: SubkindOps[] = [];
  for (const p of data.plugins) {
    let plugin;
    try {
      plugin = (await loadPluginForCleanup(p.package, p)).plugin;
    } catch (e) {
      errors.push(`plugin ${p.package}: ${describeCause(e)}`);
      continue;
    }
    for (const [name, options] of Object.entries(p.subkinds)) {
      try {
        ops.push(createSubkind(plugin, name, options));
      } catch (e) {
        errors.push(`${p.package} ${name}: ${describeCause(e)}`);
      }
    }
  }
  if (ops.length > 0) {
    const entries = ops.flatMap((o) => data.devices.filter((d) => d.kind === o.kind).map((device) => ({ device, subkind: o.name })));
    try {
      const r = await reapDevices(ops, data.operation, entries);
      for (const x of r.removed) removed.push(...x.lines.map((l) => `${x.subkind}: ${l}`));
      for (const e of r.errors) errors.push(`${e.subkind ?? ''} reap: ${e.message}`);
    } catch (e) {
      errors.push(`reap: ${describeCause(e)}`);
    }
  }
  const protectedPids = selfAndAncestors();
  for (const proc of data.processes) {
    await step(`process ${proc.pid}`, () => {
      if (proc.start === undefined) return [`left process ${proc.pid} alone: the journal has no start time for it, so it cannot be told from a later process with the same pid`];
      if (!sameProcess(proc.pid, proc.start)) return [];
      if (protectedPids.has(proc.pid)) throw new Error(`refused: pid ${proc.pid} is remus itself or one of its ancestors`);
      try {
        process.kill(-proc.pid, 'SIGKILL');
      } catch {
        // Not a group leader: the process alone, checked again just before.
        if (processStart(proc.pid) === proc.start) process.kill(proc.pid, 'SIGKILL');
      }
      return [`killed ${proc.what} (pid ${proc.pid})`];
    });
  }
  // A protected pid tree is given back alive; what the run started is killed.
  // domain-process's strict cleanup refuses any path but <freezer root>/remus-<operation> (a real cgroup directory).
  for (const path of data.cgroups) {
    await step(`cgroup ${path}`, async () => {
      const { cleanupOperationCgroup } = await loadDomainProcess('remus cleanup (a cgroup in the journal)');
      return cleanupOperationCgroup({ operation: data.operation, path, mode: data.domainMode === 'pid' ? 'release' : 'reap' });
    });
  }
  for (const name of data.netns) {
    await step(`network namespace ${name}`, () => {
      if (!netnsOfOperation(name, data.operation)) throw new Error(`refused: the name does not carry the run's operation ${data.operation}`);
      return removeNetns(name);
    });
  }
  return { removed, errors };
}
