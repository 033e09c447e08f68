// The one reader of `nic` device params shared by every NIC subkind.
import { describe, expect, it } from 'vitest';
import { NIC_PARAMS, isRemusError, missingInterface, netnsExists, readNicParams, requireNetns } from '../src/index.js';

const nic = (params?: Record<string, unknown>, id = 'vif1.0') => ({ id, kind: 'nic', params });

describe('readNicParams', () => {
  it('defaults ifname to the device id, netns to none and buffer to true', () => {
    expect(readNicParams(nic())).toEqual({ ifname: 'vif1.0', netns: undefined, buffer: true });
    expect(readNicParams(nic({ ifname: 'veth0', netns: 'guest-1', buffer: false }))).toEqual({ ifname: 'veth0', netns: 'guest-1', buffer: false });
  });

  it('refuses malformed params with INVALID_ARGUMENT naming the device and param', () => {
    const bad: [Record<string, unknown> | undefined, string, RegExp][] = [
      [{ ifname: 'a b' }, 'vif1.0', /params\.ifname/],
      [{ ifname: 'x'.repeat(16) }, 'vif1.0', /params\.ifname/],
      [undefined, 'a-device-id-longer-than-15', /params\.ifname \(default: the device id\)/],
      [{ netns: '../x' }, 'vif1.0', /params\.netns/],
      [{ buffer: 'no' }, 'vif1.0', /params\.buffer/],
      [{ buffer: 0 }, 'vif1.0', /params\.buffer/],
    ];
    for (const [params, id, message] of bad) {
      let thrown: unknown;
      try {
        readNicParams(nic(params, id));
      } catch (e) {
        thrown = e;
      }
      expect(isRemusError(thrown, 'INVALID_ARGUMENT'), JSON.stringify(params)).toBe(true);
      expect((thrown as Error).message).toMatch(message);
      expect((thrown as Error).message).toContain(id);
    }
  });

  it('names the params it reads', () => {
    expect([...NIC_PARAMS]).toEqual(['ifname', 'netns', 'buffer']);
  });
});

describe('namespace and interface errors', () => {
  it('a missing namespace is INVALID_ARGUMENT naming the device; no namespace or an existing one passes', () => {
    const name = `rmnic-none-${process.pid}`;
    expect(netnsExists(name)).toBe(false);
    expect(() => requireNetns(nic(), undefined)).not.toThrow();
    expect(() => requireNetns(nic(), name)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining(`vif1.0: network namespace ${name} does not exist`) }));
    expect(() => netnsExists('../etc')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('a missing interface is INVALID_ARGUMENT naming the device, interface and namespace', () => {
    const e = missingInterface(nic(), 'vh9', 'ns1');
    expect(e).toMatchObject({ code: 'INVALID_ARGUMENT', device: 'vif1.0', details: { ifname: 'vh9', netns: 'ns1' } });
    expect(e.message).toMatch(/interface vh9 \(network namespace ns1\) not found/);
  });
});
