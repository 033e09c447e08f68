/**
 * Unit tests (no root needed): the nfnetlink_queue wire format, the rule
 * specs and tags, option validation, plugin metadata, and match's answers
 * when the host cannot buffer or the interface is missing.
 */
import { createSubkind, isRemusError, type OpContext } from '@remus/core';
import { describe, expect, it } from 'vitest';
import { ruleSpec, ruleTag } from '../src/host.js';
import { nicNfqueue, plugin } from '../src/index.js';
import {
  configCommand,
  frame,
  idAfter,
  NFQNL_CFG_CMD_BIND,
  NFQNL_MSG_CONFIG,
  NFQNL_MSG_PACKET,
  NFQNL_MSG_VERDICT_BATCH,
  NF_ACCEPT,
  parseMessages,
  verdict,
} from '../src/nfqueue-wire.js';

const ctx = (): OpContext => ({ signal: new AbortController().signal, checkpoint: 0, epoch: 0, operation: 'unit' });

function attr(type: number, payload: Buffer): Buffer {
  const b = Buffer.alloc((4 + payload.length + 3) & ~3);
  b.writeUInt16LE(4 + payload.length, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

describe('nfnetlink_queue wire format', () => {
  it('encodes a batch verdict: nlmsghdr, nfgenmsg with the queue in big-endian, verdict header {verdict, id}', () => {
    const msg = frame(NFQNL_MSG_VERDICT_BATCH, 0x5, 42, verdict(47100, NF_ACCEPT, 0x01020304));
    expect(msg.length).toBe(16 + 4 + 12);
    expect(msg.readUInt32LE(0)).toBe(msg.length);
    expect(msg.readUInt16LE(4)).toBe((3 << 8) | 3);
    expect(msg.readUInt16LE(6)).toBe(0x5);
    expect(msg.readUInt32LE(8)).toBe(42);
    expect(msg.readUInt16BE(16 + 2)).toBe(47100);
    expect(msg.readUInt16LE(20)).toBe(12); // attribute length
    expect(msg.readUInt16LE(22)).toBe(2); // NFQA_VERDICT_HDR
    expect(msg.readUInt32BE(24)).toBe(NF_ACCEPT);
    expect(msg.readUInt32BE(28)).toBe(0x01020304);
  });

  it('encodes a BIND command', () => {
    const msg = frame(NFQNL_MSG_CONFIG, 0x5, 1, configCommand(7, NFQNL_CFG_CMD_BIND));
    expect(msg.readUInt16LE(4)).toBe((3 << 8) | 2);
    expect(msg.readUInt16BE(18)).toBe(7);
    expect(msg.readUInt16LE(22)).toBe(1); // NFQA_CFG_CMD
    expect(msg.readUInt8(24)).toBe(NFQNL_CFG_CMD_BIND);
  });

  it('parses a queued packet (id, queue, original length from CAP_LEN) and an ACK, in one datagram', () => {
    const hdr = Buffer.alloc(7);
    hdr.writeUInt32BE(99, 0);
    hdr.writeUInt16BE(0x0800, 4);
    const cap = Buffer.alloc(4);
    cap.writeUInt32BE(1500, 0);
    const nfgen = Buffer.from([0, 0, 0xb7, 0xfc]); // queue 47100
    const packet = frame(NFQNL_MSG_PACKET, 0, 0, Buffer.concat([nfgen, attr(1, hdr), attr(10, Buffer.from([0x45])), attr(13, cap)]));
    const err = Buffer.alloc(4 + 16);
    err.writeInt32LE(-16, 0); // -EBUSY
    const ack = frame(2, 0, 77, err);
    expect(parseMessages(Buffer.concat([packet, ack]))).toEqual([
      { kind: 'packet', queue: 47100, id: 99, length: 1500 },
      { kind: 'ack', seq: 77, errno: 16 },
    ]);
  });

  it('compares packet ids across the u32 wrap like the kernel', () => {
    expect(idAfter(2, 1)).toBe(true);
    expect(idAfter(1, 2)).toBe(false);
    expect(idAfter(1, 1)).toBe(false);
    expect(idAfter(3, 0xfffffffe)).toBe(true);
    expect(idAfter(0xfffffffe, 3)).toBe(false);
  });
});

describe('rules', () => {
  it('queues routed traffic by input interface and bridged traffic by physdev, never with a bypass', () => {
    const routed = ruleSpec('routed', 'vif1.0', 'remus:op:vif1.0', 47100);
    const bridged = ruleSpec('bridged', 'vif1.0', 'remus:op:vif1.0', 47100);
    expect(routed).toEqual(['-i', 'vif1.0', '-m', 'comment', '--comment', 'remus:op:vif1.0', '-j', 'NFQUEUE', '--queue-num', '47100']);
    expect(bridged.slice(0, 4)).toEqual(['-m', 'physdev', '--physdev-in', 'vif1.0']);
    expect([...routed, ...bridged].some((a) => a.includes('bypass'))).toBe(false);
  });

  it('tags rules with operation and device; a device id with odd characters is hex-encoded', () => {
    expect(ruleTag('r1', 'vif1.0')).toBe('remus:r1:vif1.0');
    expect(ruleTag('r1', 'my nic"')).toBe(`remus:r1:x${Buffer.from('my nic"').toString('hex')}`);
    expect(ruleTag('r1', 'a'.repeat(100)).length).toBeLessThanOrEqual('remus:r1:'.length + 64);
  });
});

describe('nicNfqueue options and plugin', () => {
  it('rejects bad options with INVALID_ARGUMENT', () => {
    for (const bad of [{ maxPackets: 0 }, { maxBytes: -1 }, { queueRange: [10, 5] as const }, { netns: '../x' }, { startTimeoutMs: 3e9 }]) {
      expect(() => nicNfqueue(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });

  it('is provided by the plugin under its name', () => {
    const ops = createSubkind(plugin, 'nic-nfqueue');
    expect(ops.name).toBe('nic-nfqueue');
    expect(ops.kind).toBe('nic');
  });

  it('declines with a reason when the host cannot buffer (iptables missing)', async () => {
    const ops = nicNfqueue({ iptables: '/nonexistent/iptables' });
    const shared = await ops.init!(ctx());
    try {
      const verdictOf = await ops.match!({ device: { id: 'n', kind: 'nic', params: { ifname: 'eth0' } }, shared, data: undefined }, ctx());
      expect(verdictOf).toMatchObject({ match: false, reason: expect.stringContaining('/nonexistent/iptables') });
    } finally {
      await ops.cleanup!(shared, ctx());
    }
  });

  it('declines a NIC with buffer: false, takes ifname from the device id, and throws for invalid params or a missing interface', async () => {
    const ops = nicNfqueue();
    const shared = await ops.init!(ctx());
    try {
      const h = (params: Record<string, unknown>) => ({ device: { id: 'n', kind: 'nic', params }, shared, data: undefined });
      expect(await ops.match!(h({ buffer: false }), ctx())).toMatchObject({ match: false, reason: expect.stringContaining('params.buffer: false') });
      await expect(Promise.resolve().then(() => ops.match!(h({}), ctx()))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('interface n not found') });
      await expect(Promise.resolve().then(() => ops.match!(h({ ifname: 'bad name' }), ctx()))).rejects.toSatisfy((e) => isRemusError(e, 'INVALID_ARGUMENT'));
      await expect(Promise.resolve().then(() => ops.match!(h({ ifname: 'eth0', mode: 'nat' }), ctx()))).rejects.toSatisfy((e) =>
        isRemusError(e, 'INVALID_ARGUMENT'),
      );
      await expect(Promise.resolve().then(() => ops.match!(h({ ifname: 'nq-none0' }), ctx()))).rejects.toThrow(/not found/);
      await expect(Promise.resolve().then(() => ops.match!(h({ ifname: 'eth0', netns: 'nq-no-such-ns' }), ctx()))).rejects.toThrow(
        /does not exist/,
      );
    } finally {
      await ops.cleanup!(shared, ctx());
    }
  });
});
