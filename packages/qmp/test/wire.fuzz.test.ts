/**
 * Property-based fuzzing of the QMP wire reader (issue 14): whatever bytes a
 * monitor sends, in whatever chunks, the reader neither crashes nor buffers
 * more than one line's limit, and the client settles every command. Fixed
 * seed and bounded runs here (CI); `pnpm --filter @remus/qmp fuzz` runs the
 * same properties longer (QMP_FUZZ_RUNS; the socket property at most 2000).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { isRemusError } from '@remus/core';
import { QmpErrorCodes, connectQmp, isQmpError } from '../src/index.js';
import { QmpLineReader, parseQmpMessage } from '../src/wire.js';

const SEED = 0x5eed;
const RUNS = Number(process.env.QMP_FUZZ_RUNS ?? 0) || undefined;
const runs = (ci: number): number => RUNS ?? ci;
/** Runs of the socket round trip (each ~100 ms): at most 2000 even in a long run. */
const SOCKET_RUNS = Math.min(runs(60), 2000);

/** True for the one error the wire format may raise. */
function isProtocolError(e: unknown): boolean {
  return isQmpError(e) && e.code === QmpErrorCodes.QMP_FAILED && e.desc === 'protocol error';
}

/** Bytes with many newlines, quotes and braces, so that lines and JSON-ish text come up often. */
const qmpishByte = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 255 }) },
  { weight: 2, arbitrary: fc.constantFrom(...Buffer.from('\n\r{}"[]:,\\ ')) },
);
const chunks = fc.array(fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.array(qmpishByte, { maxLength: 300 }).map((a) => Uint8Array.from(a))), {
  maxLength: 20,
});

describe('QMP line reader (property-based)', () => {
  it('any bytes in any chunks: lines as a reference split gives them, or one protocol error; never more than the limit buffered', () => {
    const limit = 256;
    fc.assert(
      fc.property(chunks, (parts) => {
        const reader = new QmpLineReader(limit);
        const decoder = new StringDecoder('utf8');
        const got: string[] = [];
        let text = '';
        for (const part of parts) {
          const chunk = decoder.write(Buffer.from(part));
          text += chunk;
          try {
            got.push(...reader.push(chunk));
          } catch (e) {
            expect(isProtocolError(e)).toBe(true);
            expect(reader.buffered).toBe(0);
            return; // the client drops the connection here
          }
          expect(reader.buffered).toBeLessThanOrEqual(limit);
        }
        const complete = text.slice(0, text.lastIndexOf('\n') + 1);
        const want = complete.split('\n').map((l) => l.trim()).filter((l) => l !== '');
        expect(got).toEqual(want);
      }),
      { seed: SEED, numRuns: runs(2000) },
    );
  });

  it('a line without an end is refused once it passes the limit, however it is cut', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 30 }), (sizes) => {
        const reader = new QmpLineReader(100);
        let total = 0;
        for (const n of sizes) {
          total += n;
          if (total <= 100) {
            expect(reader.push('x'.repeat(n))).toEqual([]);
          } else {
            expect(() => reader.push('x'.repeat(n))).toThrow(expect.objectContaining({ code: QmpErrorCodes.QMP_FAILED }));
            return;
          }
        }
      }),
      { seed: SEED, numRuns: runs(500) },
    );
  });
});

describe('QMP message parser (property-based)', () => {
  const check = (line: string): void => {
    try {
      const m = parseQmpMessage(line);
      expect(['greeting', 'event', 'return', 'error']).toContain(m.kind);
      if (m.kind === 'event') {
        expect(typeof m.event.event).toBe('string');
        expect(Number.isFinite(m.event.timestamp.seconds)).toBe(true);
        expect(typeof m.event.data).toBe('object');
      }
      if (m.kind === 'error') expect(typeof m.desc).toBe('string');
      if (m.kind !== 'greeting' && m.kind !== 'event') expect(m.id === undefined || typeof m.id === 'number').toBe(true);
    } catch (e) {
      expect(isProtocolError(e)).toBe(true);
    }
  };

  it('any text: a message of a known kind or a protocol error', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 200 }), check), { seed: SEED, numRuns: runs(3000) });
  });

  it('any JSON value: a message of a known kind or a protocol error', () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => check(JSON.stringify(v) ?? 'null')), { seed: SEED, numRuns: runs(3000) });
  });

  it('QMP-shaped objects with any member values', () => {
    const anyValue = fc.jsonValue({ maxDepth: 2 });
    const shaped = fc.oneof(
      fc.record({ QMP: anyValue }),
      fc.record({ event: fc.oneof(fc.string(), anyValue), data: anyValue, timestamp: anyValue }, { requiredKeys: ['event'] }),
      fc.record({ return: anyValue, id: anyValue }, { requiredKeys: ['return'] }),
      fc.record({ error: fc.oneof(anyValue, fc.record({ class: anyValue, desc: anyValue })), id: anyValue }, { requiredKeys: ['error'] }),
    );
    fc.assert(fc.property(shaped, (v) => check(JSON.stringify(v))), { seed: SEED, numRuns: runs(3000) });
  });
});

// ---------------------------------------------------------------------------
// The client over a socket: a stub monitor that greets, then answers the
// command with fuzzed bytes. The command must settle (answer, QEMU error,
// protocol error or timeout) and nothing may throw out of the socket handlers.

const GREETING = JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fuzz' }, capabilities: [] } });
const dir = mkdtempSync(join(tmpdir(), `remus-qmp-fuzz-${process.pid}-`));
let server: Server | undefined;
afterAll(async () => {
  if (server) await new Promise<void>((r) => server!.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

describe('QMP client under fuzzed answers (property-based, unix socket stub)', () => {
  it('every command settles; no uncaught error; the connection is closed or usable afterwards', async () => {
    let reply: readonly Uint8Array[] = [];
    const path = join(dir, 'stub.sock');
    server = createServer((s: Socket) => {
      s.on('error', () => undefined);
      s.write(GREETING + '\r\n');
      let buf = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const msg = JSON.parse(buf.slice(0, i)) as { execute: string; id: number };
          buf = buf.slice(i + 1);
          if (msg.execute === 'qmp_capabilities') s.write(JSON.stringify({ return: {}, id: msg.id }) + '\r\n');
          else for (const part of reply) s.write(part);
        }
      });
    });
    await new Promise<void>((r) => server!.listen(path, r));
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown): void => void uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    try {
      await fc.assert(
        fc.asyncProperty(chunks, async (parts) => {
          reply = parts;
          const c = await connectQmp(path, { timeoutMs: 2000 });
          try {
            const outcome = await c.execute('fuzz', undefined, { timeoutMs: 100 }).then(
              () => 'answered',
              (e: unknown) => (isRemusError(e) ? e.code : 'other'),
            );
            expect(['answered', QmpErrorCodes.QMP_FAILED, 'TIMEOUT']).toContain(outcome);
            expect(c.pendingCount).toBe(0);
          } finally {
            await c.close();
          }
        }),
        { seed: SEED, numRuns: SOCKET_RUNS },
      );
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(uncaught).toEqual([]);
  }, 30_000 + SOCKET_RUNS * 250);
});
