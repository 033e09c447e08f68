import { describe, expect, it } from 'vitest';
import { coloHaStatus } from '../src/index.js';

const rec = (o: Record<string, unknown>): string => JSON.stringify({ host: 'ha', peer: 'hb', state: 'replicating', protected: true, epoch: 7, at: 1, ...o });

describe('coloHaStatus (what remus colo status shows from the arbiter)', () => {
  it('a holder that wrote replicating under the current epoch: protected', () => {
    expect(coloHaStatus({ host: 'ha', epoch: 7 }, rec({}), undefined)).toMatchObject({ epoch: 7, holder: 'ha', protected: true, state: 'replicating' });
  });

  it('a holder serving alone: not protected, and the outdated host named', () => {
    const s = coloHaStatus({ host: 'ha', epoch: 7 }, rec({ state: 'serving', protected: false }), JSON.stringify({ host: 'hb', epoch: 7 }));
    expect(s).toMatchObject({ holder: 'ha', protected: false, state: 'serving', outdated: 'hb' });
    expect(s.why).toMatch(/without a secondary \(hb marked outdated\)/);
  });

  it('a record of an older epoch or another host says nothing about the current holder', () => {
    expect(coloHaStatus({ host: 'hb', epoch: 9 }, rec({}), undefined)).toMatchObject({ epoch: 9, holder: 'hb', protected: false, state: undefined });
    expect(coloHaStatus({ host: 'hb', epoch: 7 }, rec({}), undefined).protected).toBe(false);
  });

  it('nobody holds the role: no holder, not protected; malformed records are ignored', () => {
    expect(coloHaStatus(undefined, rec({}), 'not json')).toMatchObject({ epoch: undefined, holder: undefined, protected: false, outdated: undefined });
    expect(coloHaStatus({ host: 'ha', epoch: 7 }, '{', '').protected).toBe(false);
  });
});
