/**
 * The channel between the two agents of a pair: TLS 1.3 with mutual
 * authentication. Both sides present a certificate issued by the pair's CA
 * (`remus agent init` makes them); a certificate counts only if its subject
 * is `CN=<the other host of the config>, OU=<this cluster>`. Anything else
 * (another CA, an expired certificate, no certificate, a host of another
 * cluster signed by the same CA) is refused during or right after the
 * handshake, reported through `onRefused`, and never gets a frame read.
 *
 * Frames: u32 length (big endian) + a JSON message, at most 16 MiB.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, createServer, type PeerCertificate, type Server, type TLSSocket } from 'node:tls';
import { RemusError, defineErrorCodes, describeCause, formatSocketAddress } from '@remus/core';
import { forHost, type AgentConfig } from './config.js';

/** Error codes of the agent (namespaced `agent/...`). */
export const AgentErrors = defineErrorCodes('agent', {
  PEER_REFUSED: 'the other agent was refused: certificate, identity, cluster or epoch',
  PEER_UNREACHABLE: 'the other agent could not be reached',
  PEER_LOST: 'the connection to the other agent broke',
  FENCE_FAILED: 'the hard-fence command failed; promotion blocked',
  TLS_MATERIAL: "this host's CA, certificate or key is missing, unreadable, expired or not for this host",
});

const MAX_FRAME = 16 * 1024 * 1024;

/** This host's TLS material, checked. */
export interface TlsMaterial {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly host: string;
  readonly cluster: string;
}

/**
 * Reads the CA, certificate and key for `host` and checks them before
 * anything listens: the certificate is for `CN=host, OU=cluster`, issued by
 * the CA, and valid now. Throws `agent/TLS_MATERIAL` naming the file and fix.
 */
export function loadTls(config: AgentConfig, host: string): TlsMaterial {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(forHost(path, host));
    } catch (e) {
      throw new RemusError(AgentErrors.TLS_MATERIAL, `cannot read the ${what} ${forHost(path, host)}: ${describeCause(e)}; make a trial set with \`remus agent init\``);
    }
  };
  const ca = read('CA certificate (tls.ca)', config.tls.ca);
  const cert = read('certificate (tls.cert)', config.tls.cert);
  const key = read('key (tls.key)', config.tls.key);
  let x: X509Certificate;
  let caX: X509Certificate;
  try {
    x = new X509Certificate(cert);
    caX = new X509Certificate(ca);
  } catch (e) {
    throw new RemusError(AgentErrors.TLS_MATERIAL, `${forHost(config.tls.cert, host)} or ${config.tls.ca} is not a PEM certificate: ${describeCause(e)}`);
  }
  const id = subjectOf(x.subject);
  if (id.cn !== host || id.ou !== config.cluster) {
    throw new RemusError(AgentErrors.TLS_MATERIAL, `${forHost(config.tls.cert, host)} is for CN=${id.cn ?? '?'}, OU=${id.ou ?? '?'}, not this host (CN=${host}, OU=${config.cluster})`);
  }
  if (!x.verify(caX.publicKey)) throw new RemusError(AgentErrors.TLS_MATERIAL, `${forHost(config.tls.cert, host)} was not issued by the CA ${config.tls.ca}`);
  const now = Date.now();
  if (now > Date.parse(x.validTo) || now < Date.parse(x.validFrom)) {
    throw new RemusError(AgentErrors.TLS_MATERIAL, `${forHost(config.tls.cert, host)} is not valid now (valid ${x.validFrom} to ${x.validTo}); renew it`);
  }
  return { ca, cert, key, host, cluster: config.cluster };
}

function subjectOf(subject: string): { cn?: string; ou?: string } {
  const out: { cn?: string; ou?: string } = {};
  for (const line of subject.split('\n')) {
    const [k, ...v] = line.split('=');
    if (k === 'CN') out.cn = v.join('=');
    if (k === 'OU') out.ou = v.join('=');
  }
  return out;
}

/** Why the peer's certificate is not the expected host of this cluster, or undefined when it is. */
function identityProblem(cert: PeerCertificate | undefined, expect: string, cluster: string): string | undefined {
  if (!cert || !cert.subject) return 'no certificate';
  const cn = String(cert.subject.CN ?? '');
  const ou = String(cert.subject.OU ?? '');
  if (ou !== cluster) return `certificate of cluster ${JSON.stringify(ou)} (CN=${cn}), not of cluster ${JSON.stringify(cluster)}`;
  if (cn !== expect) return `certificate for host ${JSON.stringify(cn)}, not the peer ${JSON.stringify(expect)}`;
  return undefined;
}

/** A message on the channel. */
export type PeerMessage = { readonly t: string } & Record<string, unknown>;

/** One authenticated connection to the other agent. */
export class PeerConnection {
  readonly socket: TLSSocket;
  /** The other host's name (its certificate's CN). */
  readonly peer: string;
  #closed = false;
  #detached = false;
  #onMessage: ((m: PeerMessage) => void) | undefined;
  #onClose: ((why: string) => void) | undefined;
  readonly #listeners: [string, (...a: any[]) => void][];

  constructor(socket: TLSSocket, peer: string) {
    this.socket = socket;
    this.peer = peer;
    socket.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 4) {
        const n = buf.readUInt32BE(0);
        if (n > MAX_FRAME) return this.close(`frame of ${n} bytes exceeds ${MAX_FRAME}`);
        if (buf.length < 4 + n) break;
        let m: PeerMessage;
        try {
          m = JSON.parse(buf.subarray(4, 4 + n).toString('utf8')) as PeerMessage;
        } catch {
          return this.close('malformed frame');
        }
        buf = buf.subarray(4 + n);
        if (typeof m?.t !== 'string') return this.close('frame without a type');
        this.#onMessage?.(m);
        if (this.#closed || this.#detached) return;
      }
    };
    const onError = (e: Error): void => this.close(describeCause(e) ?? 'socket error');
    const onClose = (): void => this.close('closed by the peer');
    this.#listeners = [['data', onData], ['error', onError], ['close', onClose]];
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  }

  /**
   * Hands the socket over to another protocol (the backup's state/ack
   * frames) after the hello: this object stops reading it and sends nothing
   * more; `close()` still destroys it and `onClose` still fires once. Call
   * it synchronously after the last frame of the hello was handled, so no
   * byte of the next protocol is read here.
   */
  detach(): TLSSocket {
    this.#detached = true;
    for (const [event, f] of this.#listeners) this.socket.off(event, f);
    this.socket.once('close', () => this.close('closed'));
    return this.socket;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sets the message handler (one). */
  onMessage(f: (m: PeerMessage) => void): void {
    this.#onMessage = f;
  }

  /** Called once when the connection ends, with why. */
  onClose(f: (why: string) => void): void {
    this.#onClose = f;
  }

  /** Sends one message; false when the connection is closed. */
  send(m: PeerMessage): boolean {
    if (this.#closed || this.#detached) return false;
    const body = Buffer.from(JSON.stringify(m), 'utf8');
    const h = Buffer.allocUnsafe(4);
    h.writeUInt32BE(body.length, 0);
    this.socket.write(Buffer.concat([h, body]));
    return true;
  }

  /** Closes; idempotent. */
  close(why = 'closed'): void {
    if (this.#closed) return;
    this.#closed = true;
    this.socket.destroy();
    this.#onClose?.(why);
  }
}

export interface ListenPeerOptions {
  readonly tls: TlsMaterial;
  readonly address: { readonly host: string; readonly port: number };
  /** The only host whose certificate is accepted. */
  readonly expect: string;
  readonly onConnection: (c: PeerConnection) => void;
  /** A connection refused during or after the handshake (logged by the agent). */
  readonly onRefused: (why: string, from: string) => void;
}

/** Listens for the other agent. Resolves once listening; rejects with PEER_UNREACHABLE when the address cannot be bound. */
export async function listenPeer(o: ListenPeerOptions): Promise<Server> {
  const server = createServer({
    ca: o.tls.ca,
    cert: o.tls.cert,
    key: o.tls.key,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    handshakeTimeout: 5000,
  });
  server.on('secureConnection', (socket) => {
    const problem = identityProblem(socket.getPeerCertificate(), o.expect, o.tls.cluster);
    if (problem) {
      o.onRefused(problem, `${socket.remoteAddress}:${socket.remotePort}`);
      socket.destroy();
      return;
    }
    o.onConnection(new PeerConnection(socket, o.expect));
  });
  server.on('tlsClientError', (e, socket) => {
    // With rejectUnauthorized the socket is destroyed after verification failed; the reason is on it.
    const verify = (socket as TLSSocket & { authorizationError?: Error | string }).authorizationError;
    o.onRefused(`TLS handshake failed: ${verify ? `client certificate refused (${String(verify)})` : describeCause(e)}`, `${socket.remoteAddress}:${socket.remotePort}`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new RemusError(AgentErrors.PEER_UNREACHABLE, `cannot listen for the peer on ${formatSocketAddress(o.address)}: ${describeCause(e)}`, { cause: e })));
    server.listen(o.address.port, o.address.host, () => resolve());
  });
  return server;
}

export interface ConnectPeerOptions {
  readonly tls: TlsMaterial;
  readonly address: { readonly host: string; readonly port: number };
  /** The host whose certificate the server must present. */
  readonly expect: string;
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}

/**
 * Connects to the other agent and checks its certificate. Rejects with
 * PEER_UNREACHABLE (nothing listens, timeout), PEER_REFUSED (its
 * certificate, or ours on its side), or ABORTED.
 */
export function connectPeer(o: ConnectPeerOptions): Promise<PeerConnection> {
  const where = formatSocketAddress(o.address);
  return new Promise<PeerConnection>((resolve, reject) => {
    if (o.signal.aborted) return reject(new RemusError('ABORTED', `connecting to the peer ${o.expect} at ${where}: aborted`));
    let problem: string | undefined;
    const socket = connect({
      host: o.address.host,
      port: o.address.port,
      ca: o.tls.ca,
      cert: o.tls.cert,
      key: o.tls.key,
      minVersion: 'TLSv1.3',
      rejectUnauthorized: true,
      checkServerIdentity: (_host, cert) => {
        problem = identityProblem(cert, o.expect, o.tls.cluster);
        return problem ? new Error(problem) : undefined;
      },
    });
    const finish = (e?: RemusError): void => {
      clearTimeout(timer);
      o.signal.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      if (e) {
        socket.destroy();
        reject(e);
      }
    };
    const onAbort = (): void => finish(new RemusError('ABORTED', `connecting to the peer ${o.expect} at ${where}: aborted`));
    const onError = (e: NodeJS.ErrnoException): void => {
      const tlsFault = problem !== undefined || /certificate|CERT|SSL|TLS|alert/i.test(`${e.code ?? ''} ${e.message}`);
      finish(new RemusError(tlsFault ? AgentErrors.PEER_REFUSED : AgentErrors.PEER_UNREACHABLE, `peer ${o.expect} at ${where}: ${problem ?? describeCause(e)}`, { cause: e }));
    };
    const timer = setTimeout(() => finish(new RemusError(AgentErrors.PEER_UNREACHABLE, `peer ${o.expect} at ${where}: no TLS session within ${o.timeoutMs} ms`)), o.timeoutMs);
    o.signal.addEventListener('abort', onAbort, { once: true });
    socket.on('error', onError);
    socket.once('secureConnect', () => {
      finish();
      resolve(new PeerConnection(socket, o.expect));
    });
  });
}
