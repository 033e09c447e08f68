// The peer channel's mutual authentication, on loopback with certificates made by openssl.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRemusError } from '@remus/core';
import { connectPeer, issueHostCert, listenPeer, loadTls, makeCa, validateAgentConfig, type PeerConnection, type TlsMaterial } from '../src/index.js';

let dir: string;
const port = 20000 + (process.pid % 20000);

function config(cluster: string, sub: string) {
  return validateAgentConfig({
    cluster,
    hosts: [
      { name: 'ha', peer: '10.0.0.1:7790', service: '10.0.0.1:7800' },
      { name: 'hb', peer: '10.0.0.2:7790', service: '10.0.0.2:7800' },
    ],
    etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.11:2379', '10.0.0.12:2379'] },
    tls: { ca: join(dir, sub, 'ca.crt'), cert: join(dir, sub, '{host}.crt'), key: join(dir, sub, '{host}.key') },
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'remus-agent-tls-'));
  // c1: the pair. other: another cluster's CA. c1/rogue: a host of cluster c2 signed by c1's CA.
  await makeCa(join(dir, 'c1'), 'c1');
  for (const h of ['ha', 'hb']) await issueHostCert({ caDir: join(dir, 'c1'), dir: join(dir, 'c1'), cluster: 'c1', host: h });
  await makeCa(join(dir, 'other'), 'c1');
  await issueHostCert({ caDir: join(dir, 'other'), dir: join(dir, 'other'), cluster: 'c1', host: 'ha' });
  await issueHostCert({ caDir: join(dir, 'c1'), dir: join(dir, 'expired'), cluster: 'c1', host: 'ha', days: -1 });
  await issueHostCert({ caDir: join(dir, 'c1'), dir: join(dir, 'c2'), cluster: 'c2', host: 'ha' });
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The backup hb listens with c1 material; `client` connects as ha. */
async function attempt(client: TlsMaterial): Promise<{ accepted: PeerConnection[]; refused: string[]; error?: unknown }> {
  const accepted: PeerConnection[] = [];
  const refused: string[] = [];
  const server = await listenPeer({
    tls: loadTls(config('c1', 'c1'), 'hb'),
    address: { host: '127.0.0.1', port },
    expect: 'ha',
    onConnection: (c) => {
      accepted.push(c);
      c.onMessage((m) => c.send({ t: 'echo', got: m.t }));
    },
    onRefused: (why) => refused.push(why),
  });
  try {
    let error: unknown;
    try {
      const conn = await connectPeer({ tls: client, address: { host: '127.0.0.1', port }, expect: 'hb', timeoutMs: 3000, signal: AbortSignal.timeout(5000) });
      // TLS 1.3: the server checks the client's certificate after the client considers the handshake done.
      const answer = await new Promise<string>((resolve) => {
        conn.onMessage((m) => resolve(String(m.got)));
        conn.onClose((why) => resolve(`closed: ${why}`));
        conn.send({ t: 'hello' });
      });
      if (answer !== 'hello') error = new Error(answer);
      conn.close();
    } catch (e) {
      error = e;
    }
    await new Promise((r) => setTimeout(r, 100));
    return { accepted, refused, error };
  } finally {
    for (const c of accepted) c.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

describe('peer channel: TLS with mutual authentication', () => {
  it('accepts the pair\'s other host and carries messages both ways', async () => {
    const r = await attempt(loadTls(config('c1', 'c1'), 'ha'));
    expect(r.error).toBeUndefined();
    expect(r.accepted).toHaveLength(1);
    expect(r.refused).toEqual([]);
  });

  it('refuses a certificate of another CA (logged, no connection handed on)', async () => {
    const material = { ...loadTls(config('c1', 'other'), 'ha'), ca: loadTls(config('c1', 'c1'), 'ha').ca };
    const r = await attempt(material);
    expect(r.error).toBeDefined();
    expect(r.accepted).toEqual([]);
    expect(r.refused.join(' ')).toMatch(/TLS handshake failed/);
  });

  it('refuses an expired certificate (logged, no connection handed on)', async () => {
    const good = loadTls(config('c1', 'c1'), 'ha');
    const { readFileSync } = await import('node:fs');
    const material = { ...good, cert: readFileSync(join(dir, 'expired', 'ha.crt')), key: readFileSync(join(dir, 'expired', 'ha.key')) };
    const r = await attempt(material);
    expect(r.error).toBeDefined();
    expect(r.accepted).toEqual([]);
    expect(r.refused.join(' ')).toMatch(/expired/i);
  });

  it('refuses a host of another cluster signed by the same CA', async () => {
    const good = loadTls(config('c1', 'c1'), 'ha');
    const { readFileSync } = await import('node:fs');
    const material = { ...good, cert: readFileSync(join(dir, 'c2', 'ha.crt')), key: readFileSync(join(dir, 'c2', 'ha.key')) };
    const r = await attempt(material);
    expect(r.error).toBeDefined();
    expect(r.accepted).toEqual([]);
    expect(r.refused.join(' ')).toContain('cluster "c2"');
  });

  it('a client refuses a server that is not the expected peer', async () => {
    // ha connecting "to hb" but the listener presents ha's certificate.
    const server = await listenPeer({ tls: loadTls(config('c1', 'c1'), 'ha'), address: { host: '127.0.0.1', port: port + 1 }, expect: 'hb', onConnection: (c) => c.close(), onRefused: () => undefined });
    try {
      const err = await connectPeer({ tls: loadTls(config('c1', 'c1'), 'hb'), address: { host: '127.0.0.1', port: port + 1 }, expect: 'hb', timeoutMs: 3000, signal: AbortSignal.timeout(5000) }).catch((e) => e);
      expect(isRemusError(err, 'agent/PEER_REFUSED'), String(err)).toBe(true);
      expect(String(err.message)).toContain('not the peer "hb"');
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('an agent refuses to start with its own expired certificate or one for another host', () => {
    const c = validateAgentConfig({ ...JSON.parse(JSON.stringify(config('c1', 'c1'))), tls: { ca: join(dir, 'c1', 'ca.crt'), cert: join(dir, 'expired', '{host}.crt'), key: join(dir, 'expired', '{host}.key') } });
    expect(() => loadTls(c, 'ha')).toThrow(/not valid now/);
    const d = validateAgentConfig({ ...JSON.parse(JSON.stringify(config('c1', 'c1'))), tls: { ca: join(dir, 'c1', 'ca.crt'), cert: join(dir, 'c1', 'ha.crt'), key: join(dir, 'c1', 'ha.key') } });
    expect(() => loadTls(d, 'hb')).toThrow(/CN=ha.*not this host/);
  });
});
