import { validateName } from '@remus/core';
import { processAlive, startTimeOf } from './procs.js';
import { sh, tryRun } from './run.js';

let counter = 0;
const live = new Set<string>();
let hooked = false;
const START = startTimeOf(process.pid) ?? '0';

/**
 * A name owned by this test process: `<prefix><pid>s<start>x<n>` cut to fit,
 * so {@link sweepStale} can tell a dead owner's leftovers from a live one's.
 * `prefix` is 1-8 characters [a-z0-9-].
 */
export function ownedName(prefix: string): string {
  if (!/^[a-z0-9-]{1,8}$/.test(prefix)) throw new Error(`test-lab prefix ${JSON.stringify(prefix)}: use 1-8 characters a-z 0-9 -`);
  return `${prefix}${process.pid}s${START}x${++counter}`;
}

const OWNED = /^([a-z0-9-]{1,8}?)(\d+)s(\d+)x(\d+)(?:-[a-z]+)?$/;

/** Namespaces on this machine. */
export function netnsList(): string[] {
  return sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n !== '');
}

/** Removes namespaces named by {@link ownedName} with `prefix` whose owner process is gone. Returns what it removed. */
export function sweepStale(prefix: string): string[] {
  const removed: string[] = [];
  for (const ns of netnsList()) {
    const m = OWNED.exec(ns);
    if (!m || m[1] !== prefix) continue;
    if (processAlive(Number(m[2]), m[3])) continue;
    if (tryRun('ip', ['netns', 'del', ns]).status === 0) removed.push(ns);
  }
  return removed;
}

function track(ns: string): void {
  live.add(ns);
  if (!hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const n of live) tryRun('ip', ['netns', 'del', n]);
    });
  }
}

/** Adds namespace `name` with its loopback up, removed at this process's exit if still there. Throws (and removes it) if it cannot. */
export function addNamespace(name: string): void {
  sh('ip', ['netns', 'add', name]);
  track(name);
  try {
    sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (e) {
    removeNamespace(name);
    throw e;
  }
}

/** Removes a namespace {@link addNamespace} made (and every interface in it). Idempotent. */
export function removeNamespace(name: string): void {
  tryRun('ip', ['netns', 'del', name]);
  live.delete(name);
}

/** One namespace owned by this process (loopback up), e.g. for a fence bridge. Stale ones of dead owners with the same prefix are removed first. */
export function createNamespace(prefix: string): { readonly name: string; destroy(): void } {
  sweepStale(prefix);
  const name = validateName(ownedName(prefix), 'test namespace');
  addNamespace(name);
  return { name, destroy: () => removeNamespace(name) };
}

export interface HostPairOptions {
  /** Name prefix (1-8 characters a-z 0-9 -): the package's, e.g. `rnb`. */
  readonly prefix: string;
  /** veth pairs between host and guest (default 1). */
  readonly nics?: number;
  /** Second octet of the addresses, 1-254 (default 77): 10.<net>.<i>.1 host side, .2 guest side; fd<net>:<i>::1|2. */
  readonly net?: number;
  /** Host-side interface name for pair i (default `vh<i>`); guest side `vg<i>`. */
  readonly hostIfname?: (i: number) => string;
}

/** A host namespace (what a plugin works in) and a guest namespace, joined by veth pairs. */
export interface HostPair {
  readonly host: string;
  readonly guest: string;
  /** Host-side interface names. */
  readonly nics: readonly string[];
  /** IPv4 address of the host / guest side of pair i. */
  hostIp(i: number, v6?: boolean): string;
  guestIp(i: number, v6?: boolean): string;
  /** Removes both namespaces (and with them every interface in them). Idempotent. */
  destroy(): void;
}

/** Makes a {@link HostPair}, addressed and up. Removes stale pairs of dead owners with the same prefix first. */
export function createHostPair(options: HostPairOptions): HostPair {
  const { prefix, nics: count = 1, net = 77, hostIfname = (i) => `vh${i}` } = options;
  if (!Number.isInteger(net) || net < 1 || net > 254) throw new Error(`test-lab net ${net}: use 1-254`);
  sweepStale(prefix);
  const base = ownedName(prefix);
  const host = validateName(`${base}-h`, 'test namespace');
  const guest = validateName(`${base}-g`, 'test namespace');
  const destroy = (): void => {
    for (const ns of [host, guest]) removeNamespace(ns);
  };
  const nics: string[] = [];
  try {
    for (const ns of [host, guest]) addNamespace(ns);
    for (let i = 0; i < count; i++) {
      const h = hostIfname(i);
      const g = `vg${i}`;
      sh('ip', ['-n', host, 'link', 'add', h, 'type', 'veth', 'peer', 'name', g, 'netns', guest]);
      sh('ip', ['-n', host, 'addr', 'add', `10.${net}.${i}.1/24`, 'dev', h]);
      sh('ip', ['-n', guest, 'addr', 'add', `10.${net}.${i}.2/24`, 'dev', g]);
      sh('ip', ['-n', host, '-6', 'addr', 'add', `fd${net}:${i}::1/64`, 'dev', h, 'nodad']);
      sh('ip', ['-n', guest, '-6', 'addr', 'add', `fd${net}:${i}::2/64`, 'dev', g, 'nodad']);
      sh('ip', ['-n', host, 'link', 'set', h, 'up']);
      sh('ip', ['-n', guest, 'link', 'set', g, 'up']);
      nics.push(h);
    }
  } catch (e) {
    destroy();
    throw e;
  }
  return {
    host,
    guest,
    nics,
    hostIp: (i, v6 = false) => (v6 ? `fd${net}:${i}::1` : `10.${net}.${i}.1`),
    guestIp: (i, v6 = false) => (v6 ? `fd${net}:${i}::2` : `10.${net}.${i}.2`),
    destroy,
  };
}
