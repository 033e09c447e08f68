// One error identity across copies of core; plugins' own namespaced codes.
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DESCRIPTIONS, ErrorCodes, RemusError, defineErrorCodes, isPluginErrorCode, isRemusError } from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'remus-core-copy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('error identity across copies of @remus/core', () => {
  it("a plugin's RemusError from another copy of core is recognised by code, instanceof and isRemusError", async () => {
    // A second, separately loaded copy of the built errors module: what a plugin that resolved its own core has.
    copyFileSync(new URL('../dist/errors.js', import.meta.url), join(dir, 'errors.js'));
    if (existsSync(new URL('../dist/errors.js.map', import.meta.url))) copyFileSync(new URL('../dist/errors.js.map', import.meta.url), join(dir, 'errors.js.map'));
    const other = (await import(pathToFileURL(join(dir, 'errors.js')).href)) as typeof import('../src/errors.js');
    expect(other.RemusError).not.toBe(RemusError);
    const e = new other.RemusError('DEVICE_NOT_READY', 'DRBD r0 is not Connected', { device: 'disk0' });
    expect(e).toBeInstanceOf(RemusError);
    expect(isRemusError(e, 'DEVICE_NOT_READY')).toBe(true);
    expect(new RemusError('OP_FAILED', 'x')).toBeInstanceOf(other.RemusError);
    expect(other.isRemusError(new RemusError('TIMEOUT', 't'), 'TIMEOUT')).toBe(true);
  });
  it('look-alikes are not RemusErrors; subclasses keep the ordinary instanceof', () => {
    expect({ name: 'RemusError', code: 'OP_FAILED', message: 'x' }).not.toBeInstanceOf(RemusError);
    expect(new Error('x')).not.toBeInstanceOf(RemusError);
    expect(isRemusError(null)).toBe(false);
    class QmpLikeError extends RemusError {}
    const sub = new QmpLikeError('OP_FAILED', 'x');
    expect(sub).toBeInstanceOf(RemusError);
    expect(sub).toBeInstanceOf(QmpLikeError);
    expect(new RemusError('OP_FAILED', 'y')).not.toBeInstanceOf(QmpLikeError);
  });
});

describe('plugin error codes', () => {
  it('defineErrorCodes namespaces codes and keeps their descriptions', () => {
    const codes = defineErrorCodes('acme-nic', { LINK_DOWN: 'the link went down', CARRIER_LOST: 'no carrier' });
    expect(codes.LINK_DOWN).toBe('acme-nic/LINK_DOWN');
    expect(codes[DESCRIPTIONS]['acme-nic/CARRIER_LOST']).toBe('no carrier');
    const e = new RemusError(codes.LINK_DOWN, 'eth0 lost its link', { device: 'nic0', subkind: 'nic-acme', op: 'commit' });
    expect(e.code).toBe('acme-nic/LINK_DOWN');
    expect(isRemusError(e, codes.LINK_DOWN)).toBe(true);
    expect(e.toJSON()).toMatchObject({ code: 'acme-nic/LINK_DOWN', device: 'nic0' });
  });
  it('refuses malformed namespaces and codes, and unknown un-namespaced codes', () => {
    expect(() => defineErrorCodes('Acme', { X: 'x' })).toThrow(/namespace/);
    expect(() => defineErrorCodes('core', { X: 'x' })).toThrow(/namespace/);
    expect(() => defineErrorCodes('acme', { 'lower-case': 'x' })).toThrow(/UPPER_SNAKE/);
    expect(() => defineErrorCodes('acme', { X: '' })).toThrow(/description/);
    expect(() => new RemusError('NOT_A_CODE' as never, 'x')).toThrow(/not an error code/);
    expect(isPluginErrorCode('qmp/QMP_FAILED')).toBe(true);
    expect(isPluginErrorCode('QMP_FAILED')).toBe(false);
    expect(isPluginErrorCode('/X')).toBe(false);
  });
  it("the core's table has a description for each of its codes", () => {
    for (const [code, description] of Object.entries(ErrorCodes)) {
      expect(code).toMatch(/^[A-Z][A-Z0-9_]*$/);
      expect(description.length).toBeGreaterThan(10);
    }
  });
});
