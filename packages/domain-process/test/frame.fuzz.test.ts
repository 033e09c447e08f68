// Property-based fuzzing of the backup frame parser (issue 14) and of the
// backup's acceptance rules, with fast-check. CI: a fixed seed and a bounded
// run count; `pnpm bench` runs the same properties longer with a fresh seed
// (REMUS_FUZZ_RUNS, REMUS_FUZZ_SEED; see bench/run.mjs).
import fc from 'fast-check';
import { isRemusError, pollUntil } from '@remus/core';
import { describe, expect, it } from 'vitest';
import { BackupErrors, BackupServer, FRAME_HEADER_BYTES, FrameDecoder, FrameType, MAX_REFUSE_BYTES, encodeFrame, type Frame } from '../src/index.js';
import { duplexPair } from './helpers.js';

const RUNS = Number(process.env.REMUS_FUZZ_RUNS ?? 300);
const SEED = Number(process.env.REMUS_FUZZ_SEED ?? 14);
const params = (scale = 1): fc.Parameters<unknown> => ({ seed: SEED, numRuns: Math.max(1, Math.floor(RUNS * scale)), endOnFailure: true });
const MAX = 4096;
const PARSER_CODES = [BackupErrors.FRAME_INVALID, BackupErrors.FRAME_TOO_LARGE];

const safeInt = fc.oneof(fc.constantFrom(0, 1, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER), fc.maxSafeNat());
const frameArb = fc.oneof(
  fc.record({ type: fc.constant(FrameType.STATE), epoch: safeInt, checkpoint: safeInt, payload: fc.uint8Array({ maxLength: 600 }) }),
  fc.record({ type: fc.constant(FrameType.ACK), epoch: safeInt, checkpoint: safeInt, payload: fc.constant(new Uint8Array(0)) }),
  fc.record({ type: fc.constant(FrameType.REFUSE), epoch: safeInt, checkpoint: safeInt, payload: fc.uint8Array({ maxLength: 300 }) }),
  fc.record({ type: fc.constant(FrameType.PING), epoch: safeInt, checkpoint: safeInt, payload: fc.constant(new Uint8Array(0)) }),
);

/** Cuts `buf` at the given points (modulo its length) into chunks. */
function chunked(buf: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (buf.length === 0 ? 0 : c % (buf.length + 1))))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(buf.subarray(at, p));
    at = p;
  }
  out.push(buf.subarray(at));
  return out;
}

/** Feeds chunks; returns the frames and the error, checking the decoder's invariants on the way. */
function feed(chunks: readonly Buffer[]): { frames: Frame[]; error: unknown } {
  const d = new FrameDecoder({ maxFrameBytes: MAX });
  const frames: Frame[] = [];
  for (const c of chunks) {
    try {
      d.push(c, (f) => frames.push(f));
    } catch (e) {
      // Only the parser's own codes, and the decoder stays failed with the same error.
      expect(isRemusError(e) && PARSER_CODES.includes(e.code as (typeof PARSER_CODES)[number])).toBe(true);
      expect(() => d.push(Buffer.alloc(1), () => undefined)).toThrow(e as Error);
      return { frames, error: e };
    }
    expect(d.pendingBytes).toBeLessThanOrEqual(MAX);
  }
  return { frames, error: undefined };
}

describe(`backup frame parser fuzzing (seed ${SEED}, ${RUNS} runs per property)`, () => {
  it('any sequence of valid frames, cut anywhere, decodes to the same frames', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), (frames, cuts) => {
        const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.epoch, f.checkpoint, f.payload)));
        const r = feed(chunked(wire, cuts));
        expect(r.error).toBeUndefined();
        expect(r.frames.map((f) => ({ ...f, payload: new Uint8Array(f.payload) }))).toEqual(
          frames.map((f) => ({ type: f.type, epoch: f.epoch, checkpoint: f.checkpoint, length: f.payload.length, payload: new Uint8Array(f.payload) })),
        );
      }),
      params(),
    );
  });

  it('arbitrary bytes never crash it: frames that come out are well formed, anything else is FRAME_INVALID / FRAME_TOO_LARGE', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
        const r = feed(chunked(Buffer.from(bytes), cuts));
        for (const f of r.frames) checkWellFormed(f);
      }),
      params(),
    );
  });

  it('valid streams with bytes flipped, dropped or inserted are refused or decode to well-formed frames', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('drop' as const), at: fc.nat(), value: fc.constant(0) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    );
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 4 }), fc.array(mutation, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, mutations, cuts) => {
        const bytes = [...Buffer.concat(frames.map((f) => encodeFrame(f.type, f.epoch, f.checkpoint, f.payload)))];
        for (const m of mutations) {
          const at = m.at % (bytes.length + 1);
          if (m.kind === 'flip' && at < bytes.length) bytes[at] = m.value;
          else if (m.kind === 'drop') bytes.splice(at, 1);
          else bytes.splice(at, 0, m.value);
        }
        const r = feed(chunked(Buffer.from(bytes), cuts));
        for (const f of r.frames) checkWellFormed(f);
      }),
      params(),
    );
  });

  it('headers with any field value: a declared length above the cap is refused before a buffer is made', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 5 }), (length, type) => {
        const h = Buffer.alloc(FRAME_HEADER_BYTES);
        h.writeUInt32BE(0x524d4232, 0);
        h.writeUInt16BE(type, 4);
        h.writeUInt32BE(length, 24);
        const d = new FrameDecoder({ maxFrameBytes: MAX });
        let error: unknown;
        try {
          d.push(h, () => undefined);
        } catch (e) {
          error = e;
        }
        const ok = (type === FrameType.STATE && length <= MAX) || ((type === FrameType.ACK || type === FrameType.PING) && length === 0) || (type === FrameType.REFUSE && length <= MAX_REFUSE_BYTES);
        expect(error === undefined).toBe(ok);
        expect(d.pendingBytes).toBeLessThanOrEqual(MAX);
      }),
      params(),
    );
  });

  it('the backup acks exactly the N+1 prefix of what one connection sends, and keeps the last accepted state', async () => {
    const step = fc.record({
      checkpoint: fc.oneof(fc.constant('next' as const), fc.constant('next' as const), fc.constantFrom(0, 1, 3, 2 ** 32 - 1, Number.MAX_SAFE_INTEGER)),
      epoch: fc.oneof(fc.constant('same' as const), fc.constant('same' as const), fc.integer({ min: 0, max: 5 })),
      size: fc.integer({ min: 0, max: 64 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 8 }), fc.integer({ min: 0, max: 3 }), async (steps, startEpoch) => {
        const s = BackupServer.create({ maxFrameBytes: 48 });
        const [a, b] = duplexPair();
        s.accept(b);
        let expected = 1;
        // The last epoch sent ('same' repeats it) and the highest the backup has accepted.
        let epoch = startEpoch;
        let highest = 0;
        let accepted = 0;
        let latest = '';
        let refused = false;
        const wire: Buffer[] = [];
        for (const [i, st] of steps.entries()) {
          const cp = st.checkpoint === 'next' ? expected : st.checkpoint;
          const ep = st.epoch === 'same' ? epoch : st.epoch;
          epoch = ep;
          const body = `${i}`.padEnd(st.size, '.');
          wire.push(encodeFrame(FrameType.STATE, ep, cp, Buffer.from(body)));
          if (refused) continue;
          if (cp === expected && ep >= highest && body.length <= 48) {
            accepted++;
            expected++;
            highest = ep;
            latest = body;
          } else refused = true;
        }
        const acks: Frame[] = [];
        const d = new FrameDecoder({ maxFrameBytes: 0 });
        a.on('data', (c: Buffer) => d.push(c, (f) => acks.push(f)));
        a.write(Buffer.concat(wire));
        await pollUntil(() => s.stats.acked + s.stats.refused >= accepted + (refused ? 1 : 0) && acks.length >= accepted, {
          what: 'the backup to answer',
          timeoutMs: 5000,
          intervalMs: 1,
        });
        expect(s.stats.acked).toBe(accepted);
        expect(s.stats.refused).toBe(refused ? 1 : 0);
        expect(s.latest.toString()).toBe(latest);
        expect(acks.filter((f) => f.type === FrameType.ACK).map((f) => f.checkpoint)).toEqual(Array.from({ length: accepted }, (_, i) => i + 1));
        a.destroy();
        await s.close();
      }),
      params(0.3),
    );
  });
});

function checkWellFormed(f: Frame): void {
  expect([FrameType.STATE, FrameType.ACK, FrameType.REFUSE, FrameType.PING]).toContain(f.type);
  expect(Number.isSafeInteger(f.epoch) && f.epoch >= 0).toBe(true);
  expect(Number.isSafeInteger(f.checkpoint) && f.checkpoint >= 0).toBe(true);
  expect(f.payload.length).toBe(f.length);
  if (f.type === FrameType.ACK || f.type === FrameType.PING) expect(f.length).toBe(0);
  if (f.type === FrameType.STATE) expect(f.length).toBeLessThanOrEqual(MAX);
  if (f.type === FrameType.REFUSE) expect(f.length).toBeLessThanOrEqual(MAX_REFUSE_BYTES);
}
