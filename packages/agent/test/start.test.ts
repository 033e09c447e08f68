// Bad input at start: etcd unreachable (clear error, nothing runs as primary), a config naming a host twice.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentMain } from '../src/index.js';
import { initTrial } from '../src/certs.js';

let dir: string;

function sink(): Writable & { text: string } {
  const w = new Writable({ write: (c, _e, cb) => ((w.text += String(c)), cb()) }) as Writable & { text: string };
  w.text = '';
  return w;
}

function writeConfig(name: string, patch: Record<string, unknown> = {}): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({
    cluster: 'c1',
    hosts: [
      { name: 'ha', peer: '10.0.0.1:7790', service: '10.0.0.1:7800' },
      { name: 'hb', peer: '10.0.0.2:7790', service: '10.0.0.2:7800' },
    ],
    // Nothing listens on these ports.
    etcd: { endpoints: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'] },
    tls: { ca: 'tls/ca.crt', cert: 'tls/{host}.crt', key: 'tls/{host}.key' },
    ttlSeconds: 2,
    stateDir: 'state/{host}',
    ...patch,
  }));
  return file;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'remus-agent-start-'));
  await initTrial({ dir: join(dir, 'tls'), cluster: 'c1', hosts: ['ha', 'hb'] });
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('agent start', () => {
  it('etcd unreachable at start: ARBITER_FAILED naming the endpoints, exit 1, nothing ran as primary', async () => {
    const out = sink();
    const err = sink();
    const code = await agentMain(['run', '--config', writeConfig('noetcd'), '--host', 'ha', '--json'], { out, err });
    expect(code).toBe(1);
    const lines = out.text.trim().split('\n').map((l) => JSON.parse(l) as { type: string; mode?: string; error?: { code: string; message: string } });
    const last = lines.at(-1);
    expect(last?.type).toBe('error');
    expect(last?.error?.code).toBe('ARBITER_FAILED');
    expect(last?.error?.message).toContain('127.0.0.1:1');
    expect(last?.error?.message).toContain('neither primary nor backup');
    expect(lines.some((l) => l.type === 'mode' && (l.mode === 'primary' || l.mode === 'campaigning'))).toBe(false);
  });

  it('a config naming the same host twice: exit 2 before anything is contacted', async () => {
    const out = sink();
    const err = sink();
    const hosts = [
      { name: 'ha', peer: '10.0.0.1:7790', service: '10.0.0.1:7800' },
      { name: 'ha', peer: '10.0.0.2:7790', service: '10.0.0.2:7800' },
    ];
    const code = await agentMain(['run', '--config', writeConfig('twice', { hosts }), '--host', 'ha'], { out, err });
    expect(code).toBe(2);
    expect(err.text).toContain('names host "ha" twice');
  });

  it('status without a running agent says so', async () => {
    const out = sink();
    const err = sink();
    const code = await agentMain(['status', '--config', writeConfig('status'), '--host', 'ha'], { out, err });
    expect(code).toBe(1);
    expect(err.text).toContain('no agent answers');
  });
});
