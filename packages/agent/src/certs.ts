/**
 * `remus agent init`: a CA and host certificates for a trial, made with the
 * `openssl` command (argument vectors, no shell). Subjects: the CA
 * `O=remus, OU=<cluster>, CN=remus-ca-<cluster>`; each host
 * `O=remus, OU=<cluster>, CN=<host>` with client and server usage. Keys are
 * P-256, files 0600. For production, issue the same subjects from your own
 * CA (the agent checks CN and OU, and the chain to `tls.ca`).
 */
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RemusError, runScript } from '@remus/core';

const NAME = /^[a-z][a-z0-9-]{0,31}$/;
const CLUSTER = /^[a-z0-9][a-z0-9-]{0,31}$/;

async function openssl(args: readonly string[]): Promise<void> {
  await runScript(process.env.REMUS_OPENSSL ?? 'openssl', args, { timeoutMs: 30_000 });
}

/** Makes `<dir>/ca.key` and `<dir>/ca.crt` for `cluster`. */
export async function makeCa(dir: string, cluster: string, days = 365): Promise<{ cert: string; key: string }> {
  if (!CLUSTER.test(cluster)) throw new RemusError('INVALID_ARGUMENT', `cluster ${JSON.stringify(cluster)} must be 1-32 characters of a-z, 0-9 and "-"`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = join(dir, 'ca.key');
  const cert = join(dir, 'ca.crt');
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', String(days), '-subj', `/O=remus/OU=${cluster}/CN=remus-ca-${cluster}`]);
  chmodSync(key, 0o600);
  return { cert, key };
}

/**
 * Issues `<dir>/<host>.key` and `<dir>/<host>.crt` from the CA in `caDir`.
 * `days` may be negative (a certificate that expired already: for tests of
 * refusal).
 */
export async function issueHostCert(o: { caDir: string; dir: string; cluster: string; host: string; days?: number }): Promise<{ cert: string; key: string }> {
  if (!NAME.test(o.host)) throw new RemusError('INVALID_ARGUMENT', `host ${JSON.stringify(o.host)} must be 1-32 characters of a-z, 0-9 and "-", starting with a letter`);
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const key = join(o.dir, `${o.host}.key`);
  const csr = join(o.dir, `${o.host}.csr`);
  const cert = join(o.dir, `${o.host}.crt`);
  const ext = join(o.dir, `${o.host}.ext`);
  writeFileSync(ext, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n');
  try {
    await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/O=remus/OU=${o.cluster}/CN=${o.host}`]);
    chmodSync(key, 0o600);
    await openssl(['x509', '-req', '-in', csr, '-CA', join(o.caDir, 'ca.crt'), '-CAkey', join(o.caDir, 'ca.key'), '-CAcreateserial', '-out', cert, '-days', String(o.days ?? 365), '-extfile', ext]);
  } finally {
    rmSync(csr, { force: true });
    rmSync(ext, { force: true });
  }
  return { cert, key };
}

/** A trial set: CA plus one certificate per host, in `dir`. Refuses to overwrite an existing CA. */
export async function initTrial(o: { dir: string; cluster: string; hosts: readonly string[]; days?: number }): Promise<string[]> {
  if (o.hosts.length === 0) throw new RemusError('INVALID_ARGUMENT', 'name at least one host (--host NAME, repeated)');
  if (new Set(o.hosts).size !== o.hosts.length) throw new RemusError('INVALID_ARGUMENT', `a host is named twice (${o.hosts.join(', ')})`);
  if (existsSync(join(o.dir, 'ca.key'))) throw new RemusError('INVALID_ARGUMENT', `${join(o.dir, 'ca.key')} exists: refusing to replace a CA (use another --dir)`);
  const days = o.days ?? 365;
  const made: string[] = [];
  const ca = await makeCa(o.dir, o.cluster, days);
  made.push(ca.cert, ca.key);
  for (const host of o.hosts) {
    const c = await issueHostCert({ caDir: o.dir, dir: o.dir, cluster: o.cluster, host, days });
    made.push(c.cert, c.key);
  }
  return made;
}
