/**
 * Which DRBD device a disk spec names, and what state it is in: the parts of
 * `match` and `setup` that may take time or spawn (stat, `drbdsetup show`,
 * the operator's probe script). Never used by the checkpoint ops.
 */
import { stat } from 'node:fs/promises';
import { RemusError, runScript, validateName, type DeviceSpec } from '@remus/core';
import type { DrbdMinorState } from './state.js';

/** Block major of every DRBD device (`DRBD_MAJOR` in the kernel). */
export const DRBD_MAJOR = 147;

/** The DRBD device a disk spec resolved to. */
export interface DrbdTarget {
  /** Device path as given, or `/dev/drbd<minor>` when only the resource was given. */
  readonly path: string;
  readonly minor: number;
  /** Resource name when given or found; used in messages and fixes. */
  readonly resource: string | undefined;
}

/** The disk spec's DRBD parameters, checked. */
export interface DrbdParams {
  readonly path: string | undefined;
  readonly resource: string | undefined;
  readonly volume: number | undefined;
}

/** Reads `params.path`, `params.resource` and `params.volume`; throws INVALID_ARGUMENT on wrong types or names. */
export function readParams(device: DeviceSpec): DrbdParams {
  const p = device.params ?? {};
  const path = p['path'];
  if (path !== undefined && (typeof path !== 'string' || !path.startsWith('/'))) {
    throw new RemusError('INVALID_ARGUMENT', `disk ${device.id}: params.path must be an absolute device path (e.g. /dev/drbd0)`, {
      device: device.id,
    });
  }
  const resource = p['resource'] === undefined ? undefined : validateName(p['resource'], `disk ${device.id}: DRBD resource`);
  const volume = p['volume'];
  if (volume !== undefined && (!Number.isInteger(volume) || (volume as number) < 0)) {
    throw new RemusError('INVALID_ARGUMENT', `disk ${device.id}: params.volume must be a non-negative integer`, { device: device.id });
  }
  return { path, resource, volume: volume as number | undefined };
}

/** How a path relates to DRBD: its minor, or why it is not a DRBD device. */
export type PathKind = { readonly drbd: true; readonly minor: number } | { readonly drbd: false; readonly reason: string };

/**
 * Stats `path` (following links, so `/dev/drbd/by-res/r0/0` works). A missing
 * path is a fault (throws DEVICE_NOT_READY); a file or a block device of
 * another driver is simply not DRBD.
 */
export async function classifyPath(path: string): Promise<PathKind> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    throw new RemusError('DEVICE_NOT_READY', `${path} does not exist or cannot be read (${(e as Error).message}): give the path of the domain's disk`, {
      cause: e,
      details: { path },
    });
  }
  if (!st.isBlockDevice()) return { drbd: false, reason: `${path} is not a block device, so not a DRBD device` };
  const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn);
  const minor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
  if (major !== DRBD_MAJOR) return { drbd: false, reason: `${path} is block device ${major}:${minor}, not a DRBD device (major ${DRBD_MAJOR})` };
  return { drbd: true, minor };
}

/** One volume of one resource, as `drbdsetup show` lists it. */
interface ShownVolume {
  readonly resource: string;
  readonly volume: number;
  readonly minor: number;
}

/** Parses `drbdsetup show` (DRBD 8.4 and 9 print the same shape for what is read here). */
function parseShow(text: string): ShownVolume[] {
  const out: ShownVolume[] = [];
  let resource: string | undefined;
  let volume = 0;
  for (const line of text.split('\n')) {
    const r = /^resource\s+"?([^\s"{]+)"?\s*\{/.exec(line);
    if (r) {
      resource = r[1];
      volume = 0;
      continue;
    }
    const v = /^\s*volume\s+(\d+)\s*\{/.exec(line);
    if (v) volume = Number(v[1]);
    const d = /^\s*device\s.*\bminor\s+(\d+)\s*;/.exec(line);
    if (d && resource !== undefined) out.push({ resource, volume, minor: Number(d[1]) });
  }
  return out;
}

/** Runs `drbdsetup show [resource]`; throws UNSUPPORTED_HOST without drbdsetup, DEVICE_NOT_READY for an unknown resource. */
async function drbdsetupShow(drbdsetup: string, resource: string | undefined, signal: AbortSignal): Promise<ShownVolume[]> {
  try {
    const r = await runScript(drbdsetup, resource === undefined ? ['show'] : ['show', resource], { signal, timeoutMs: 10_000 });
    return parseShow(r.stdout);
  } catch (e) {
    if (!(e instanceof RemusError) || e.code !== 'SCRIPT_FAILED') throw e;
    if (e.details['exitCode'] === undefined) {
      throw new RemusError('UNSUPPORTED_HOST', `cannot run ${drbdsetup} (${e.message}): install drbd-utils or pass the drbdsetup option`, { cause: e });
    }
    if (resource !== undefined) {
      throw new RemusError(
        'DEVICE_NOT_READY',
        `DRBD resource ${resource} is unknown to the kernel (${drbdsetup} show ${resource} failed: ${String(e.details['stderrTail'] ?? '').trim()}): bring it up with \`drbdadm up ${resource}\`, or fix the resource name`,
        { cause: e, details: { resource } },
      );
    }
    throw e;
  }
}

/**
 * Finds the minor of `resource` (and its `volume`, needed only when it has
 * several). Spawns `drbdsetup show`: for match and setup only.
 */
export async function resourceMinor(
  drbdsetup: string,
  resource: string,
  volume: number | undefined,
  signal: AbortSignal,
): Promise<number> {
  const volumes = (await drbdsetupShow(drbdsetup, resource, signal)).filter((v) => v.resource === resource);
  const chosen = volume === undefined ? volumes : volumes.filter((v) => v.volume === volume);
  if (chosen.length === 1) return chosen[0]!.minor;
  if (chosen.length === 0) {
    throw new RemusError(
      'DEVICE_NOT_READY',
      volume === undefined
        ? `DRBD resource ${resource} has no volume with a device: attach its disk (\`drbdadm up ${resource}\`)`
        : `DRBD resource ${resource} has no volume ${volume} (it has: ${volumes.map((v) => v.volume).join(', ') || 'none'})`,
      { details: { resource, volume } },
    );
  }
  throw new RemusError(
    'INVALID_ARGUMENT',
    `DRBD resource ${resource} has volumes ${chosen.map((v) => v.volume).join(', ')}: say which with params.volume, or give params.path`,
    { details: { resource } },
  );
}

/** Best effort: the resource owning `minor`, for messages. Undefined when drbdsetup cannot tell. */
export async function resourceOfMinor(drbdsetup: string, minor: number, signal: AbortSignal): Promise<string | undefined> {
  try {
    return (await drbdsetupShow(drbdsetup, undefined, signal)).find((v) => v.minor === minor)?.resource;
  } catch {
    return undefined;
  }
}

/** Why a DRBD device cannot carry a Remus checkpoint, and how to fix it. */
export interface Unusable {
  /** What is wrong, e.g. `is Secondary here`. */
  readonly problem: string;
  /** What the operator should do. */
  readonly fix: string;
  /** The exit code Xen's `block-drbd-probe` used for this (3 protocol, 4 role/connection, 2 other). */
  readonly xenExitCode: 2 | 3 | 4;
}

/**
 * Checks that a minor can carry checkpoints: configured, Primary here,
 * Connected, both disks UpToDate, I/O not suspended, protocol C (or D when
 * `protocolD` is available). Undefined when usable.
 */
export function unusable(state: DrbdMinorState | undefined, resource: string | undefined, protocolD: boolean): Unusable | undefined {
  const res = resource ?? '<resource>';
  if (state === undefined || state.connection === 'Unconfigured') {
    return {
      problem: 'is not configured in the kernel (unknown resource or minor)',
      fix: `bring the resource up and connect it (\`drbdadm up ${res}\`), then make it Primary here`,
      xenExitCode: 2,
    };
  }
  const where = `(cs:${state.connection} ro:${state.role}/${state.peerRole} ds:${state.disk}/${state.peerDisk})`;
  if (state.role !== 'Primary') {
    return {
      problem: `is ${state.role || 'not Primary'} here ${where}; the protected domain's disk must be Primary on this host`,
      fix: `make it Primary here with \`drbdadm primary ${res}\` (and Secondary on the backup)`,
      xenExitCode: 4,
    };
  }
  if (state.connection !== 'Connected') {
    const resync = /^(SyncSource|PausedSyncS|StartingSyncS|WFBitMapS|WFSyncUUID)$/.test(state.connection);
    return resync
      ? {
          problem: `is still resynchronising its peer ${where}, ${state.counters['oos'] ?? '?'} KiB out of sync`,
          fix: `wait for the resync to finish (\`drbdadm wait-sync ${res}\` or watch /proc/drbd) and start again`,
          xenExitCode: 4,
        }
      : {
          problem: `is not Connected to its peer ${where}: writes are not replicated`,
          fix: `connect it (\`drbdadm connect ${res}\` here and on the backup), wait for cs:Connected and ds:UpToDate/UpToDate, and start again`,
          xenExitCode: 4,
        };
  }
  if (state.peerDisk !== 'UpToDate') {
    return {
      problem: `has a peer disk that is ${state.peerDisk}, not UpToDate ${where}`,
      fix: `let the backup's disk catch up (\`drbdadm wait-sync ${res}\`); if it is Outdated or Diskless, attach it there (\`drbdadm attach ${res}\`)`,
      xenExitCode: 4,
    };
  }
  if (state.disk !== 'UpToDate') {
    return {
      problem: `has a local disk that is ${state.disk}, not UpToDate ${where}`,
      fix: `attach and resynchronise the local disk (\`drbdadm attach ${res}\`) before protecting the domain`,
      xenExitCode: 4,
    };
  }
  if (state.ioFlags.startsWith('s')) {
    return {
      problem: `has its I/O suspended ${where}`,
      fix: `find why DRBD suspended I/O (fencing, no data), then \`drbdadm resume-io ${res}\``,
      xenExitCode: 4,
    };
  }
  if (state.protocol === 'D' && !protocolD) {
    return {
      problem: 'uses the Remus checkpoint protocol D, but no checkpointIoctls were given',
      fix: 'pass checkpointIoctls (a native binding for DRBD ioctls 20 and 30) to diskDrbd(), or switch the resource to protocol C',
      xenExitCode: 3,
    };
  }
  if (state.protocol !== 'C' && state.protocol !== 'D') {
    return {
      problem: `uses replication protocol ${state.protocol ?? '(none)'}: a write completes before the peer has it on disk, so no checkpoint barrier can be built on it`,
      fix: `set \`protocol C;\` in the net section of resource ${res} and run \`drbdadm adjust ${res}\` on both hosts`,
      xenExitCode: 3,
    };
  }
  return undefined;
}
