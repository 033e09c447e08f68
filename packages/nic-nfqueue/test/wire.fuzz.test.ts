/**
 * Property-based fuzzing (fast-check) of the nfnetlink_queue wire parser:
 * the buffer process feeds it every datagram its socket reads. Fixed seed and
 * bounded runs in CI; REMUS_FUZZ_RUNS=<n> for a longer run (see README).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { frame, NFQNL_MSG_PACKET, NLMSG_ERROR, parseMessages, type Incoming } from '../src/nfqueue-wire.js';

const SEED = 0x12c0ffee;
const RUNS = Number(process.env['REMUS_FUZZ_RUNS'] ?? 2000);
const params = { seed: SEED, numRuns: RUNS };
/** vitest's limit per property: generous for long runs (`pnpm fuzz`). */
const TIMEOUT_MS = Math.max(60_000, RUNS * 10);

const NFQA_PACKET_HDR = 1;
const NFQA_PAYLOAD = 10;
const NFQA_CAP_LEN = 13;

function attr(type: number, payload: Buffer): Buffer {
  const b = Buffer.alloc((4 + payload.length + 3) & ~3);
  b.writeUInt16LE(4 + payload.length, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** A message the kernel could send, and what the parser must make of it. */
type Msg = { bytes: Buffer; parsed: Incoming };

const packet = fc
  .record({
    queue: fc.integer({ min: 0, max: 0xffff }),
    id: fc.nat({ max: 0xffff_ffff }),
    seq: fc.nat({ max: 0xffff_ffff }),
    payload: fc.uint8Array({ maxLength: 64 }),
    capLen: fc.option(fc.nat({ max: 0xffff_ffff }), { nil: undefined }),
  })
  .map(({ queue, id, seq, payload, capLen }): Msg => {
    const nfgen = Buffer.alloc(4);
    nfgen.writeUInt16BE(queue, 2);
    const hdr = Buffer.alloc(7); // struct nfqnl_msg_packet_hdr { be32 id; be16 proto; u8 hook }
    hdr.writeUInt32BE(id, 0);
    const parts = [nfgen, attr(NFQA_PACKET_HDR, hdr), attr(NFQA_PAYLOAD, Buffer.from(payload))];
    if (capLen !== undefined) parts.push(attr(NFQA_CAP_LEN, u32(capLen)));
    return {
      bytes: frame(NFQNL_MSG_PACKET, 0, seq, Buffer.concat(parts)),
      parsed: { kind: 'packet', queue, id, length: capLen ?? payload.length },
    };
  });

const ack = fc.record({ seq: fc.nat({ max: 0xffff_ffff }), errno: fc.integer({ min: 0, max: 4095 }) }).map(({ seq, errno }): Msg => {
  const body = Buffer.alloc(4 + 16);
  body.writeInt32LE(-errno, 0);
  return { bytes: frame(NLMSG_ERROR, 0, seq, body), parsed: { kind: 'ack', seq, errno } };
});

const other = fc
  .record({ type: fc.integer({ min: 3, max: 0xffff }).filter((t) => t !== NFQNL_MSG_PACKET), body: fc.uint8Array({ maxLength: 32 }) })
  .map(({ type, body }): Msg => {
    const padded = Buffer.alloc((body.length + 3) & ~3);
    Buffer.from(body).copy(padded);
    return { bytes: frame(type, 0, 0, padded), parsed: { kind: 'other', type } };
  });

const datagram = fc.array(fc.oneof(packet, ack, other), { maxLength: 8 });

/**
 * Hostile messages: a header the parser acts on (PACKET, ERROR, or any type)
 * with a length field that may lie, followed by attributes whose own lengths
 * may lie, or random bytes.
 */
const hostileMessage = fc
  .record({
    type: fc.oneof(fc.constant(NFQNL_MSG_PACKET), fc.constant(NLMSG_ERROR), fc.integer({ min: 0, max: 0xffff })),
    lenDelta: fc.oneof(fc.constant(0), fc.integer({ min: -24, max: 24 })),
    attrs: fc.array(fc.record({ len: fc.integer({ min: 0, max: 0xffff }), type: fc.integer({ min: 0, max: 0xffff }), body: fc.uint8Array({ maxLength: 12 }) }), {
      maxLength: 4,
    }),
    raw: fc.uint8Array({ maxLength: 24 }),
  })
  .map(({ type, lenDelta, attrs, raw }) => {
    const parts = [Buffer.alloc(4)];
    for (const a of attrs) {
      const h = Buffer.alloc(4);
      h.writeUInt16LE(a.len, 0);
      h.writeUInt16LE(a.type, 2);
      parts.push(h, Buffer.from(a.body));
    }
    parts.push(Buffer.from(raw));
    const m = frame(type, 0, 0, Buffer.concat(parts));
    m.writeUInt32LE(Math.max(0, m.length + lenDelta), 0);
    return m;
  });

function wellFormed(m: Incoming): boolean {
  if (m.kind === 'packet') return Number.isInteger(m.queue) && m.queue >= 0 && m.queue <= 0xffff && m.id >= 0 && m.id <= 0xffff_ffff && m.length >= 0;
  if (m.kind === 'ack') return Number.isInteger(m.seq) && Number.isInteger(m.errno);
  return Number.isInteger(m.type);
}

describe('nfqueue wire parser (fuzz)', () => {
  it(`never throws on arbitrary bytes and returns only well-formed messages (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        const out = parseMessages(Buffer.from(bytes));
        expect(out.every(wellFormed)).toBe(true);
      }),
      params,
    );
  }, TIMEOUT_MS);

  it(`never throws on hostile messages (lying message and attribute lengths) (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(fc.array(hostileMessage, { maxLength: 4 }), (msgs) => {
        const whole = Buffer.concat(msgs);
        // Every cut point: the datagram may end anywhere inside a message.
        for (let cut = 0; cut <= whole.length; cut++) expect(parseMessages(whole.subarray(0, cut)).every(wellFormed)).toBe(true);
      }),
      params,
    );
  }, TIMEOUT_MS);

  it(`parses back every message of a datagram the kernel could send, in order (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(datagram, (msgs) => {
        expect(parseMessages(Buffer.concat(msgs.map((m) => m.bytes)))).toEqual(msgs.map((m) => m.parsed));
      }),
      params,
    );
  }, TIMEOUT_MS);

  it(`a truncated or corrupted datagram never throws; a cut datagram yields a prefix of its messages (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(datagram, fc.nat(), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), (msgs, cutAt, flips) => {
        const whole = Buffer.concat(msgs.map((m) => m.bytes));
        const cut = whole.subarray(0, whole.length === 0 ? 0 : cutAt % (whole.length + 1));
        const got = parseMessages(cut);
        const want = msgs.map((m) => m.parsed);
        expect(want.slice(0, got.length)).toEqual(got);
        const corrupted = Buffer.from(whole);
        for (const [at, value] of flips) if (corrupted.length > 0) corrupted[at % corrupted.length] = value;
        expect(parseMessages(corrupted).every(wellFormed)).toBe(true);
      }),
      params,
    );
  }, TIMEOUT_MS);
});

describe('nfqueue wire parser: inputs that used to throw (RangeError) or mis-parse', () => {
  it('a PACKET message too short for its nfgenmsg, at the end of the datagram, is not a packet', () => {
    const bare = frame(NFQNL_MSG_PACKET, 0, 0, Buffer.alloc(0));
    expect(parseMessages(bare)).toEqual([{ kind: 'other', type: NFQNL_MSG_PACKET }]);
  });

  it('an attribute whose length runs past the datagram ends the attribute walk', () => {
    const head = Buffer.alloc(4);
    head.writeUInt16LE(8, 0); // claims 4 bytes of payload, none follow
    head.writeUInt16LE(NFQA_PACKET_HDR, 2);
    expect(parseMessages(frame(NFQNL_MSG_PACKET, 0, 0, Buffer.concat([Buffer.alloc(4), head])))).toEqual([]);
  });

  it('a successful ACK has errno 0, not -0', () => {
    const [m] = parseMessages(frame(NLMSG_ERROR, 0, 7, Buffer.alloc(20)));
    expect(m).toEqual({ kind: 'ack', seq: 7, errno: 0 });
    expect(Object.is((m as { errno: number }).errno, 0)).toBe(true);
  });
});
