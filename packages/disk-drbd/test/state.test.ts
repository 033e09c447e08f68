import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isRemusError } from '@remus/core';
import { openProcDrbd, parseProcDrbd } from '../src/index.js';

// Real text of DRBD 8.4.11's /proc/drbd (Linux 6.1), with a resync in progress on minor 2.
const REAL = `version: 8.4.11 (api:1/proto:86-101)
srcversion: 211FB288A383ED945B83420 

 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----
    ns:1048508 nr:0 dw:12 dr:1049420 al:8 bm:0 lo:1 pe:2 ua:0 ap:3 ep:1 wo:f oos:0
 1: cs:Unconfigured
 2: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
    ns:1024 nr:0 dw:0 dr:1664 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:7168
	[==>.................] sync'ed: 14.3% (7168/8188)K
	finish: 0:00:01 speed: 1,024 (1,024) K/sec
 3: cs:StandAlone ro:Secondary/Unknown ds:UpToDate/DUnknown   r-----
    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:8188
`;

describe('parseProcDrbd', () => {
  it('reads the version, each minor state and its counters', () => {
    const s = parseProcDrbd(REAL);
    expect(s.version).toBe('8.4.11');
    expect(s.minors.get(0)).toEqual({
      minor: 0,
      connection: 'Connected',
      role: 'Primary',
      peerRole: 'Secondary',
      disk: 'UpToDate',
      peerDisk: 'UpToDate',
      protocol: 'C',
      ioFlags: 'r-----',
      counters: { ns: 1048508, nr: 0, dw: 12, dr: 1049420, al: 8, bm: 0, lo: 1, pe: 2, ua: 0, ap: 3, ep: 1, oos: 0 },
    });
  });

  it('keeps unconfigured minors, resync lines do not disturb the next minor', () => {
    const s = parseProcDrbd(REAL);
    expect(s.minors.get(1)?.connection).toBe('Unconfigured');
    expect(s.minors.get(2)?.peerDisk).toBe('Inconsistent');
    expect(s.minors.get(2)?.counters['oos']).toBe(7168);
    expect(s.minors.get(3)?.counters['oos']).toBe(8188);
  });

  it('has no protocol for a minor without a network config', () => {
    const s = parseProcDrbd(REAL);
    expect(s.minors.get(3)?.protocol).toBeUndefined();
    expect(s.minors.get(3)?.ioFlags).toBe('r-----');
    expect(s.minors.get(3)?.peerRole).toBe('Unknown');
  });

  it('lists no minor for empty text', () => {
    expect(parseProcDrbd('').minors.size).toBe(0);
  });
});

describe('openProcDrbd', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('re-reads the file through one handle: a change of the file is seen at the next refresh', async () => {
    dir = mkdtempSync(join(tmpdir(), `remus-disk-drbd-${process.pid}-`));
    const file = join(dir, 'drbd');
    writeFileSync(file, REAL);
    const source = await openProcDrbd(file);
    try {
      expect(source.loaded).toBe(true);
      expect(source.current().minors.get(0)?.counters['ap']).toBe(3);
      writeFileSync(file, REAL.replace('ap:3', 'ap:0'));
      expect((await source.refresh()).minors.get(0)?.counters['ap']).toBe(0);
      expect(source.current().minors.get(0)?.counters['ap']).toBe(0);
    } finally {
      await source.close();
      await source.close();
    }
  });

  it('concurrent refreshes share one read', async () => {
    dir = mkdtempSync(join(tmpdir(), `remus-disk-drbd-${process.pid}-`));
    const file = join(dir, 'drbd');
    writeFileSync(file, REAL);
    const source = await openProcDrbd(file);
    try {
      const [a, b] = [source.refresh(), source.refresh()];
      expect(a).toBe(b);
      await a;
    } finally {
      await source.close();
    }
  });

  it('a host without the DRBD module gets a source that lists no device', async () => {
    const source = await openProcDrbd(`/nonexistent-${process.pid}/drbd`);
    expect(source.loaded).toBe(false);
    expect((await source.refresh()).minors.size).toBe(0);
    await source.close();
  });

  it('refuses DRBD 9, whose status file lists no devices', async () => {
    dir = mkdtempSync(join(tmpdir(), `remus-disk-drbd-${process.pid}-`));
    const file = join(dir, 'drbd');
    writeFileSync(file, 'version: 9.2.12 (api:2/proto:86-122)\nGIT-hash: abc build by x\nTransports (api:21): tcp (9.2.12)\n');
    const e = await openProcDrbd(file).catch((x: unknown) => x);
    expect(isRemusError(e, 'UNSUPPORTED_HOST')).toBe(true);
    expect((e as Error).message).toMatch(/DRBD 9\.2\.12 .*stateSource/);
  });

  it('a refresh after close fails with STATE', async () => {
    dir = mkdtempSync(join(tmpdir(), `remus-disk-drbd-${process.pid}-`));
    const file = join(dir, 'drbd');
    writeFileSync(file, REAL);
    const source = await openProcDrbd(file);
    await source.close();
    const e = await source.refresh().catch((x: unknown) => x);
    expect(isRemusError(e, 'STATE')).toBe(true);
  });
});
