/**
 * The core's conformance kit for each of the four COLO subkinds, each on its
 * own real QEMU (the primary disk also needs an NBD server: qemu-nbd stands
 * in for the secondary's export). Leftovers are every difference from the
 * QEMU's state before the suite: objects, chardevs, block nodes, quorum
 * edges, exports, net filters and the NBD server.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe } from 'vitest';
import type { DeviceSpec } from '@remus/core';
import { describeSubkindConformance } from '@remus/core/testing';
import { coloPrimaryDisk, coloPrimaryNic, coloSecondaryDisk, coloSecondaryNic } from '../src/index.js';
import { diff, freePorts, snapshot, startNbd, startPrimary, startSecondary, stopAll, type Snapshot, type TestQemu } from './env.js';

afterAll(stopAll);

const foreignNic: DeviceSpec = { id: 'vif1.0', kind: 'nic', params: { ifname: 'vif1.0' } };
const foreignDisk: DeviceSpec = { id: 'xvda', kind: 'disk', params: { path: '/dev/drbd0' } };
const at = (port: number) => ({ host: '127.0.0.1', port });

describe('on a primary-shaped QEMU', () => {
  let q: TestQemu;
  let base: Snapshot;
  let ports: number[];
  beforeAll(async () => {
    q = await startPrimary();
    ports = await freePorts(3);
    await startNbd(ports[2]!, 'parent0');
    base = await snapshot(q);
  });

  describeSubkindConformance({
    title: 'subkind conformance: colo-primary-nic',
    make: () => coloPrimaryNic({ qmp: q.qmp[0] }),
    device: () => ({
      id: 'nic0',
      kind: 'nic',
      params: { netdev: 'hn0', mirror: at(ports[0]!), compare: at(ports[1]!), primaryIn: { path: join(q.dir, 'pri.sock') }, compareOut: { path: join(q.dir, 'out.sock') } },
    }),
    foreignDevice: () => foreignNic,
    leftovers: async () => diff(base, await snapshot(q)),
  });

  describeSubkindConformance({
    title: 'subkind conformance: colo-primary-disk',
    make: () => coloPrimaryDisk({ qmp: q.qmp[0] }),
    device: () => ({ id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: at(ports[2]!), export: 'parent0' } }),
    foreignDevice: () => foreignDisk,
    leftovers: async () => diff(base, await snapshot(q)),
  });
});

describe('on a secondary-shaped QEMU', () => {
  let q: TestQemu;
  let base: Snapshot;
  let ports: number[];
  beforeAll(async () => {
    q = await startSecondary();
    ports = await freePorts(3);
    base = await snapshot(q);
  });

  describeSubkindConformance({
    title: 'subkind conformance: colo-secondary-nic',
    make: () => coloSecondaryNic({ qmp: q.qmp[0] }),
    device: () => ({ id: 'nic0', kind: 'nic', params: { netdev: 'hn0', mirror: at(ports[0]!), compare: at(ports[1]!) } }),
    foreignDevice: () => foreignNic,
    leftovers: async () => diff(base, await snapshot(q)),
  });

  describeSubkindConformance({
    title: 'subkind conformance: colo-secondary-disk',
    make: () => coloSecondaryDisk({ qmp: q.qmp[0] }),
    device: () => ({ id: 'disk0', kind: 'disk', params: { node: 'parent0', nbd: at(ports[2]!), export: 'parent0', quorum: 'colo-disk0' } }),
    foreignDevice: () => foreignDisk,
    leftovers: async () => diff(base, await snapshot(q)),
  });
});
