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
 *
 * Both ends distrust the other: a request line is at most
 * {@link MAX_REQUEST_BYTES} and must arrive within {@link REQUEST_TIMEOUT_MS};
 * an answer line is at most {@link MAX_ANSWER_LINE_BYTES}, and any line that
 * is not one of the messages above fails the request with
 * `cli/CONTROL_PROTOCOL` (never an exception out of an event handler). The
 * socket is created with mode 0600 (umask during bind), not chmod-ed after.
 */
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { RemusError, defineErrorCodes, describeCause } from '@remus/core';

/** The CLI's own error codes (namespaced `cli/`). */
export const CliErrors = defineErrorCodes('cli', {
  CONTROL_PROTOCOL: 'a control socket peer sent something that is not the control protocol',
});

/** Longest request line the driver reads (a request is a few dozen bytes). */
export const MAX_REQUEST_BYTES = 4096;
/** Time a client has to send its request line. */
export const REQUEST_TIMEOUT_MS = 10_000;
/** Longest answer line the client reads (a status is a few KiB). */
export const MAX_ANSWER_LINE_BYTES = 1 << 20;

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
    // A client that sends nothing is dropped; the timer stops once the request is in.
    sock.setTimeout(REQUEST_TIMEOUT_MS, () => sock.destroy());
    sock.on('data', (b: Buffer) => {
      buf += b.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0 && buf.length <= MAX_REQUEST_BYTES) return;
      sock.removeAllListeners('data');
      sock.setTimeout(0);
      const write = (o: Record<string, unknown>): void => {
        if (!sock.destroyed) sock.write(`${JSON.stringify(o)}\n`);
      };
      if (nl < 0 || nl > MAX_REQUEST_BYTES) {
        write({ type: 'result', ok: false, error: { code: 'INVALID_ARGUMENT', message: `control request longer than ${MAX_REQUEST_BYTES} bytes` } });
        sock.end();
        sock.destroySoon?.();
        return;
      }
      const line = buf.slice(0, nl);
      buf = '';
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
  // Only its owner (root) may fail the pair over or stop it: the socket is made 0600 (umask 0177 while it is bound).
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(umask);
  }
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

/** Parses one request line; INVALID_ARGUMENT for anything but the three requests. */
export function parseRequest(line: string): ControlRequest {
  let r: unknown;
  try {
    r = JSON.parse(line);
  } catch {
    throw new RemusError('INVALID_ARGUMENT', 'control request is not JSON');
  }
  const o = (r !== null && typeof r === 'object' ? r : {}) as { command?: unknown; to?: unknown };
  if (o.command === 'status' || o.command === 'stop') return { command: o.command };
  if (o.command === 'failover' && (o.to === 'primary' || o.to === 'secondary')) return { command: 'failover', to: o.to };
  throw new RemusError('INVALID_ARGUMENT', `unknown control request ${line.length > 200 ? `${line.slice(0, 200)}...` : line}`);
}

/**
 * Parses one answer line: an event (`{type: "event", event: {...}}`) or the
 * result (`{type: "result", ok: boolean, error?: {code, message}}`).
 * Throws `cli/CONTROL_PROTOCOL` for anything else.
 */
export function parseAnswer(line: string): { type: 'event'; event: Record<string, unknown> } | { type: 'result'; result: ControlResult } {
  const bad = (why: string): never => {
    throw new RemusError(CliErrors.CONTROL_PROTOCOL, `the colo driver answered ${why}: ${line.length > 120 ? `${line.slice(0, 120)}...` : line}`);
  };
  let m: unknown;
  try {
    m = JSON.parse(line);
  } catch {
    return bad('something that is not JSON');
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return bad('something that is not a message object');
  const o = m as Record<string, unknown>;
  if (o.type === 'event') {
    if (o.event === null || typeof o.event !== 'object' || Array.isArray(o.event)) return bad('an event without an event object');
    return { type: 'event', event: o.event as Record<string, unknown> };
  }
  if (o.type !== 'result') return bad('a message of unknown type');
  if (typeof o.ok !== 'boolean') return bad('a result without ok');
  const err = o.error as { code?: unknown; message?: unknown } | undefined;
  if (!o.ok && (err === null || typeof err !== 'object' || typeof err.code !== 'string' || typeof err.message !== 'string')) return bad('a failure without error code and message');
  const { type: _type, ...rest } = o;
  return { type: 'result', result: rest as unknown as ControlResult };
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
    let failed = false;
    const fail = (e: RemusError): void => {
      if (failed) return;
      failed = true;
      clearTimeout(t);
      s.destroy();
      reject(e);
    };
    s.on('data', (b: Buffer) => {
      if (failed) return;
      buf += b.toString('utf8');
      let nl: number;
      try {
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (result) throw new RemusError(CliErrors.CONTROL_PROTOCOL, `the colo driver at ${path} sent more after its result`);
          const msg = parseAnswer(line);
          if (msg.type === 'event') onEvent(msg.event);
          else result = msg.result;
        }
        if (buf.length > MAX_ANSWER_LINE_BYTES) throw new RemusError(CliErrors.CONTROL_PROTOCOL, `the colo driver at ${path} sent a line longer than ${MAX_ANSWER_LINE_BYTES} bytes`);
      } catch (e) {
        fail(e instanceof RemusError ? e : new RemusError(CliErrors.CONTROL_PROTOCOL, describeCause(e) ?? 'bad answer', { cause: e }));
      }
    });
    s.on('error', (e) => fail(new RemusError('STATE', `no remus colo driver answers at ${path} (${e.message})`, { cause: e })));
    s.once('close', () => {
      if (failed) return;
      clearTimeout(t);
      if (result) resolve(result);
      else reject(new RemusError('STATE', `the colo driver at ${path} closed the connection without a result`));
    });
  });
}
