// Property-based fuzzing (fast-check, fixed seed, bounded runs) of every
// parser of the CLI that takes outside bytes: the config file, the run
// journal, and the colo control-socket protocol (both ends, in process and
// over a real unix socket). Each must either accept a value that holds its
// invariants or refuse it with a coded error; never crash, hang or throw
// something else. `REMUS_FUZZ_RUNS=N` (see `pnpm fuzz`) runs longer.
import { connect } from 'node:net';
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_TIMER_MS, isRemusError, validateName, validateOperationId } from '@remus/core';
import { checkConfig, validateConfig } from '../src/config.js';
import { parseJournal } from '../src/journal.js';
import { MAX_REQUEST_BYTES, parseAnswer, parseRequest, requestControl, serveControl } from '../src/colo/control.js';
import { tempDir } from '@remus/test-lab';

const RUNS = Number(process.env.REMUS_FUZZ_RUNS ?? 400);
const SEED = 20261203;
const params = (numRuns = RUNS): fc.Parameters<unknown> => ({ seed: SEED, numRuns });

/** Values a config or journal field may hold: right types, wrong types, edge numbers, nesting. */
const edgeValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1.5, 3e9, 2 ** 31, Number.MAX_SAFE_INTEGER, 1e308, '', '0x3', '1e9', 'nic', '..', '/', '__proto__'),
  fc.integer(),
  fc.double({ noNaN: true }),
  fc.string(),
  fc.jsonValue({ maxDepth: 4 }),
);

function record(keys: readonly string[]): fc.Arbitrary<Record<string, unknown>> {
  return fc.dictionary(fc.oneof(fc.constantFrom(...keys), fc.string()), edgeValue, { maxKeys: keys.length + 2 });
}

const configArb = fc.record(
  {
    intervalMs: edgeValue,
    schedule: fc.oneof(fc.constantFrom('after-commit', 'fixed-rate'), edgeValue),
    maxCheckpoints: edgeValue,
    durationMs: edgeValue,
    onFailure: edgeValue,
    domainTimeoutMs: edgeValue,
    timeouts: fc.oneof(record(['setup', 'commit', 'reap', 'teardown']), edgeValue),
    domain: fc.oneof(record(['type', 'command', 'pid', 'cwd', 'env', 'cgroup', 'ack']), fc.constant({ type: 'process', command: ['sleep', '1'] })),
    plugins: fc.oneof(fc.array(record(['package', 'subkinds']), { maxLength: 3 }), edgeValue),
    devices: fc.oneof(fc.array(record(['id', 'kind', 'params']), { maxLength: 3 }), edgeValue),
  },
  { requiredKeys: [] },
);

describe('fuzz: the config parser', () => {
  it('refuses with INVALID_ARGUMENT or accepts a config whose times and counts Node can hold', () => {
    fc.assert(
      fc.property(fc.oneof(configArb, fc.jsonValue({ maxDepth: 6 })), (raw) => {
        const { config, problems } = checkConfig(raw);
        for (const p of problems) expect(typeof p.path === 'string' && typeof p.message === 'string' && typeof p.fix === 'string').toBe(true);
        let accepted;
        try {
          accepted = validateConfig(raw);
        } catch (e) {
          expect(isRemusError(e, 'INVALID_ARGUMENT')).toBe(true);
          expect(problems.length > 0 || config === undefined).toBe(true);
          return;
        }
        expect(problems).toEqual([]);
        for (const ms of [accepted.intervalMs, accepted.domainTimeoutMs, accepted.durationMs ?? 1, ...Object.values(accepted.timeouts)]) {
          expect(ms >= 1 && ms <= MAX_TIMER_MS).toBe(true);
        }
        if (accepted.maxCheckpoints !== undefined) expect(Number.isSafeInteger(accepted.maxCheckpoints)).toBe(true);
      }),
      params(),
    );
  });

  it('survives any nesting depth without recursion (deep arrays and objects)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20_000 }), fc.boolean(), (depth, arrays) => {
        let v: unknown = 1;
        for (let i = 0; i < depth; i++) v = arrays ? [v] : { a: v };
        const { problems } = checkConfig({ domain: { type: 'process', command: ['x'], env: v } });
        if (depth > 30) expect(problems[0]?.message).toMatch(/nests deeper than/);
      }),
      params(Math.min(RUNS, 60)),
    );
  });
});

const journalArb = fc.record(
  {
    format: fc.oneof(fc.constant(1), edgeValue),
    operation: fc.oneof(fc.constant('rfuzz1'), edgeValue),
    pid: fc.oneof(fc.integer({ min: 2, max: 4_000_000 }), edgeValue),
    pidStart: fc.oneof(fc.constant('12345'), edgeValue),
    command: fc.oneof(fc.constant('run'), edgeValue),
    startedAt: fc.oneof(fc.constant('2026-12-03T00:00:00Z'), edgeValue),
    plugins: fc.oneof(fc.array(record(['package', 'from', 'dir', 'version', 'subkinds']), { maxLength: 2 }), edgeValue),
    devices: fc.oneof(fc.array(record(['id', 'kind', 'params']), { maxLength: 2 }), edgeValue),
    domainMode: fc.oneof(fc.constantFrom('command', 'pid'), edgeValue),
    cgroups: fc.oneof(fc.array(edgeValue, { maxLength: 3 }), edgeValue),
    netns: fc.oneof(fc.array(edgeValue, { maxLength: 3 }), edgeValue),
    processes: fc.oneof(fc.array(record(['pid', 'start', 'what']), { maxLength: 3 }), edgeValue),
  },
  { requiredKeys: [] },
);

describe('fuzz: the journal parser', () => {
  it('returns only journals that hold every invariant cleanup relies on, else throws an Error naming the field', () => {
    fc.assert(
      fc.property(fc.oneof(journalArb.map((j) => JSON.stringify(j)), fc.string(), fc.jsonValue().map((v) => JSON.stringify(v))), (text) => {
        let j;
        try {
          j = parseJournal(text);
        } catch (e) {
          expect(e).toBeInstanceOf(Error);
          expect((e as Error).message).toMatch(/^(field |is not)/);
          return;
        }
        expect(validateOperationId(j.operation)).toBe(j.operation);
        for (const pid of [j.pid, ...j.processes.map((p) => p.pid)]) expect(Number.isSafeInteger(pid) && pid > 1).toBe(true);
        for (const s of [j.pidStart, ...j.processes.map((p) => p.start)]) expect(s === undefined || /^\d+$/.test(s)).toBe(true);
        for (const c of j.cgroups) expect(typeof c).toBe('string');
        for (const n of j.netns) expect(validateName(n, 'netns')).toBe(n);
        for (const p of j.plugins) expect(typeof p.package === 'string' && typeof p.from === 'string').toBe(true);
        expect(j.domainMode === undefined || j.domainMode === 'command' || j.domainMode === 'pid').toBe(true);
      }),
      params(),
    );
  });
});

const line = fc.oneof(
  fc.string(),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.record({ type: fc.constantFrom('event', 'result', 'x'), ok: edgeValue, event: edgeValue, error: edgeValue, status: edgeValue }, { requiredKeys: ['type'] }).map((v) => JSON.stringify(v)),
  fc.record({ command: fc.constantFrom('status', 'stop', 'failover', 'x'), to: edgeValue }, { requiredKeys: [] }).map((v) => JSON.stringify(v)),
);

describe('fuzz: the control-socket protocol', () => {
  const dir = tempDir('fuzz').dir;
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('parses requests and answers into the protocol or refuses with a code', () => {
    fc.assert(
      fc.property(line, (l) => {
        try {
          const r = parseRequest(l);
          expect(['status', 'stop', 'failover']).toContain(r.command);
        } catch (e) {
          expect(isRemusError(e, 'INVALID_ARGUMENT')).toBe(true);
        }
        try {
          const a = parseAnswer(l);
          if (a.type === 'event') expect(typeof a.event).toBe('object');
          else expect(typeof a.result.ok).toBe('boolean');
        } catch (e) {
          expect(isRemusError(e, 'cli/CONTROL_PROTOCOL')).toBe(true);
        }
      }),
      params(RUNS * 5),
    );
  });

  it('the driver answers any bytes with at most one result and closes; it keeps serving', async () => {
    const path = join(dir, 'server.sock');
    let handled = 0;
    const control = await serveControl(path, async () => {
      handled++;
      return { status: { state: 'connecting' } };
    });
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.oneof(line.map((l) => Buffer.from(l)), fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a))), { minLength: 1, maxLength: 4 }), fc.boolean(), async (chunks, newline) => {
          const answer = await new Promise<string>((resolve, reject) => {
            const s = connect(path);
            let out = '';
            s.on('data', (b) => (out += b.toString()));
            s.on('error', () => resolve(out));
            s.on('close', () => resolve(out));
            s.on('connect', () => {
              for (const c of chunks) s.write(c);
              if (newline) s.write('\n');
              else s.end();
            });
            setTimeout(() => reject(new Error('no close within 5 s')), 5000).unref();
          });
          const results = answer.split('\n').filter((l) => l.includes('"type":"result"'));
          expect(results.length).toBeLessThanOrEqual(1);
        }),
        params(Math.min(RUNS, 100)),
      );
      // Still serving after all of it; an oversized request gets an error result, not a growing buffer.
      const ok = await requestControl(path, { command: 'status' }, () => {}, 5000);
      expect(ok.ok).toBe(true);
      const big = await new Promise<string>((resolve) => {
        const s = connect(path);
        let out = '';
        s.on('data', (b) => (out += b.toString()));
        s.on('close', () => resolve(out));
        s.on('error', () => resolve(out));
        s.on('connect', () => s.write('x'.repeat(MAX_REQUEST_BYTES * 4)));
      });
      expect(big).toMatch(/"ok":false.*longer than 4096 bytes/);
      expect(handled).toBeGreaterThan(0);
    } finally {
      await control.close();
    }
  });

  it('the client survives any answer: a result, or a coded error, never an uncaught exception', async () => {
    const path = join(dir, 'evil.sock');
    let reply: Buffer[] = [];
    const server = createServer((sock) => {
      sock.on('error', () => {});
      sock.once('data', () => {
        for (const r of reply) sock.write(r);
        sock.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.oneof(line.map((l) => `${l}\n`), fc.string(), fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a).toString('latin1'))), { maxLength: 5 }), async (lines) => {
          reply = lines.map((l) => Buffer.from(l, 'latin1'));
          try {
            const r = await requestControl(path, { command: 'status' }, () => {}, 5000);
            expect(typeof r.ok).toBe('boolean');
          } catch (e) {
            expect(isRemusError(e, 'cli/CONTROL_PROTOCOL') || isRemusError(e, 'STATE')).toBe(true);
          }
        }),
        params(Math.min(RUNS, 150)),
      );
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
