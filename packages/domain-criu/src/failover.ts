/**
 * Failover on the backup: restore the protected tree from the last complete
 * checkpoint, with its TCP connections and its network identity. The one
 * entry point a cross-host arbiter (the etcd issue) gates: call it only once
 * this host holds the primary role.
 *
 * Order: refuse a second failover (STATE) -> doctor checks (unless `ready`
 * says they passed earlier) -> verify every
 * image of the restore point's chain against its sha256 -> lock the network
 * (an iptables DROP of the service address, so nothing answers the clients
 * with RSTs between the last dump and the restore) -> add the service
 * address -> `criu restore --tcp-established -d` -> unlock -> gratuitous ARP.
 * A failure at any step undoes the earlier ones (address removed, lock
 * removed, anything CRIU left killed) and rejects; the failover may then be
 * retried.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { RemusError, isRemusError } from '@remus/core';
import { findProgram } from '@remus/domain-process';
import { readRestorePoint, verifyRestorePoint } from './backup.js';
import { assertCriuReady, type CriuReady } from './doctor.js';
import { CriuErrors } from './errors.js';
import { lastLines, runProgram } from './run.js';

/** The service address that moves to the backup. */
export interface ServiceAddress {
  /** Address with prefix length, e.g. `10.0.0.100/24` (IPv4). */
  readonly address: string;
  /** The backup's interface that takes it (at most 15 bytes). */
  readonly dev: string;
}

export interface FailoverOptions {
  /** The backup's checkpoint directory (the `dir` of {@link createCriuBackup}). */
  readonly restorePoint: string;
  /** Address to move here (omit when the address is already routed to this host). */
  readonly serviceAddress?: ServiceAddress;
  /** criu program. Default: `criu` on PATH, /usr/sbin, /sbin. */
  readonly criuPath?: string;
  /**
   * The network namespace (`/run/netns/NAME`) the tree was dumped in (the
   * domain's `netns`): the lock, the address, `criu restore` and the ARP run
   * in this host's namespace of that name, so the tree's sockets are local to it.
   */
  readonly netns?: string;
  /** Bound on the whole failover, ms. Default 120 000. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Progress lines. Must not throw. */
  readonly onStep?: (line: string) => void;
  /**
   * The result of {@link assertCriuReady} run earlier on this host (e.g. when
   * the backup started): the failover then skips the checks, which cost three
   * criu runs (seconds on a slow CPU) on the failover's critical path.
   */
  readonly ready?: CriuReady;
}

export interface FailoverResult {
  /** The checkpoint restored. */
  readonly checkpoint: number;
  /** Pid of the restored tree's root. */
  readonly pid: number;
  /** `criu restore` wall time, ms. */
  readonly restoreMs: number;
  /** The whole failover, ms. */
  readonly totalMs: number;
  /** `sent`, or why the gratuitous ARP was skipped. */
  readonly arp: string;
}

/** Failovers running or done in this process, by directory. */
const taken = new Set<string>();

/** Restores the service on this host from the last complete checkpoint. See the file header. */
export async function failover(o: FailoverOptions): Promise<FailoverResult> {
  const started = performance.now();
  const dir = o.restorePoint;
  const step = (l: string): void => o.onStep?.(l);
  const signal = AbortSignal.any([AbortSignal.timeout(o.timeoutMs ?? 120_000), ...(o.signal ? [o.signal] : [])]);
  const svc = o.serviceAddress === undefined ? undefined : checkServiceAddress(o.serviceAddress);
  const netns = o.netns;
  if (netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(netns)) throw new RemusError('INVALID_ARGUMENT', `failover: netns ${JSON.stringify(netns)} is not a plain name`);
  const lockFile = join(dir, '.failover');
  if (taken.has(dir) || existsSync(lockFile)) {
    throw new RemusError('STATE', `a failover from ${dir} already ran or is running: refused (remove ${lockFile} only after the restored service is gone)`);
  }
  taken.add(dir);
  // Checks before anything is touched (a host where criu cannot work gets no lock file, no directory).
  let criu: string;
  try {
    criu = (o.ready ?? (await assertCriuReady({ criuPath: o.criuPath, netns, signal }))).criu;
    if (!existsSync(dir)) throw new RemusError(CriuErrors.NO_RESTORE_POINT, `backup directory ${dir} does not exist`);
  } catch (e) {
    taken.delete(dir);
    throw e;
  }
  const undo: { what: string; run: () => Promise<void> }[] = [];
  try {
    const fd = openSync(lockFile, 'wx');
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
  } catch (e) {
    taken.delete(dir);
    const exists = (e as NodeJS.ErrnoException).code === 'EEXIST';
    throw new RemusError(exists ? 'STATE' : 'OP_FAILED', exists ? `a failover from ${dir} is already running: refused` : `cannot lock ${lockFile}: ${(e as Error).message}`, { cause: e });
  }
  undo.push({ what: 'failover lock', run: async () => rmSync(lockFile, { force: true }) });
  try {
    const chain = verifyRestorePoint(dir);
    const point = readRestorePoint(dir) as NonNullable<ReturnType<typeof readRestorePoint>>;
    step(`restore point: checkpoint ${point.checkpoint} (chain ${chain.join(' <- ')}), images verified`);
    const cmd = async (argv: string[], what: string, tolerate = false): Promise<void> => {
      const r = await runProgram(argv, { timeoutMs: 15_000, signal, netns, what });
      if (r.code !== 0 && !tolerate) throw new RemusError('OP_FAILED', `${what} failed: ${lastLines(r.output, 2)}`);
    };
    if (svc) {
      const ip = svc.address.split('/')[0] as string;
      const rule = ['INPUT', '-d', ip, '-j', 'DROP'];
      await cmd(['iptables', '-w', '-I', ...rule], `network lock (iptables DROP to ${ip})`);
      undo.push({ what: 'network lock', run: () => cmd(['iptables', '-w', '-D', ...rule], 'network unlock', true) });
      step(`network locked: DROP to ${ip}`);
      await cmd(['ip', 'addr', 'add', svc.address, 'dev', svc.dev], `adding ${svc.address} to ${svc.dev}`);
      undo.push({ what: 'service address', run: () => cmd(['ip', 'addr', 'del', svc.address, 'dev', svc.dev], `removing ${svc.address}`, true) });
      step(`service address ${svc.address} on ${svc.dev}`);
    }
    const pidFile = join(dir, `.restore-${point.checkpoint}.pid`);
    const workDir = join(dir, '.restore-work');
    rmSync(pidFile, { force: true });
    mkdirSync(workDir, { recursive: true });
    const restoreStarted = performance.now();
    const r = await runProgram(
      [criu, 'restore', '-D', point.path, '-W', workDir, '-o', join(workDir, `restore-${point.checkpoint}.log`), '-v2', '-d', '--tcp-established', '--manage-cgroups=ignore', '--pidfile', pidFile],
      { timeoutMs: 90_000, signal, netns, what: `criu restore of checkpoint ${point.checkpoint}` },
    ).catch((e: unknown) => {
      killPidFile(pidFile);
      throw e;
    });
    const restoreMs = performance.now() - restoreStarted;
    if (r.code !== 0) {
      killPidFile(pidFile);
      throw new RemusError(CriuErrors.RESTORE_FAILED, `criu restore of checkpoint ${point.checkpoint} failed (${r.signal ?? `exit ${r.code}`}): ${lastLines(errorLines(join(workDir, `restore-${point.checkpoint}.log`)) || r.output)}`, {
        details: { checkpoint: point.checkpoint },
      });
    }
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    step(`restored checkpoint ${point.checkpoint} as pid ${pid} in ${restoreMs.toFixed(0)} ms`);
    // Success: the restored sockets answer from now on.
    const unlock = undo.find((u) => u.what === 'network lock');
    undo.length = 0;
    await unlock?.run();
    let arp = 'skipped: no service address to announce';
    if (svc) {
      const arping = findProgram('arping') ?? findProgram('/usr/sbin/arping');
      if (arping === undefined) arp = 'skipped: arping not installed (install iputils-arping); neighbours learn the new MAC when their ARP entries expire';
      else {
        const a = await runProgram([arping, '-U', '-c', '2', '-w', '3', '-I', svc.dev, svc.address.split('/')[0] as string], { timeoutMs: 10_000, signal, netns, what: 'gratuitous ARP' }).catch((e: unknown) => ({
          code: -1,
          signal: null,
          output: (e as Error).message,
        }));
        arp = a.code === 0 || a.code === 1 ? 'sent' : `failed: ${lastLines(a.output, 1)}`;
      }
      step(`gratuitous ARP: ${arp}`);
    }
    return { checkpoint: point.checkpoint, pid, restoreMs, totalMs: performance.now() - started, arp };
  } catch (e) {
    for (const u of undo.reverse()) await u.run().catch(() => undefined);
    taken.delete(dir);
    throw isRemusError(e) ? e : new RemusError(CriuErrors.RESTORE_FAILED, `failover from ${dir} failed: ${(e as Error).message}`, { cause: e });
  }
}

function checkServiceAddress(s: ServiceAddress): ServiceAddress {
  if (!/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/.test(s?.address ?? '')) throw new RemusError('INVALID_ARGUMENT', `failover: service address ${JSON.stringify(s?.address)} must be IPv4 with a prefix, e.g. 10.0.0.100/24`);
  if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(s.dev ?? '')) throw new RemusError('INVALID_ARGUMENT', `failover: interface ${JSON.stringify(s?.dev)} is not a valid name (at most 15 bytes)`);
  return s;
}

/** Kills the tree CRIU may have left when its restore failed (it normally cleans up itself). */
function killPidFile(pidFile: string): void {
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 1) process.kill(pid, 'SIGKILL');
  } catch {
    // No pid file, or it is gone.
  }
  rmSync(pidFile, { force: true });
}

function errorLines(log: string): string {
  try {
    return readFileSync(log, 'utf8')
      .split('\n')
      .filter((l) => /Error/.test(l))
      .slice(-6)
      .join('\n');
  } catch {
    return '';
  }
}
