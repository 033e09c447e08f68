/**
 * The lab network: one namespace (`<prefix>-h`) holds both QEMUs (their
 * migration, NBD and proxy sockets on its own loopback), a bridge, the
 * primary's and the secondary's taps, and a veth to a client namespace
 * (`<prefix>-c`). Only the tap of the side that serves clients is on the
 * bridge: the secondary's tap joins it at failover, after the primary's left.
 *
 * Two hosts ({@link createClientLan}): each host is its own namespace (an
 * etcd-lab node: replication traffic between the hosts' addresses, cut by
 * the etcd lab's switch) with its own bridge and tap, and the client
 * namespace joins both hosts' bridges.
 */
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive, runScript, validateInterfaceName, validateName } from '@remus/core';
import { CLIENT_IP } from './guest.js';

/** Interface names inside the host namespace (fixed: the namespace is ours alone). */
export const BRIDGE = 'colobr0';
export const PRIMARY_TAP = 'colotap-p';
export const SECONDARY_TAP = 'colotap-s';
const VETH_HOST = 'coloveth-h';
const VETH_CLIENT = 'coloveth-c';

/** The two namespaces of one lab. */
export interface LabNetwork {
  /** Namespace of both QEMUs and the bridge. */
  readonly hostNs: string;
  /** Namespace of the clients. */
  readonly clientNs: string;
}

async function ip(args: readonly string[], signal?: AbortSignal): Promise<void> {
  await runScript('ip', args, { timeoutMs: 10_000, signal });
}

/**
 * Creates both namespaces and the topology; on failure removes what it made
 * and rethrows. `prefix` must be a valid name (unique per run: e.g. with the pid).
 */
export async function createLabNetwork(prefix: string, signal?: AbortSignal): Promise<LabNetwork> {
  validateName(prefix, 'lab network prefix');
  for (const n of [BRIDGE, PRIMARY_TAP, SECONDARY_TAP, VETH_HOST, VETH_CLIENT]) validateInterfaceName(n);
  const net: LabNetwork = { hostNs: `${prefix}-h`, clientNs: `${prefix}-c` };
  const h = ['-n', net.hostNs];
  try {
    await ip(['netns', 'add', net.hostNs], signal);
    await ip(['netns', 'add', net.clientNs], signal);
    await ip([...h, 'link', 'set', 'lo', 'up'], signal);
    await ip(['-n', net.clientNs, 'link', 'set', 'lo', 'up'], signal);
    await ip([...h, 'link', 'add', BRIDGE, 'type', 'bridge'], signal);
    await ip([...h, 'link', 'set', BRIDGE, 'up'], signal);
    for (const tap of [PRIMARY_TAP, SECONDARY_TAP]) {
      await ip([...h, 'tuntap', 'add', 'dev', tap, 'mode', 'tap'], signal);
      await ip([...h, 'link', 'set', tap, 'up'], signal);
    }
    await ip([...h, 'link', 'set', PRIMARY_TAP, 'master', BRIDGE], signal);
    await ip([...h, 'link', 'add', VETH_HOST, 'type', 'veth', 'peer', 'name', VETH_CLIENT, 'netns', net.clientNs], signal);
    await ip([...h, 'link', 'set', VETH_HOST, 'master', BRIDGE], signal);
    await ip([...h, 'link', 'set', VETH_HOST, 'up'], signal);
    await ip(['-n', net.clientNs, 'addr', 'add', `${CLIENT_IP}/24`, 'dev', VETH_CLIENT], signal);
    await ip(['-n', net.clientNs, 'link', 'set', VETH_CLIENT, 'up'], signal);
  } catch (e) {
    await removeLabNetwork(net);
    throw e;
  }
  return net;
}

/** Puts `tap` on the bridge (the side that now serves clients). */
export async function attachTap(net: LabNetwork, tap: string, signal?: AbortSignal): Promise<void> {
  await ip(['-n', net.hostNs, 'link', 'set', validateInterfaceName(tap), 'master', BRIDGE], signal);
}

/** Takes `tap` off the bridge (fencing a side that must not reach clients). */
export async function detachTap(net: LabNetwork, tap: string, signal?: AbortSignal): Promise<void> {
  await ip(['-n', net.hostNs, 'link', 'set', validateInterfaceName(tap), 'nomaster'], signal);
}

/** Names of the interfaces on the bridge. */
export async function bridgePorts(net: LabNetwork): Promise<string[]> {
  const r = await runScript('ip', ['-n', net.hostNs, '-o', 'link', 'show', 'master', BRIDGE], { timeoutMs: 10_000 });
  return [...r.stdout.matchAll(/^\d+:\s+([^:@\s]+)/gm)].map((m) => m[1]!);
}

/**
 * Removes both namespaces (and with them the bridge, taps and veth).
 * Best effort and idempotent; QEMUs using the taps must be gone first.
 */
export async function removeLabNetwork(net: LabNetwork): Promise<void> {
  for (const ns of [net.clientNs, net.hostNs]) {
    await runScript('ip', ['netns', 'del', ns], { timeoutMs: 10_000 }).catch(() => {});
  }
}

/**
 * Removes labs left behind by runs that died without closing them (e.g. a
 * SIGKILLed test process): namespaces named `colo-<pid>-...`,
 * `colo-t<pid>-...` or `colo-b<pid>-...` whose pid is no longer a running
 * process (a zombie, SIGKILLed and not yet reaped by its parent, counts as
 * gone). Kills the processes inside (the QEMUs), deletes the namespaces
 * and the labs' temp folders. Labs of live processes are left alone.
 * Returns what it removed.
 */
export async function reapStaleLabs(): Promise<string[]> {
  const removed: string[] = [];
  const byPid = new Map<string, string[]>();
  for (const ns of await listLabNamespaces('colo-')) {
    const m = /^colo-[tb]?(\d+)-/.exec(ns);
    if (!m) continue;
    byPid.set(m[1]!, [...(byPid.get(m[1]!) ?? []), ns]);
  }
  for (const [pid, names] of byPid) {
    if (processAlive(Number(pid))) continue;
    for (const ns of names) {
      const r = await runScript('ip', ['netns', 'pids', ns], { timeoutMs: 10_000 }).catch(() => undefined);
      for (const p of (r?.stdout ?? '').split('\n').map(Number).filter((n) => n > 0)) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await runScript('ip', ['netns', 'del', ns], { timeoutMs: 10_000 }).catch(() => {});
      removed.push(ns);
    }
  }
  // Their folders (images, sockets, logs) in the temp dir, named after the same prefixes.
  for (const entry of await readdir(tmpdir()).catch(() => [] as string[])) {
    const m = /^colo-[tb]?(\d+)-/.exec(entry);
    if (m && !processAlive(Number(m[1]))) {
      await rm(join(tmpdir(), entry), { recursive: true, force: true });
      removed.push(join(tmpdir(), entry));
    }
  }
  return removed;
}


/** Namespaces whose names start with `prefix`. */
export async function listLabNamespaces(prefix: string): Promise<string[]> {
  const r = await runScript('ip', ['netns', 'list'], { timeoutMs: 10_000 });
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}

/** Interface names of the two-host layout (inside each host's namespace, and the client's). */
export const HOST_TAP = 'colotap';
const CLIENT_LAN = 'colo-lan';

/**
 * The clients' network of a pair split across two hosts: the client
 * namespace `clientNs` (made here, {@link CLIENT_IP} on its bridge) joined
 * by a veth to a bridge `colobr0` inside each host's namespace (made by the
 * caller, e.g. an etcd-lab node), where the host's QEMU tap
 * ({@link HOST_TAP}, made here, down from the bridge) is attached while that
 * host serves (`attachTap({ hostNs, clientNs }, HOST_TAP)`). The hosts'
 * replication traffic does not cross this network. Removed with
 * `ip netns del` of the client namespace and with the hosts' namespaces.
 * On failure removes the client namespace and rethrows.
 */
export async function createClientLan(clientNs: string, hostNamespaces: readonly string[], signal?: AbortSignal): Promise<LabNetwork[]> {
  validateName(clientNs, 'client namespace');
  const c = ['-n', clientNs];
  try {
    await ip(['netns', 'add', clientNs], signal);
    await ip([...c, 'link', 'set', 'lo', 'up'], signal);
    await ip([...c, 'link', 'add', BRIDGE, 'type', 'bridge'], signal);
    await ip([...c, 'addr', 'add', `${CLIENT_IP}/24`, 'dev', BRIDGE], signal);
    await ip([...c, 'link', 'set', BRIDGE, 'up'], signal);
    for (const [i, hostNs] of hostNamespaces.entries()) {
      const h = ['-n', hostNs];
      const port = validateInterfaceName(`${CLIENT_LAN}${i}`);
      await ip([...h, 'link', 'add', BRIDGE, 'type', 'bridge'], signal);
      await ip([...h, 'link', 'set', BRIDGE, 'up'], signal);
      await ip([...h, 'tuntap', 'add', 'dev', HOST_TAP, 'mode', 'tap'], signal);
      await ip([...h, 'link', 'set', HOST_TAP, 'up'], signal);
      await ip([...h, 'link', 'add', CLIENT_LAN, 'type', 'veth', 'peer', 'name', port, 'netns', clientNs], signal);
      await ip([...h, 'link', 'set', CLIENT_LAN, 'master', BRIDGE], signal);
      await ip([...h, 'link', 'set', CLIENT_LAN, 'up'], signal);
      await ip([...c, 'link', 'set', port, 'master', BRIDGE], signal);
      await ip([...c, 'link', 'set', port, 'up'], signal);
    }
  } catch (e) {
    await runScript('ip', ['netns', 'del', clientNs], { timeoutMs: 10_000 }).catch(() => {});
    throw e;
  }
  return hostNamespaces.map((hostNs) => ({ hostNs, clientNs }));
}

/** Throws UNSUPPORTED_HOST unless this process is root. */
