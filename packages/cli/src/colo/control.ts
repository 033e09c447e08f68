/**
 * The control socket of a running `remus colo start`: a unix socket at
 * `STATE_DIR/colo-<name>.sock` through which `remus colo status`, `failover`
 * and `stop` reach the driver (so fencing happens in the process that runs
 * the watchdog).
 *
 * Protocol, one JSON object per line: the client sends one request
 * (`{"command":"status"}`, `{"command":"failover","to":"secondary"}`,
 * `{"command":"stop"}`); the server answers with any number of
 * `{"type":"event","event":{...}}` lines (driver events while the request
 * runs) and one `{"type":"result","ok":true,...}` or
 * `{"type":"result","ok":false,"error":{code,message}}`, then closes.
 */
import { chmodSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { RemusError, describeCause } from '@remus/core';

export type ControlRequest = { readonly command: 'status' } | { readonly command: 'failover'; readonly to: 'primary' | 'secondary' } | { readonly command: 'stop' };

export interface ControlResult {
  readonly ok: boolean;
  readonly error?: { readonly code: string; readonly message: string };
  readonly [key: string]: unknown;
}

/** Handles a request: `send` streams events to the client; the resolved value is the result's body. */
export type ControlHandler = (req: ControlRequest, send: (event: Record<string, unknown>) => void) => Promise<Record<string, unknown>>;

/** The control socket path of pair `name`. */
export function controlSocketPath(stateDir: string, name: string): string {
  return join(stateDir, `colo-${name}.sock`);
}

/** Names of pairs with a control socket in `stateDir` (live or stale). */
export function controlSocketNames(stateDir: string): string[] {
  try {
    return readdirSync(stateDir)
      .map((n) => /^colo-(.+)\.sock$/.exec(n)?.[1])
      .filter((n): n is string => n !== undefined);
  } catch {
    return [];
  }
}

/** True when a server answers on `path` (a left-over socket file of a dead driver does not). */
export function socketLive(path: string, timeoutMs = 2000): Promise<boolean> {
  if (!existsSync(path)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (v: boolean): void => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Serves `handler` on `path` (a stale socket file there is replaced; a live one is an error). */
export async function serveControl(path: string, handler: ControlHandler): Promise<{ close: () => Promise<void> }> {
  if (await socketLive(path)) throw new RemusError('STATE', `a remus colo driver already serves ${path}`);
  rmSync(path, { force: true });
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    sock.on('data', (b: Buffer) => {
      buf += b.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0 || sock.readableEnded) return;
      const line = buf.slice(0, nl);
      buf = '';
      sock.removeAllListeners('data');
      const write = (o: Record<string, unknown>): void => {
        if (!sock.destroyed) sock.write(`${JSON.stringify(o)}\n`);
      };
      void (async () => {
        try {
          const req = parseRequest(line);
          const body = await handler(req, (event) => write({ type: 'event', event }));
          write({ type: 'result', ok: true, ...body });
        } catch (e) {
          write({ type: 'result', ok: false, error: { code: e instanceof RemusError ? e.code : 'OP_FAILED', message: describeCause(e) ?? 'unknown failure' } });
        }
        sock.end();
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  // Only its owner (root) may fail the pair over or stop it.
  chmodSync(path, 0o600);
  return {
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.end();
      });
      rmSync(path, { force: true });
    },
  };
}

function parseRequest(line: string): ControlRequest {
  let r: { command?: unknown; to?: unknown };
  try {
    r = JSON.parse(line) as typeof r;
  } catch {
    throw new RemusError('INVALID_ARGUMENT', 'control request is not JSON');
  }
  if (r.command === 'status' || r.command === 'stop') return { command: r.command };
  if (r.command === 'failover' && (r.to === 'primary' || r.to === 'secondary')) return { command: 'failover', to: r.to };
  throw new RemusError('INVALID_ARGUMENT', `unknown control request ${line}`);
}

/**
 * Sends `req` to the driver at `path`; calls `onEvent` for each streamed
 * event; resolves with the result. Rejects with STATE when nothing serves
 * the socket, TIMEOUT after `timeoutMs`.
 */
export function requestControl(path: string, req: ControlRequest, onEvent: (e: Record<string, unknown>) => void, timeoutMs: number): Promise<ControlResult> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let buf = '';
    let result: ControlResult | undefined;
    const t = setTimeout(() => {
      s.destroy();
      reject(new RemusError('TIMEOUT', `no answer from the colo driver at ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => s.write(`${JSON.stringify(req)}\n`));
    s.on('data', (b: Buffer) => {
      buf += b.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { type: string; event?: Record<string, unknown> } & ControlResult;
        buf = buf.slice(nl + 1);
        if (msg.type === 'event' && msg.event) onEvent(msg.event);
        else if (msg.type === 'result') {
          const { type: _type, ...rest } = msg;
          result = rest;
        }
      }
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(new RemusError('STATE', `no remus colo driver answers at ${path} (${e.message})`, { cause: e }));
    });
    s.once('close', () => {
      clearTimeout(t);
      if (result) resolve(result);
      else reject(new RemusError('STATE', `the colo driver at ${path} closed the connection without a result`));
    });
  });
}
