/**
 * The two NIC plugins read the same `nic` params the same way and fail the
 * same way (#12.3). Needs root (nic-nfqueue's init starts its buffer process);
 * touches no interface: every device here names one that does not exist, so a
 * subkind that tried to buffer it would fail with another error.
 */
import { checkDevices, createCheckpointDevices, type DeviceSpec, type OpContext, type SubkindOps } from '@remus/core';
import { nicNetbuf } from '@remus/nic-netbuf';
import { describe, expect, it } from 'vitest';
import { nicNfqueue } from '../src/index.js';

const ctx = (): OpContext => ({ signal: new AbortController().signal, checkpoint: 0, epoch: 0, operation: 'unit' });
const LOCK = `remus-nic-netbuf-params-${process.pid}`;
const GONE_IF = 'rmnic-noif0';
const GONE_NS = `rmnic-nons-${process.pid}`;

describe('nic params shared by nic-netbuf and nic-nfqueue', () => {
  it('with [nicNetbuf(), nicNfqueue()], buffer: false makes both decline (DEVICE_NOT_SUPPORTED naming both reasons)', async () => {
    const layer = createCheckpointDevices({
      ops: [nicNetbuf({ lockName: LOCK }), nicNfqueue()],
      devices: [{ id: 'vif1.0', kind: 'nic', params: { ifname: GONE_IF, buffer: false } }],
    });
    const err = await layer.setup().then(
      () => undefined,
      (e: unknown) => e,
    );
    await layer.teardown().catch(() => undefined);
    const failure = (err as { failures?: { code: string; details?: { declined?: { subkind: string; reason: string }[] } }[] }).failures?.[0] ?? err;
    expect(failure).toMatchObject({ code: 'DEVICE_NOT_SUPPORTED' });
    const declined = (failure as { details: { declined: { subkind: string; reason: string }[] } }).details.declined;
    expect(declined.map((d) => d.subkind)).toEqual(['nic-netbuf', 'nic-nfqueue']);
    for (const d of declined) expect(d.reason).toContain('params.buffer: false');
  });

  it('a missing namespace is the same error (INVALID_ARGUMENT) in both', async () => {
    const device: DeviceSpec = { id: 'vif1.0', kind: 'nic', params: { ifname: GONE_IF, netns: GONE_NS } };
    const codes: string[] = [];
    const list: SubkindOps[] = [nicNetbuf({ lockName: LOCK }), nicNfqueue()];
    for (const ops of list) {
      const shared = await ops.init?.(ctx());
      try {
        const e = await Promise.resolve()
          .then(() => ops.match!({ device, shared, data: undefined }, ctx()))
          .then(
            () => undefined,
            (x: unknown) => x,
          );
        expect(e).toMatchObject({ message: expect.stringContaining(`network namespace ${GONE_NS} does not exist`) });
        codes.push((e as { code: string }).code);
      } finally {
        await ops.cleanup?.(shared, ctx());
      }
    }
    expect(codes).toEqual(['INVALID_ARGUMENT', 'INVALID_ARGUMENT']);
  });

  it('a missing interface is the same error (INVALID_ARGUMENT) in both; ifname defaults to the device id in both', async () => {
    const device: DeviceSpec = { id: GONE_IF, kind: 'nic' };
    const netbuf: SubkindOps = nicNetbuf({ lockName: LOCK });
    const nfqueue: SubkindOps = nicNfqueue();
    const shared = await nfqueue.init!(ctx());
    try {
      for (const [ops, s] of [
        [netbuf, undefined],
        [nfqueue, shared],
      ] as const) {
        await expect(Promise.resolve().then(() => ops.match!({ device, shared: s, data: undefined }, ctx()))).rejects.toMatchObject({
          code: 'INVALID_ARGUMENT',
          message: expect.stringContaining(`interface ${GONE_IF}`),
        });
      }
    } finally {
      await nfqueue.cleanup!(shared, ctx());
    }
  });

  it('both declare their params and check them before the host is touched', () => {
    const ops = [nicNetbuf({ lockName: LOCK }), nicNfqueue()];
    expect(ops[0]!.params).toEqual(['ifname', 'netns', 'buffer']);
    expect(ops[1]!.params).toEqual(['ifname', 'netns', 'buffer', 'mode']);
    expect(checkDevices(ops, [{ id: 'vif1.0', kind: 'nic', params: { ifname: 'veth0', netns: 'g1', buffer: true, mode: 'routed' } }])).toEqual([]);
    const problems = (params: Record<string, unknown>, id = 'vif1.0') =>
      checkDevices(ops, [{ id, kind: 'nic', params }]).map((e) => ({ code: e.code, subkind: e.subkind, message: e.message }));
    expect(problems({ ifnmae: 'veth0' })).toEqual([expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('"ifname"') })]);
    // Both read `buffer`: both say so.
    expect(problems({ buffer: 'no' })).toEqual([
      expect.objectContaining({ code: 'INVALID_ARGUMENT', subkind: 'nic-netbuf', message: expect.stringContaining('params.buffer') }),
      expect.objectContaining({ code: 'INVALID_ARGUMENT', subkind: 'nic-nfqueue', message: expect.stringContaining('params.buffer') }),
    ]);
    expect(problems({ mode: 'nat' })).toEqual([expect.objectContaining({ code: 'INVALID_ARGUMENT', subkind: 'nic-nfqueue', message: expect.stringContaining('params.mode') })]);
    expect(problems({}, 'an-id-too-long-for-ifname')).toHaveLength(2);
  });
});

describe('plugin options', () => {
  it('a misspelt option of either NIC plugin is refused naming the closest known one', () => {
    expect(() => nicNfqueue({ maxPacket: 10 } as never)).toThrow(/nic-nfqueue: unknown option "maxPacket" \(did you mean "maxPackets"\?\)/);
    expect(() => nicNetbuf({ tcpath: 'tc' } as never)).toThrow(/nic-netbuf: unknown option "tcpath" \(did you mean "tcPath"\?\)/);
  });
});
