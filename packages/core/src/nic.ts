/**
 * The params of a `nic` device, read one way for every NIC subkind
 * (nic-netbuf, nic-nfqueue, ...): same names, same defaults, same errors.
 *
 *     { id: 'vif1.0', kind: 'nic', params: { ifname?: 'vif1.0', netns?: 'guest1', buffer?: true } }
 */
import { existsSync } from 'node:fs';
import { RemusError } from './errors.js';
import type { DeviceSpec } from './ops.js';
import { validateInterfaceName, validateName } from './validate.js';

/** The `nic` params every NIC subkind reads; a subkind declares these plus its own in `SubkindOps.params`. */
export const NIC_PARAMS = ['ifname', 'netns', 'buffer'] as const;

/** A `nic` device's params, validated. */
export interface NicParams {
  /** The host-side interface: `params.ifname`, else the device id. A valid interface name (1-15 bytes). */
  readonly ifname: string;
  /** `params.netns`: the network namespace (a name under /run/netns) the interface lives in; undefined = the caller's own. */
  readonly netns: string | undefined;
  /** `params.buffer`; default true. false: no NIC subkind buffers this NIC (each declines it, like `xl remus -n`). */
  readonly buffer: boolean;
}

/**
 * Reads and validates a `nic` device's common params. Pure: touches no host
 * state (whether the namespace or interface exists is asked separately).
 * Throws INVALID_ARGUMENT naming the device and the param.
 */
export function readNicParams(device: DeviceSpec): NicParams {
  const p = device.params ?? {};
  const ifname = validateInterfaceName(
    p['ifname'] ?? device.id,
    p['ifname'] === undefined ? `device ${device.id}: params.ifname (default: the device id)` : `device ${device.id}: params.ifname`,
  );
  const netns = p['netns'] === undefined ? undefined : validateName(p['netns'], `device ${device.id}: params.netns`);
  const buffer = p['buffer'] ?? true;
  if (typeof buffer !== 'boolean') {
    throw new RemusError('INVALID_ARGUMENT', `device ${device.id}: params.buffer must be true or false, not ${JSON.stringify(buffer)}`, {
      device: device.id,
      details: { param: 'buffer' },
    });
  }
  return { ifname, netns, buffer };
}

/**
 * True if the named network namespace exists (`/run/netns/NAME`, as
 * `ip netns add` makes it). Throws INVALID_ARGUMENT for an invalid name.
 */
export function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${validateName(name, 'network namespace')}`);
}

/**
 * Throws INVALID_ARGUMENT when `netns` is given and does not exist: the one
 * error every NIC subkind gives for a missing namespace.
 */
export function requireNetns(device: DeviceSpec, netns: string | undefined): void {
  if (netns === undefined || netnsExists(netns)) return;
  throw new RemusError('INVALID_ARGUMENT', `device ${device.id}: network namespace ${netns} does not exist (see \`ip netns list\`)`, {
    device: device.id,
    details: { netns },
  });
}

/** The one error every NIC subkind gives for a host-side interface that is not there (INVALID_ARGUMENT). */
export function missingInterface(device: DeviceSpec, ifname: string, netns: string | undefined, cause?: unknown): RemusError {
  const where = netns === undefined ? '' : ` (network namespace ${netns})`;
  return new RemusError('INVALID_ARGUMENT', `device ${device.id}: interface ${ifname}${where} not found (it does not exist); check params.ifname`, {
    device: device.id,
    details: { ifname, netns },
    cause,
  });
}
