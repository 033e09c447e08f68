/**
 * `remus cleanup`: after a run died without tearing down (crash, SIGKILL,
 * power loss of the process), remove everything it left, from its journal.
 * Journals of runs whose process still runs are left alone.
 */
import { rmSync } from 'node:fs';
import { createSubkind, describeCause, type OpContext } from '@remus/core';
import { reapCgroup, releaseCgroup } from '@remus/domain-process';
import { listJournals, stillRunning, type JournalData } from './journal.js';
import { removeNetns } from './netns.js';
import { loadPluginFrom } from './plugins.js';

/** What cleanup did with one journal. */
export interface CleanupResult {
  readonly journal: string;
  readonly operation: string | undefined;
  /** `cleaned`: all removed, journal deleted; `running`: its run is alive, left alone; `failed`: something stayed (journal kept). */
  readonly status: 'cleaned' | 'running' | 'failed';
  /** One line per object removed. */
  readonly removed: string[];
  readonly errors: string[];
}

/** Cleans up after every dead run with a journal in `dir`. */
export async function cleanupAll(dir: string, only?: string): Promise<CleanupResult[]> {
  const results: CleanupResult[] = [];
  for (const j of listJournals(dir)) {
    if (!j.data) {
      results.push({ journal: j.path, operation: undefined, status: 'failed', removed: [], errors: [`unreadable journal: ${j.error}`] });
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

/**
 * Removes what one dead run left: each subkind's `reap` (rebuilt from the
 * recorded plugins and options), then the processes it started, its
 * cgroups (killing what is in them, or, for a protected pid, moving the
 * processes to the parent cgroup alive), and its network namespaces. Every step runs even if an earlier
 * one failed.
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
  for (const p of data.plugins) {
    let plugin;
    try {
      plugin = (await loadPluginFrom(p.package, [p.from])).plugin;
    } catch (e) {
      errors.push(`plugin ${p.package}: ${describeCause(e)}`);
      continue;
    }
    for (const [name, options] of Object.entries(p.subkinds)) {
      await step(`${p.package} ${name} reap`, async () => {
        const ops = createSubkind(plugin, name, options);
        if (!ops.reap) return [];
        const ctx: OpContext = { signal: AbortSignal.timeout(60_000), checkpoint: 0, epoch: 0, operation: data.operation };
        const mine = data.devices.filter((d) => d.kind === ops.kind);
        return (await ops.reap(data.operation, mine, ctx)).map((l) => `${name}: ${l}`);
      });
    }
  }
  for (const proc of data.processes) {
    await step(`process ${proc.pid}`, () => {
      if (!stillRunning(proc.pid, proc.start)) return [];
      try {
        process.kill(-proc.pid, 'SIGKILL');
      } catch {
        process.kill(proc.pid, 'SIGKILL');
      }
      return [`killed ${proc.what} (pid ${proc.pid})`];
    });
  }
  // A protected pid tree is given back alive; what the run started is killed.
  const removeCgroup = data.domainMode === 'pid' ? releaseCgroup : reapCgroup;
  for (const path of data.cgroups) await step(`cgroup ${path}`, () => removeCgroup(path));
  for (const name of data.netns) await step(`network namespace ${name}`, () => removeNetns(name));
  return { removed, errors };
}
