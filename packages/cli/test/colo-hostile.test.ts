// The colo control socket against hostile peers (issue 14.9): `remus colo
// status` survives any answer (a coded error, no stack trace), `--name` is
// validated before any path is built from it, the driver's request buffer is
// bounded, and the socket is created 0600 (umask while bound) rather than
// chmod-ed after it listens.
import { statSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_REQUEST_BYTES, serveControl } from '../src/colo/control.js';
import { tempDir } from '@remus/test-lab';
import { remus } from './helpers.js';

let dir: string;
let server: Server | undefined;
afterEach(async () => {
  if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
  server = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** A fake driver at STATE/colo-NAME.sock that answers every request with `answer`. */
async function fakeDriver(name: string, answer: string): Promise<void> {
  server = createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', () => sock.end(answer));
  });
  await new Promise<void>((resolve) => server!.listen(join(dir, `colo-${name}.sock`), resolve));
}

describe('remus colo status against a hostile driver', () => {
  it.each([
    ['not JSON', 'hello\n'],
    ['a JSON array', '[1,2,3]\n'],
    ['an unknown message type', '{"type":"boom"}\n'],
    ['a result without ok', '{"type":"result","status":{}}\n'],
    ['a status of the wrong shape', '{"type":"result","ok":true,"status":{"state":"replicating","pauseMs":7}}\n'],
    ['a status that is null', '{"type":"result","ok":true,"status":null}\n'],
    ['a failure without a code', '{"type":"result","ok":false,"error":"x"}\n'],
    ['a result, then more', '{"type":"result","ok":true,"status":{"state":"x"}}\n{"type":"event","event":{}}\n'],
    ['a line that never ends', 'x'.repeat(2 << 20)],
  ])('%s: a coded error, exit 1, no stack trace', async (_what, answer) => {
    dir = tempDir('colo').dir;
    await fakeDriver('web', answer);
    const r = await remus(['colo', 'status', '--name', 'web', '--state-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^remus: \[(cli\/CONTROL_PROTOCOL|STATE)\] /);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('--name is validated before it names a path (x/../../evil), exit 2', async () => {
    dir = tempDir('colo').dir;
    for (const name of ['x/../../evil', '../web', 'a\nb', '']) {
      const r = await remus(['colo', 'status', '--name', name, '--state-dir', dir]);
      expect(r.code, name).toBe(2);
      expect(r.stderr).toMatch(/\[INVALID_ARGUMENT\] --name \(the pair name\) .* is not valid/);
    }
  });
});

describe('the driver side of the control socket', () => {
  it('is created 0600 with the umask restored, and bounds the request it buffers', async () => {
    dir = tempDir('colo').dir;
    const path = join(dir, 'colo-t.sock');
    const before = process.umask();
    const control = await serveControl(path, async () => ({ status: { state: 'connecting' } }));
    try {
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(process.umask()).toBe(before);
      // A client that streams without a newline is answered with an error once the bound is passed, and dropped.
      const answer = await new Promise<string>((resolve) => {
        const s = connect(path);
        let out = '';
        s.on('data', (b) => (out += b.toString()));
        s.on('close', () => resolve(out));
        s.on('error', () => resolve(out));
        s.on('connect', () => {
          for (let i = 0; i < 64; i++) s.write('x'.repeat(1024));
        });
      });
      expect(answer).toMatch(new RegExp(`"ok":false.*control request longer than ${MAX_REQUEST_BYTES} bytes`));
    } finally {
      await control.close();
    }
  });
});

describe('pair file addresses go through core parseSocketAddress', () => {
  it('refuses :PORT (no host) and a port out of range in device params', async () => {
    const { validatePairConfig } = await import('../src/colo/pair.js');
    const libs = { colo: await import('@remus/colo'), qmp: await import('@remus/qmp') };
    const dev = (kind: string, params: Record<string, unknown>) => ({ id: `${kind}0`, kind, params });
    const pair = (mirror: unknown) => ({
      primary: { qmp: '/tmp/p.qmp', devices: [dev('nic', { netdev: 'hn0', mirror, compare: '127.0.0.1:9004', primaryIn: { path: '/tmp/in.sock' }, compareOut: { path: '/tmp/out.sock' } }), dev('disk', { quorum: 'q0', nbd: '127.0.0.1:9999', export: 'p0' })] },
      secondary: { qmp: '/tmp/s.qmp', devices: [dev('nic', { netdev: 'hn0', mirror: '127.0.0.1:9003', compare: '127.0.0.1:9004' }), dev('disk', { node: 'p0', nbd: '127.0.0.1:9999' })] },
      migrationUri: 'tcp:127.0.0.1:9998',
    });
    expect(validatePairConfig(pair('127.0.0.1:9003'), libs, 'web.json').name).toBe('web');
    for (const bad of [':9003', '127.0.0.1:70000', 'tcp:1.2.3.4', { host: '', port: 1 }]) {
      let problems: { path: string }[] = [];
      try {
        validatePairConfig(pair(bad), libs, 'web.json');
      } catch (e) {
        problems = (e as { details: { problems: { path: string }[] } }).details.problems;
      }
      expect(problems.map((p) => p.path), JSON.stringify(bad)).toEqual(['primary.devices[0].params.mirror']);
    }
  });
});
