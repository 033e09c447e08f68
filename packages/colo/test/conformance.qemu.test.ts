/**
 * The core's conformance kit for each of the four COLO subkinds, each on its
 * own real QEMU (the primary disk also needs an NBD server: qemu-nbd stands
 * in for the secondary's export). Leftovers are every difference from the
 * QEMU's state before the suite: objects, chardevs, block nodes, quorum
 * edges, exports, net filters and the NBD server.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import type { DeviceSpec } from '@remus/core';
import { describeSubkindConformance } from '@remus/core/testing';
import { coloPrimaryDisk, coloPrimaryNic, coloSecondaryDisk, coloSecondaryNic } from '../src/index.js';
import { diff, freePorts, pairDevices, snapshot, startNbd, startPrimary, startSecondary, stopAll, type Snapshot, type TestQemu } from './env.js';

afterAll(stopAll);

const foreign: readonly DeviceSpec[] = [
  { id: 'vif1.0', kind: 'nic', params: { ifname: 'vif1.0' } },
  { id: 'xvda', kind: 'disk', params: { path: '/dev/drbd0' } },
];

for (const side of ['primary', 'secondary'] as const) {
  describe(`on a ${side}-shaped QEMU`, () => {
    let q: TestQemu;
    let base: Snapshot;
    let devices: ReturnType<typeof pairDevices>;
    beforeAll(async () => {
      q = side === 'primary' ? await startPrimary() : await startSecondary();
      const [mirror, compare, nbd] = await freePorts(3);
      if (side === 'primary') await startNbd(nbd!, 'parent0');
      devices = pairDevices(q.dir, { mirror: mirror!, compare: compare!, nbd: nbd! });
      base = await snapshot(q);
    });

    const factories = side === 'primary' ? [coloPrimaryNic, coloPrimaryDisk] : [coloSecondaryNic, coloSecondaryDisk];
    factories.forEach((factory, i) => {
      describeSubkindConformance({
        title: `subkind conformance: colo-${side}-${i === 0 ? 'nic' : 'disk'}`,
        make: () => factory({ qmp: q.qmp[0] }),
        device: () => devices[side][i]!,
        foreignDevice: () => foreign[i]!,
        leftovers: async () => diff(base, await snapshot(q)),
      });
    });
  });
}
