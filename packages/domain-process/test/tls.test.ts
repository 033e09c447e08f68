// The state/ack protocol over TLS sockets (what @remus/agent gives it): a
// self-signed certificate made with openssl (argument vector) in a temp dir.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { nextEvent, pollUntil } from '@remus/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupErrors, BackupLink, BackupServer } from '../src/index.js';

let dir: string;
let key: Buffer;
let cert: Buffer;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'remus-backup-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  key = readFileSync(join(dir, 'key.pem'));
  cert = readFileSync(join(dir, 'cert.pem'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function tlsPair(backup: BackupServer): Promise<{ client: TLSSocket; close: () => void }> {
  const server = createServer({ key, cert }, (s) => backup.accept(s));
  server.listen(0, '127.0.0.1');
  await nextEvent(server, 'listening', { what: 'tls listen', timeoutMs: 5000 });
  const client = connect({ host: '127.0.0.1', port: (server.address() as { port: number }).port, ca: cert });
  await nextEvent(client, 'secureConnect', { what: 'tls connect', timeoutMs: 5000, rejectOn: ['error'] });
  return { client, close: () => server.close() };
}

describe('over TLS', () => {
  it('checkpoints of 0 B to 4 MiB go 1..N with acks, epochs carried', async () => {
    const backup = BackupServer.create();
    const { client, close } = await tlsPair(backup);
    try {
      const link = BackupLink.over(client, { epoch: 9 });
      const sizes = [0, 1, 1000, 65_537, 4 << 20];
      for (const [i, n] of sizes.entries()) {
        link.send(i + 1, Buffer.alloc(n, i + 1));
        await link.waitAck(i + 1, AbortSignal.timeout(10_000));
      }
      expect(backup.latest.equals(Buffer.alloc(4 << 20, sizes.length))).toBe(true);
      expect(backup.stats).toMatchObject({ acked: sizes.length, lastCheckpoint: sizes.length, lastEpoch: 9 });
      link.close();
      await pollUntil(() => backup.stats.connections === 0, { what: 'the close', timeoutMs: 5000, intervalMs: 5 });
    } finally {
      close();
      await backup.close();
    }
  });

  it('a second TLS primary of the same epoch is refused with BUSY and learns it', async () => {
    const backup = BackupServer.create();
    const a = await tlsPair(backup);
    const b = await tlsPair(backup);
    try {
      const first = BackupLink.over(a.client, { epoch: 1 });
      first.send(1, Buffer.from('first'));
      await first.waitAck(1, AbortSignal.timeout(5000));
      const second = BackupLink.over(b.client, { epoch: 1 });
      second.send(1, Buffer.from('second'));
      await expect(second.waitAck(1, AbortSignal.timeout(5000))).rejects.toMatchObject({ code: BackupErrors.BUSY });
      expect(backup.latest.toString()).toBe('first');
      first.close();
    } finally {
      a.close();
      b.close();
      await backup.close();
    }
  });
});
