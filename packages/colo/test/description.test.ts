/**
 * A pair described as data (what a CLI reads from JSON) becomes driver
 * options; a bad field is refused with INVALID_ARGUMENT naming it; the
 * described fence runs real commands (no shell).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { coloPairOptions, commandFence } from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), `remus-colo-desc-${process.pid}-`));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const good = {
  primary: { qmp: '/run/pri.qmp', qmpEvents: '/run/pri-ev.qmp', pid: 4242, devices: [{ id: 'nic0', kind: 'nic', params: { netdev: 'hn0' } }] },
  secondary: { qmp: '127.0.0.1:4444', devices: [{ id: 'disk0', kind: 'disk' }] },
  migrationUri: 'tcp:127.0.0.1:9998',
  checkpointDelayMs: 2000,
  operationId: 'pair1',
  watchdog: { intervalMs: 100, misses: 2 },
};

describe('coloPairOptions', () => {
  it('turns a JSON description into ColoPair options, keeping exactly the given fields', () => {
    const o = coloPairOptions(JSON.parse(JSON.stringify(good)));
    expect(o).toEqual({ ...good, watchdog: { intervalMs: 100, misses: 2 } });
    expect(coloPairOptions({ ...good, watchdog: false }).watchdog).toBe(false);
    expect(coloPairOptions({ ...good, fence: { detach: { primary: ['true'] } } }).fence).toMatchObject({ attach: expect.any(Function), detach: expect.any(Function) });
  });

  it.each([
    [{ ...good, primary: undefined }, 'primary must be an object'],
    [{ ...good, migrationUri: 7 }, 'migrationUri must be a non-empty string'],
    [{ ...good, secondary: { qmp: 'x', devices: [] } }, 'secondary.devices must be a non-empty array'],
    [{ ...good, secondary: { qmp: 'x', devices: [{ id: 'd', kind: 5 }] } }, 'secondary.devices[0].kind must be a non-empty string'],
    [{ ...good, primary: { ...good.primary, pid: -1 } }, 'primary.pid must be an integer'],
    [{ ...good, watchdog: { misses: 0 } }, 'watchdog.misses must be an integer 1-1000'],
    [{ ...good, checkpointDelayMs: 1.5 }, 'checkpointDelayMs must be an integer'],
    [{ ...good, operationId: 'a.b' }, 'operation id "a.b" is not valid'],
    [{ ...good, fence: { detach: { primary: 'ip link' } } }, 'fence.detach.primary must be a non-empty array of strings'],
  ])('refuses a bad field with INVALID_ARGUMENT naming it (%#)', (value, message) => {
    expect(() => coloPairOptions(value)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining(message) }));
  });
});

describe('commandFence', () => {
  it('runs the command given for a side, leaves a side without one alone, and rejects when a command fails', async () => {
    const file = join(dir, 'detached-primary');
    const fence = commandFence({ detach: { primary: ['touch', file], secondary: ['false'] } });
    const signal = new AbortController().signal;
    await fence.detach('primary', signal);
    expect(existsSync(file)).toBe(true);
    await fence.attach('secondary', signal); // nothing described: no-op
    await expect(fence.detach('secondary', signal)).rejects.toMatchObject({ code: 'SCRIPT_FAILED' });
  });
});
