/**
 * The lab network: one namespace (`<prefix>-h`) holds both QEMUs (their
 * migration, NBD and proxy sockets on its own loopback), a bridge, the
 * primary's and the secondary's taps, and a veth to a client namespace
 * (`<prefix>-c`). Only the tap of the side that serves clients is on the
 * bridge: the secondary's tap joins it at failover, after the primary's left.
 */
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runScript, validateInterfaceName, validateName } from '@remus/core';
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
 * process. Kills the processes inside (the QEMUs), deletes the namespaces
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
    if (pidAlive(Number(pid))) continue;
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
    if (m && !pidAlive(Number(m[1]))) {
      await rm(join(tmpdir(), entry), { recursive: true, force: true });
      removed.push(join(tmpdir(), entry));
    }
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Namespaces whose names start with `prefix`. */
export async function listLabNamespaces(prefix: string): Promise<string[]> {
  const r = await runScript('ip', ['netns', 'list'], { timeoutMs: 10_000 });
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}

/** Throws UNSUPPORTED_HOST unless this process is root. */
