/**
 * `remus run` with a criu domain: the CriuDomain of @remus/domain-criu
 * (loaded on use; the CLI depends on @remus/core alone), built from the
 * validated config. Its `start()` runs CRIU's checks first (criu missing, too
 * old for the kernel: "CRIU 4.1 or later is needed on kernel 6.13+", not
 * root) and touches nothing when one fails.
 */
import type { CriuDomain, DumpFigures } from '@remus/domain-criu';
import { loadDomainCriu } from '../libs.js';
import type { CriuDomainConfig } from './config.js';

export interface CriuRunDomainOptions {
  readonly operation: string;
  readonly pluginDirs: readonly string[];
  /** The command, for messages (e.g. `remus run`). */
  readonly forWhat: string;
  /** The domain's cgroup once made (the run's journal records it). */
  readonly onCgroup: (path: string) => void;
  /** One-time warnings (soft-dirty missing: every dump is full). */
  readonly onWarning: (message: string) => void;
  /** Each dump's figures (full or incremental, criu time, bytes). */
  readonly onDump?: (figures: DumpFigures) => void;
}

/** Loads @remus/domain-criu and makes the domain the run's checkpoint loop drives. */
export async function criuRunDomain(d: CriuDomainConfig, o: CriuRunDomainOptions): Promise<CriuDomain> {
  const { criuDomain } = await loadDomainCriu(`${o.forWhat} (the criu domain)`, o.pluginDirs);
  return criuDomain({
    pid: d.pid,
    workDir: d.workDir,
    backup: d.backup,
    operation: o.operation,
    cgroup: d.cgroup,
    ...(d.netns !== undefined ? { netns: d.netns } : {}),
    ...(d.criuPath !== undefined ? { criuPath: d.criuPath } : {}),
    ...(d.fullEvery !== undefined ? { fullEvery: d.fullEvery } : {}),
    ...(d.keepaliveMs !== undefined ? { keepaliveMs: d.keepaliveMs } : {}),
    ...(d.dumpArgs !== undefined ? { dumpArgs: d.dumpArgs } : {}),
    onResource: (r) => o.onCgroup(r.path),
    onWarning: o.onWarning,
    ...(o.onDump ? { onDump: o.onDump } : {}),
  });
}
