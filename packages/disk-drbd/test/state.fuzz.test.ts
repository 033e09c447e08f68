/**
 * Property-based fuzzing (fast-check) of the /proc/drbd parser: every
 * checkpoint's barrier decides on what it returns. Fixed seed and bounded
 * runs in CI; REMUS_FUZZ_RUNS=<n> for a longer run (see README).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseProcDrbd, type DrbdMinorState } from '../src/index.js';

const SEED = 0x0d4bd;
const RUNS = Number(process.env['REMUS_FUZZ_RUNS'] ?? 2000);
const params = { seed: SEED, numRuns: RUNS };
/** vitest's limit per property: generous for long runs (`pnpm fuzz`). */
const TIMEOUT_MS = Math.max(60_000, RUNS * 10);

const COUNTERS = ['ns', 'nr', 'dw', 'dr', 'al', 'bm', 'lo', 'pe', 'ua', 'ap', 'ep', 'oos'] as const;
const word = (values: readonly string[]) => fc.constantFrom(...values);

/** A configured minor as DRBD 8.4 prints it, or an unconfigured one. */
const minorState = fc.oneof(
  fc.record({
    minor: fc.nat({ max: 1_048_575 }),
    connection: word(['Connected', 'WFConnection', 'StandAlone', 'SyncSource', 'SyncTarget', 'Disconnecting', 'Ahead', 'Behind']),
    role: word(['Primary', 'Secondary', 'Unknown']),
    peerRole: word(['Primary', 'Secondary', 'Unknown']),
    disk: word(['UpToDate', 'Inconsistent', 'Diskless', 'Outdated', 'Consistent', 'Attaching']),
    peerDisk: word(['UpToDate', 'DUnknown', 'Outdated', 'Inconsistent', 'Diskless']),
    protocol: fc.constantFrom('A', 'B', 'C', 'D', undefined),
    ioFlags: fc.array(fc.constantFrom('r', 's', '-', 'a', 'p', 'u', 'd', 'n'), { minLength: 6, maxLength: 6 }).map((c) => c.join('')),
    counters: fc.record(Object.fromEntries(COUNTERS.map((k) => [k, fc.nat()])) as Record<(typeof COUNTERS)[number], fc.Arbitrary<number>>, { requiredKeys: [] }),
  }),
  fc.nat({ max: 1_048_575 }).map(
    (minor): DrbdMinorState => ({ minor, connection: 'Unconfigured', role: '', peerRole: '', disk: '', peerDisk: '', protocol: undefined, ioFlags: '', counters: {} }),
  ),
);

/** Minors with distinct numbers, in the order the kernel lists them. */
const minors = fc.uniqueArray(minorState, { selector: (m) => m.minor, maxLength: 6 }).map((ms) => [...ms].sort((a, b) => a.minor - b.minor));

function render(version: string | undefined, ms: readonly DrbdMinorState[], noise: readonly string[] = []): string {
  const lines: string[] = [];
  let n = 0;
  const noisy = (): void => {
    if (noise.length > 0) lines.push(noise[n++ % noise.length]!);
  };
  if (version !== undefined) lines.push(`version: ${version} (api:1/proto:86-101)`);
  noisy();
  for (const m of ms) {
    if (m.connection === 'Unconfigured') {
      lines.push(`${String(m.minor).padStart(2)}: cs:Unconfigured`);
      noisy();
      continue;
    }
    lines.push(`${String(m.minor).padStart(2)}: cs:${m.connection} ro:${m.role}/${m.peerRole} ds:${m.disk}/${m.peerDisk} ${m.protocol ?? ' '} ${m.ioFlags}`);
    noisy();
    const counters = Object.entries(m.counters).map(([k, v]) => `${k}:${v}`);
    // The counters line always starts with ns: in DRBD 8.4; wo: is a letter and is skipped.
    if (counters.length > 0) lines.push(`    ns:${m.counters['ns'] ?? 0} ${counters.filter((c) => !c.startsWith('ns:')).join(' ')} wo:f`);
    noisy();
  }
  return `${lines.join('\n')}\n`;
}

/** What the parser reports for `m` once rendered (a counters line always carries ns). */
function expected(m: DrbdMinorState): DrbdMinorState {
  if (Object.keys(m.counters).length === 0) return m;
  return { ...m, counters: { ns: 0, ...m.counters } };
}

/** Lines DRBD prints that carry no state (resync progress, srcversion, blank), as the parser must ignore them. */
const noiseLine = fc.oneof(
  fc.constantFrom('', 'srcversion: 211FB288A383ED945B83420 ', "\t[==>.................] sync'ed: 14.3% (7168/8188)K", '\tfinish: 0:00:01 speed: 1,024 (1,024) K/sec', '\t 0% sector pos: 0/2097016'),
  fc.string({ maxLength: 40 }).filter((l) => !l.includes('\n') && !/^\s*\d+:\s/.test(l) && !/^\s+ns:/.test(l) && !/^version:/.test(l)),
);

describe('/proc/drbd parser (fuzz)', () => {
  it(`never throws on arbitrary text and reports only well-formed minors (${RUNS} runs)`, () => {
    const text = fc.oneof(
      fc.string({ maxLength: 400 }),
      fc.array(fc.oneof(noiseLine, fc.constantFrom(' 0: cs:', ' 1: cs:Connected ro:/ ds:/ C', '    ns:', '    ns:1 pe:x ap:99999999999999999999', 'version:', ' 7: ')), { maxLength: 12 }).map((l) => l.join('\n')),
    );
    fc.assert(
      fc.property(text, (t) => {
        const s = parseProcDrbd(t);
        for (const [minor, m] of s.minors) {
          expect(m.minor).toBe(minor);
          expect(Number.isInteger(minor) && minor >= 0).toBe(true);
          for (const v of Object.values(m.counters)) expect(typeof v === 'number' && v >= 0).toBe(true);
          for (const f of [m.connection, m.role, m.peerRole, m.disk, m.peerDisk, m.ioFlags]) expect(typeof f).toBe('string');
        }
      }),
      params,
    );
  }, TIMEOUT_MS);

  it(`reads back every minor, state and counter DRBD 8.4 prints (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(fc.option(fc.constantFrom('8.4.11', '8.4.7', '8.3.16'), { nil: undefined }), minors, (version, ms) => {
        const s = parseProcDrbd(render(version, ms));
        expect(s.version).toBe(version);
        expect([...s.minors.values()]).toEqual(ms.map(expected));
      }),
      params,
    );
  }, TIMEOUT_MS);

  it(`lines that carry no state (resync progress, srcversion, anything else) change nothing (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(minors, fc.array(noiseLine, { minLength: 1, maxLength: 4 }), (ms, noise) => {
        expect(parseProcDrbd(render('8.4.11', ms, noise))).toEqual(parseProcDrbd(render('8.4.11', ms)));
      }),
      params,
    );
  }, TIMEOUT_MS);
});
