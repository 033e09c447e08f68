/**
 * The `domain` of a `remus run` config when it is `{ "type": "criu", ... }`:
 * a running process tree checkpointed with CRIU (@remus/domain-criu), its
 * images sent to `remus backup --domain criu`. Checked like the rest of the
 * config (every problem with its JSON path, unknown keys naming the closest
 * known one) before anything on the host is touched.
 */
import { isObject, num, oneOf, unknownKeys, type Report } from '../validation.js';

export interface CriuDomainConfig {
  readonly type: 'criu';
  /** Root pid of the running tree to protect (start it detached from remus: its own stdio, not a pipe to remus). */
  readonly pid: number;
  /** This host's image directory (one subdirectory per checkpoint). */
  readonly workDir: string;
  /** Where `remus backup --domain criu` listens: "host:port" or { "path": "/x.sock" }. */
  readonly backup: string | { readonly path: string };
  /** The tree's network namespace (`ip netns` name): criu runs in it. */
  readonly netns?: string;
  /** criu program; default `criu` on PATH, /usr/sbin, /sbin. */
  readonly criuPath?: string;
  readonly cgroup: 'auto' | 'v1' | 'v2';
  /** A full dump every this many checkpoints. */
  readonly fullEvery?: number;
  /** Extra `criu dump` arguments (argument vector). */
  readonly dumpArgs?: readonly string[];
  /** PING to the backup this often, ms. */
  readonly keepaliveMs?: number;
}

export const CRIU_DOMAIN_KEYS = ['type', 'pid', 'workDir', 'backup', 'netns', 'criuPath', 'cgroup', 'fullEvery', 'dumpArgs', 'keepaliveMs'];

const EXAMPLE = '{ "type": "criu", "pid": 1234, "workDir": "/var/lib/remus/svc", "backup": "10.0.0.2:7790" }';

/** Checks a `domain` object whose type is "criu"; reports every problem, returns the domain with defaults. */
export function validateCriuDomain(d: Record<string, unknown>, p: Report): CriuDomainConfig {
  const { command, ...keys } = d;
  unknownKeys(keys, CRIU_DOMAIN_KEYS, 'domain', p);
  if (command !== undefined) {
    p('domain.command', 'a criu domain protects a running tree', `start the service yourself (its stdio not a pipe to remus: CRIU cannot restore a pipe to a dead process) and give its "pid"; e.g. ${EXAMPLE}`);
  }
  if (!(Number.isInteger(d.pid) && (d.pid as number) > 1)) {
    p('domain.pid', d.pid === undefined ? 'is missing' : `${JSON.stringify(d.pid)} is not a process id`, 'the integer pid (> 1) of the running service to protect');
  }
  if (typeof d.workDir !== 'string' || d.workDir === '') {
    p('domain.workDir', d.workDir === undefined ? 'is missing' : 'must be a directory path', 'a local directory for this host\'s CRIU images, e.g. "/var/lib/remus/svc-primary"');
  }
  const backupFix = 'where `remus backup --domain criu --listen` listens: "10.0.0.2:7790", or { "path": "/run/remus/svc.sock" }';
  const b = d.backup;
  if (b === undefined) p('domain.backup', 'is missing', backupFix);
  else if (isObject(b)) {
    unknownKeys(b, ['path'], 'domain.backup', p);
    if (typeof b.path !== 'string' || !b.path.startsWith('/')) p('domain.backup.path', 'must be an absolute path', backupFix);
  } else if (typeof b !== 'string' || !/^.+:[0-9]{1,5}$/.test(b)) p('domain.backup', `${JSON.stringify(b)} is not HOST:PORT`, backupFix);
  if (d.netns !== undefined && (typeof d.netns !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(d.netns))) {
    p('domain.netns', `${JSON.stringify(d.netns)} is not a network namespace name`, 'the `ip netns` name the service runs in (letters, digits, _ . -), or leave it out');
  }
  if (d.criuPath !== undefined && (typeof d.criuPath !== 'string' || !d.criuPath.startsWith('/'))) {
    p('domain.criuPath', 'must be an absolute path', 'e.g. "/usr/local/sbin/criu", or leave it out to use criu on PATH');
  }
  const cgroup = oneOf(d, 'cgroup', 'domain', p, ['auto', 'v1', 'v2'], 'auto') as CriuDomainConfig['cgroup'];
  const fullEvery = num(d, 'fullEvery', 'domain', p, { min: 1, integer: true, fix: 'a full dump every N checkpoints, e.g. 50' });
  const keepaliveMs = num(d, 'keepaliveMs', 'domain', p, { min: 1, fix: 'milliseconds between keepalives to the backup, e.g. 1000 (below the backup\'s --silence-ms)' });
  if (d.dumpArgs !== undefined && (!Array.isArray(d.dumpArgs) || d.dumpArgs.some((a) => typeof a !== 'string' || a === ''))) {
    p('domain.dumpArgs', 'must be an array of non-empty strings', 'extra criu dump arguments as an argument vector, e.g. ["--ext-unix-sk"]');
  }
  return {
    type: 'criu',
    pid: d.pid as number,
    workDir: d.workDir as string,
    backup: d.backup as CriuDomainConfig['backup'],
    ...(typeof d.netns === 'string' ? { netns: d.netns } : {}),
    ...(typeof d.criuPath === 'string' ? { criuPath: d.criuPath } : {}),
    cgroup,
    ...(fullEvery !== undefined ? { fullEvery } : {}),
    ...(keepaliveMs !== undefined ? { keepaliveMs } : {}),
    ...(Array.isArray(d.dumpArgs) ? { dumpArgs: d.dumpArgs as string[] } : {}),
  };
}
