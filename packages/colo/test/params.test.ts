/**
 * COLO device params are defined once (COLO_DEVICE_PARAMS): the subkinds
 * declare and check them for the core before anything is touched, and a pair
 * file checker lists every problem with the same definition.
 */
import { describe, expect, it } from 'vitest';
import { checkDevices } from '@remus/core';
import { COLO_DEVICE_PARAMS, coloParamProblems, coloPrimaryOps, coloSecondaryOps } from '../src/index.js';

const primaryNic = { netdev: 'hn0', mirror: '127.0.0.1:9003', compare: { host: '127.0.0.1', port: 9004 }, primaryIn: { path: '/run/colo/pri.sock' }, compareOut: '127.0.0.1:9005' };

describe('COLO device params', () => {
  it("every subkind declares both sides' params of its kind from the one definition (one spec may serve both lists)", () => {
    const [pNic, pDisk] = coloPrimaryOps({ qmp: '/run/p.qmp' });
    const [sNic, sDisk] = coloSecondaryOps({ qmp: '/run/s.qmp' });
    const both = (kind: 'nic' | 'disk') => [...new Set([...Object.keys(COLO_DEVICE_PARAMS.primary[kind]), ...Object.keys(COLO_DEVICE_PARAMS.secondary[kind])])].sort();
    for (const ops of [pNic, sNic]) expect([...ops!.params!].sort()).toEqual(both('nic'));
    for (const ops of [pDisk, sDisk]) expect([...ops!.params!].sort()).toEqual(both('disk'));
    // A spec with both sides' nic params passes both lists' checks.
    const shared = { id: 'nic0', kind: 'nic', params: { ...primaryNic, reconnectSeconds: 2 } };
    expect(checkDevices(coloPrimaryOps({ qmp: '/run/p.qmp' }), [shared])).toEqual([]);
    expect(checkDevices(coloSecondaryOps({ qmp: '/run/s.qmp' }), [shared])).toEqual([]);
  });

  it('lists every problem of a device: unknown (with the closest name), missing, malformed', () => {
    expect(coloParamProblems('primary', 'nic', primaryNic)).toEqual([]);
    const problems = coloParamProblems('primary', 'nic', { ...primaryNic, mirorr: 'x', mirror: ':9003', netdev: '0bad', compareOut: undefined });
    expect(problems.map((p) => p.param).sort()).toEqual(['compareOut', 'mirorr', 'mirror', 'netdev']);
    expect(problems.find((p) => p.param === 'mirorr')?.message).toMatch(/did you mean "mirror"/);
    expect(problems.find((p) => p.param === 'compareOut')?.message).toBe('is missing');
    expect(coloParamProblems('secondary', 'nic', { netdev: 'hn0', mirror: 'h:1', compare: 'h:2', reconnectSeconds: 0 }).map((p) => p.param)).toEqual(['reconnectSeconds']);
    expect(coloParamProblems('secondary', 'disk', { node: 'parent0', nbd: '127.0.0.1:9999' })).toEqual([]);
  });

  it('the core checks them before anything is touched: bad COLO params are errors, non-COLO devices are left to match', () => {
    const ops = coloPrimaryOps({ qmp: '/run/p.qmp' });
    expect(checkDevices(ops, [{ id: 'nic0', kind: 'nic', params: primaryNic }])).toEqual([]);
    const problems = checkDevices(ops, [
      { id: 'nic0', kind: 'nic', params: { ...primaryNic, primaryIn: 'nowhere' } },
      { id: 'disk0', kind: 'disk', params: { quorum: 'colo-disk0', nbd: '127.0.0.1:9999' } },
    ]);
    expect(problems).toEqual([
      expect.objectContaining({ code: 'INVALID_ARGUMENT', device: 'nic0', message: expect.stringContaining('params.primaryIn') }),
      expect.objectContaining({ code: 'INVALID_ARGUMENT', device: 'disk0', message: expect.stringContaining('params.export is missing') }),
    ]);
  });
});
