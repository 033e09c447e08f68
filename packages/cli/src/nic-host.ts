/**
 * Read-only host checks of `nic` devices for the config pass of `remus
 * plan/run/doctor --config`: the network namespace a device names exists and
 * its interface is in it. They run before the journal is written, so a typo
 * in `params.ifname` or `params.netns` is a configuration error (exit 2,
 * listed with every other problem), not a failed match after the host was
 * touched (issue 14 item 8).
 *
 * Which devices: those of a kind that some subkind in the ops list reads with
 * core's common `nic` reader, i.e. a subkind declaring every name of core's
 * NIC_PARAMS (nic-netbuf, nic-nfqueue). For them `params.ifname` (default:
 * the device id) is an interface in `params.netns` (default: remus's own
 * namespace), by core's contract. Other subkinds of kind `nic` (COLO's, whose
 * params name QEMU objects, or a test's fake) are not judged here: their own
 * match does. A device with `params.buffer: false` is skipped (every NIC
 * subkind declines it). A device without `params.netns` may also live in the
 * namespace a subkind's `netns` option names (nic-nfqueue's default).
 *
 * Changes nothing: namespaces are looked up under /run/netns, interfaces
 * listed with `ip [-n NS] -j link show` (argument vector, 30 s limit, one
 * listing per namespace).
 */
import { NIC_PARAMS, describeCause, netnsExists, readNicParams, type DeviceSpec, type SubkindOps } from '@remus/core';
import type { ConfigProblem } from './config.js';
import { ip } from './netns.js';

/** A subkind whose device params are core's common `nic` params (plus its own). */
function readsNicParams(ops: SubkindOps): boolean {
  return NIC_PARAMS.every((p) => ops.params?.includes(p) === true);
}

/** Where a namespace is, for messages; undefined = remus's own. */
function where(netns: string | undefined): string {
  return netns === undefined ? "remus's own network namespace" : `network namespace ${netns}`;
}

/** The interface names of a namespace (undefined = our own), or the error listing them gave. */
async function listInterfaces(netns: string | undefined, signal: AbortSignal | undefined): Promise<Set<string> | Error> {
  try {
    const links = JSON.parse(await ip([...(netns === undefined ? [] : ['-n', netns]), '-j', 'link', 'show'], signal)) as unknown;
    if (!Array.isArray(links)) return new Error('`ip -j link show` did not print a list');
    return new Set(links.map((l) => (l as { ifname?: unknown } | null)?.ifname).filter((n): n is string => typeof n === 'string'));
  } catch (e) {
    return e instanceof Error ? e : new Error(describeCause(e) ?? 'unknown failure');
  }
}

/**
 * Checks every `nic` device of `devices` (by index; `skip` = indexes that
 * already have a params problem) against the host. `subkinds` pairs each
 * subkind with the options it was made with. Returns one problem per device
 * whose namespace or interface is missing; never throws.
 */
export async function checkNicHost(
  subkinds: readonly { readonly ops: SubkindOps; readonly options: unknown }[],
  devices: readonly DeviceSpec[],
  skip: ReadonlySet<number>,
  signal?: AbortSignal,
): Promise<ConfigProblem[]> {
  const readers = subkinds.filter((s) => readsNicParams(s.ops));
  const kinds = new Set(readers.map((s) => s.ops.kind));
  // A subkind's `netns` option: where its devices without params.netns live.
  const defaults = (kind: string): string[] => [
    ...new Set(
      readers
        .filter((s) => s.ops.kind === kind)
        .map((s) => (s.options as { netns?: unknown } | undefined)?.netns)
        .filter((n): n is string => typeof n === 'string' && netnsExistsSafe(n)),
    ),
  ];
  const lists = new Map<string, Promise<Set<string> | Error>>();
  const interfacesOf = (netns: string | undefined): Promise<Set<string> | Error> => {
    const key = netns ?? '';
    let p = lists.get(key);
    if (!p) lists.set(key, (p = listInterfaces(netns, signal)));
    return p;
  };

  const problems: ConfigProblem[] = [];
  for (const [i, device] of devices.entries()) {
    if (skip.has(i) || !kinds.has(device.kind)) continue;
    let params;
    try {
      params = readNicParams(device);
    } catch {
      continue; // Reported by the subkind's checkParams.
    }
    if (!params.buffer) continue;
    const { ifname, netns } = params;
    if (netns !== undefined && !netnsExistsSafe(netns)) {
      problems.push({
        path: `devices[${i}].params.netns`,
        message: `device ${device.id}: network namespace ${netns} does not exist`,
        fix: 'create it, or correct params.netns (see `ip netns list`)',
      });
      continue;
    }
    const spaces = netns !== undefined ? [netns] : [undefined, ...defaults(device.kind)];
    const found: (Set<string> | Error)[] = await Promise.all(spaces.map(interfacesOf));
    if (found.some((f) => f instanceof Set && f.has(ifname))) continue;
    const failed = found.findIndex((f) => f instanceof Error);
    if (failed >= 0) {
      problems.push({
        path: `devices[${i}]`,
        message: `device ${device.id}: cannot check that interface ${ifname} exists: listing the interfaces of ${where(spaces[failed])} failed: ${(found[failed] as Error).message}`,
        fix: 'make sure iproute2 (`ip`) is installed and works',
      });
      continue;
    }
    problems.push({
      path: `devices[${i}].params.ifname`,
      message: `device ${device.id}: interface ${ifname} does not exist in ${spaces.map(where).join(' or ')}${device.params?.['ifname'] === undefined ? ' (params.ifname defaults to the device id)' : ''}`,
      fix: `create it, or correct params.ifname${netns === undefined ? ' or set params.netns' : ' or params.netns'} (see \`ip${netns === undefined ? '' : ` -n ${netns}`} link\`)`,
    });
  }
  return problems;
}

/** {@link netnsExists} for a name already validated elsewhere; false for an invalid one. */
function netnsExistsSafe(name: string): boolean {
  try {
    return netnsExists(name);
  } catch {
    return false;
  }
}
