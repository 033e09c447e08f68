import { validateInterfaceName, validateName } from '@remus/core';
import { addNamespace, ownedName, removeNamespace, sweepStale } from './netns.js';
import { sh } from './run.js';

export type TrioTopology = 'routed' | 'bridged';

export interface TrioOptions {
  /** Namespace name prefix (1-8 characters a-z 0-9 -): the package's, e.g. `rnfq`. */
  readonly prefix: string;
  /** Interface name prefix, 1-4 characters a-z 0-9: interface names are `<ifPrefix><pid><n><role>`, unique on the machine. */
  readonly ifPrefix: string;
  /** `routed` (default): the host routes between the guest's and the client's subnets. `bridged`: guest and client on one bridge in the host. */
  readonly topology?: TrioTopology;
  /** IPv6 in the guest (default true). Off, the guest sends nothing of its own (no MLD reports): exact packet counts hold. */
  readonly ipv6?: boolean;
  /** Second octet of the addresses, 1-254 (default 77). */
  readonly net?: number;
}

/**
 * Three namespaces: a guest (whose NIC a plugin protects), the host (where
 * the plugin works: the guest's host-side interface `vif`) and a client.
 *
 * - routed: guest 10.N.1.2 -> host (10.N.1.1 on `vif` | 10.N.2.1 on
 *   `hostToClient`, forwarding on) -> client 10.N.2.2; IPv6 fdN:1::/64 and
 *   fdN:2::/64 the same way; default routes in guest and client.
 * - bridged: guest 10.N.1.2 and client 10.N.1.3 on one bridge in the host
 *   (10.N.1.1, fdN:1::/64); `vif` and `hostToClient` are its ports.
 *
 * Addresses are fixed without duplicate detection and router solicitations
 * are off, so everything works at once and the guest sends only what a test
 * sends. The neighbour entry the guest needs for IPv6 is static, so a
 * buffered neighbour discovery never stands between a send and the wire.
 */
export interface Trio {
  readonly topology: TrioTopology;
  readonly guest: string;
  readonly host: string;
  readonly client: string;
  /** Host-side interface of the guest's NIC. */
  readonly vif: string;
  /** The guest's own interface. */
  readonly guestIf: string;
  /** Host-side interface toward the client (routed) or the bridge's second port (bridged). */
  readonly hostToClient: string;
  /** The client's interface. */
  readonly clientIf: string;
  readonly bridge: string | undefined;
  readonly guestV4: string;
  readonly guestV6: string;
  /** The host's address on the guest's side (routed) or the bridge's (bridged). */
  readonly hostV4: string;
  readonly clientV4: string;
  readonly clientV6: string;
  /** Removes the three namespaces (and every interface in them). Idempotent. */
  destroy(): void;
}

let ifCounter = 0;

function macOf(ns: string, ifname: string): string {
  const j = JSON.parse(sh('ip', ['-n', ns, '-j', 'link', 'show', 'dev', ifname])) as { address: string }[];
  return j[0]!.address;
}

/** Makes a {@link Trio}, addressed and up. Removes stale namespaces of dead owners with the same prefix first. */
export function createTrio(options: TrioOptions): Trio {
  const { prefix, ifPrefix, topology = 'routed', ipv6 = true, net = 77 } = options;
  if (!/^[a-z0-9]{1,4}$/.test(ifPrefix)) throw new Error(`test-lab ifPrefix ${JSON.stringify(ifPrefix)}: use 1-4 characters a-z 0-9`);
  if (!Number.isInteger(net) || net < 1 || net > 254) throw new Error(`test-lab net ${net}: use 1-254`);
  sweepStale(prefix);
  const base = ownedName(prefix);
  const [guest, host, client] = ['g', 'h', 'c'].map((r) => validateName(`${base}-${r}`, 'test namespace')) as [string, string, string];
  const tag = `${ifPrefix}${process.pid % 100000}${(++ifCounter).toString(36)}`;
  const [vif, guestIf, hostToClient, clientIf] = ['v', 'g', 'h', 'c'].map((r) => validateInterfaceName(`${tag}${r}`)) as [string, string, string, string];
  const bridge = topology === 'bridged' ? validateInterfaceName(`${tag}b`) : undefined;
  const routed = topology === 'routed';
  const made: string[] = [];
  const destroy = (): void => {
    for (const ns of made.splice(0).reverse()) removeNamespace(ns);
  };
  const nsx = (ns: string, file: string, args: readonly string[]): string => sh('ip', ['netns', 'exec', ns, file, ...args]);
  const addr = (ns: string, ifname: string, a: string): void => {
    sh('ip', ['-n', ns, 'addr', 'add', a, 'dev', ifname, ...(a.includes(':') ? ['nodad'] : [])]);
  };
  const up = (ns: string, ifname: string): void => void sh('ip', ['-n', ns, 'link', 'set', ifname, 'up']);
  const v4 = (subnet: number, i: number): string => `10.${net}.${subnet}.${i}`;
  const v6 = (subnet: number, i: number): string => `fd${net}:${subnet}::${i}`;
  try {
    for (const ns of [guest, host, client]) {
      addNamespace(ns);
      made.push(ns);
      nsx(ns, 'sysctl', [
        '-qw',
        'net.ipv6.conf.all.accept_dad=0',
        'net.ipv6.conf.default.accept_dad=0',
        'net.ipv6.conf.all.router_solicitations=0',
        'net.ipv6.conf.default.router_solicitations=0',
      ]);
      if (!ipv6 && ns === guest) nsx(ns, 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    }
    sh('ip', ['link', 'add', guestIf, 'netns', guest, 'type', 'veth', 'peer', 'name', vif, 'netns', host]);
    sh('ip', ['link', 'add', hostToClient, 'netns', host, 'type', 'veth', 'peer', 'name', clientIf, 'netns', client]);
    addr(guest, guestIf, `${v4(1, 2)}/24`);
    if (ipv6) addr(guest, guestIf, `${v6(1, 2)}/64`);
    up(guest, guestIf);
    if (routed) {
      addr(host, vif, `${v4(1, 1)}/24`);
      addr(host, vif, `${v6(1, 1)}/64`);
      addr(host, hostToClient, `${v4(2, 1)}/24`);
      addr(host, hostToClient, `${v6(2, 1)}/64`);
      up(host, vif);
      up(host, hostToClient);
      nsx(host, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
      addr(client, clientIf, `${v4(2, 2)}/24`);
      addr(client, clientIf, `${v6(2, 2)}/64`);
      up(client, clientIf);
      sh('ip', ['-n', guest, 'route', 'add', 'default', 'via', v4(1, 1)]);
      if (ipv6) sh('ip', ['-n', guest, '-6', 'route', 'add', 'default', 'via', v6(1, 1)]);
      sh('ip', ['-n', client, 'route', 'add', 'default', 'via', v4(2, 1)]);
      sh('ip', ['-n', client, '-6', 'route', 'add', 'default', 'via', v6(2, 1)]);
      if (ipv6) sh('ip', ['-n', guest, '-6', 'neigh', 'replace', v6(1, 1), 'lladdr', macOf(host, vif), 'dev', guestIf, 'nud', 'permanent']);
    } else {
      sh('ip', ['-n', host, 'link', 'add', bridge!, 'type', 'bridge']);
      sh('ip', ['-n', host, 'link', 'set', vif, 'master', bridge!]);
      sh('ip', ['-n', host, 'link', 'set', hostToClient, 'master', bridge!]);
      addr(host, bridge!, `${v4(1, 1)}/24`);
      up(host, bridge!);
      up(host, vif);
      up(host, hostToClient);
      addr(client, clientIf, `${v4(1, 3)}/24`);
      addr(client, clientIf, `${v6(1, 3)}/64`);
      up(client, clientIf);
      if (ipv6) sh('ip', ['-n', guest, '-6', 'neigh', 'replace', v6(1, 3), 'lladdr', macOf(client, clientIf), 'dev', guestIf, 'nud', 'permanent']);
    }
  } catch (e) {
    destroy();
    throw e;
  }
  return {
    topology,
    guest,
    host,
    client,
    vif,
    guestIf,
    hostToClient,
    clientIf,
    bridge,
    guestV4: v4(1, 2),
    guestV6: v6(1, 2),
    hostV4: v4(1, 1),
    clientV4: routed ? v4(2, 2) : v4(1, 3),
    clientV6: routed ? v6(2, 2) : v6(1, 3),
    destroy,
  };
}
