/**
 * `remus backup --domain criu` and `remus failover`: the backup host of the
 * Remus path with real state (@remus/domain-criu, loaded on use).
 *
 * `remus backup --domain criu --dir DIR --listen ADDR`:
 * 1. checks CRIU on this host first (`assertCriuReady`: criu missing, "CRIU
 *    4.1 or later is needed on kernel 6.13+", not root): a host where a
 *    failover could not work is refused before anything is touched;
 * 2. receives checkpoints (`createCriuBackup`), keeping the last complete one;
 * 3. when the primary's connection closes or is silent past `--silence-ms`:
 *    with `--on-primary-lost failover` it fails over at once; with `wait`
 *    (default: without an arbiter two hosts could both run the service) it
 *    says so and waits for `remus failover --dir DIR`;
 * 4. serves `remus failover` on a control socket `DIR/.control.sock`; after
 *    a successful failover it stops receiving and exits 0 (the restored
 *    service runs on, detached).
 *
 * `remus failover --dir DIR`: asks the backup running on DIR to fail over
 * (it passes the checks it ran at its start); with no backup running there,
 * fails over itself from DIR (running the checks first). Either way the one
 * entry point is domain-criu's `failover()`, which refuses a second failover.
 */
import { existsSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { RemusError, closestName, describeCause, formatSocketAddress, parseSocketAddress } from '@remus/core';
import type { CriuReady, FailoverResult, ServiceAddress } from '@remus/domain-criu';
import { args, durationFlag, need } from '../args.js';
import type { Io } from '../io.js';
import { loadDomainCriu } from '../libs.js';
import { localListenOnly } from '../validation.js';

export const CRIU_USAGE = `  remus backup --domain criu --dir DIR --listen 127.0.0.1:PORT|PATH [--silence-ms MS]
               [--on-primary-lost wait|failover] [--service-address A.B.C.D/N --dev IFACE] [--criu PATH] [--json]
  remus failover --dir DIR [--service-address A.B.C.D/N --dev IFACE] [--criu PATH] [--json]
`;

const DOMAINS = ['process', 'criu'];

/** The value of `--domain` in `rest` (`--domain X` or `--domain=X`), checked; undefined when absent. */
export function domainFlag(rest: readonly string[]): string | undefined {
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i] as string;
    const v = a === '--domain' ? rest[i + 1] : a.startsWith('--domain=') ? a.slice('--domain='.length) : undefined;
    if (v === undefined) {
      if (a === '--domain') throw new RemusError('INVALID_ARGUMENT', `--domain needs a value: ${DOMAINS.join(' or ')}`);
      continue;
    }
    if (!DOMAINS.includes(v)) {
      const near = closestName(v, DOMAINS);
      throw new RemusError('INVALID_ARGUMENT', `--domain ${JSON.stringify(v)} is not a domain type${near ? `: did you mean "${near}"?` : ''} (use ${DOMAINS.join(' or ')})`);
    }
    return v;
  }
  return undefined;
}

/** `rest` without its `--domain` flag. */
export function withoutDomainFlag(rest: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--domain') i++;
    else if (!(rest[i] as string).startsWith('--domain=')) out.push(rest[i] as string);
  }
  return out;
}

/** The control socket of the backup on `dir`. */
export function controlPath(dir: string): string {
  const p = join(resolve(dir), '.control.sock');
  if (Buffer.byteLength(p) > 107) throw new RemusError('INVALID_ARGUMENT', `--dir ${dir}: its control socket path ${p} is longer than a Unix socket address allows (107 bytes): use a shorter directory`);
  return p;
}

function serviceAddressFlags(address: string | undefined, dev: string | undefined): ServiceAddress | undefined {
  if (address === undefined && dev === undefined) return undefined;
  if (address === undefined || dev === undefined) throw new RemusError('INVALID_ARGUMENT', '--service-address and --dev go together: the address (e.g. 10.0.0.100/24) and the interface of this host that takes it');
  if (!/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/.test(address) || address.split(/[./]/).slice(0, 4).some((x) => Number(x) > 255) || Number(address.split('/')[1]) > 32) {
    throw new RemusError('INVALID_ARGUMENT', `--service-address ${JSON.stringify(address)} is not an IPv4 address with its prefix length, e.g. 10.0.0.100/24`);
  }
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(dev)) throw new RemusError('INVALID_ARGUMENT', `--dev ${JSON.stringify(dev)} is not an interface name (at most 15 characters)`);
  return { address, dev };
}

/** Output: lines for people, one JSON event per line with --json. */
function output(io: Io, json: boolean): (type: string, line: string, data?: Record<string, unknown>) => void {
  return (type, line, data = {}) => {
    if (json) io.out.write(`${JSON.stringify({ type, time: new Date().toISOString(), ...data, message: line })}\n`);
    else io.out.write(`${line}\n`);
  };
}

function describeResult(r: FailoverResult): string {
  return `failover done: checkpoint ${r.checkpoint} restored as pid ${r.pid} in ${r.totalMs.toFixed(0)} ms (criu restore ${r.restoreMs.toFixed(0)} ms), gratuitous ARP: ${r.arp}`;
}

export async function cmdCriuBackup(rest: readonly string[], io: Io): Promise<number> {
  const v = args(withoutDomainFlag(rest), {
    dir: { type: 'string' },
    listen: { type: 'string' },
    'silence-ms': { type: 'string' },
    'on-primary-lost': { type: 'string' },
    'service-address': { type: 'string' },
    dev: { type: 'string' },
    criu: { type: 'string' },
    json: { type: 'boolean' },
  });
  const dir = resolve(need(v.dir, '--dir'));
  const listen = localListenOnly(
    parseSocketAddress(need(v.listen, '--listen'), '--listen (127.0.0.1:PORT or the path of a Unix socket)', { allowPath: true }),
    '--listen',
    'checkpoint images that a failover restores as root',
  );
  const silenceMs = durationFlag(v['silence-ms'], '--silence-ms') ?? 10_000;
  const policy = v['on-primary-lost'] ?? 'wait';
  if (policy !== 'wait' && policy !== 'failover') {
    const near = closestName(policy, ['wait', 'failover']);
    throw new RemusError('INVALID_ARGUMENT', `--on-primary-lost ${JSON.stringify(policy)} is not allowed${near ? `: did you mean "${near}"?` : ''} (wait: say so and wait for \`remus failover\`; failover: fail over at once)`);
  }
  const serviceAddress = serviceAddressFlags(v['service-address'], v.dev);
  const criuPath = v.criu;
  const ctl = controlPath(dir);
  const say = output(io, v.json ?? false);
  const lib = await loadDomainCriu('remus backup --domain criu');

  // Before anything is touched: can a failover work on this host at all?
  const ready: CriuReady = await lib.assertCriuReady({ ...(criuPath ? { criuPath } : {}), signal: AbortSignal.timeout(120_000) });
  if (!ready.softDirty) say('warning', 'no soft-dirty memory tracking on this kernel: the primary sends a full dump every checkpoint');
  if (existsSync(ctl)) {
    if (await controlAlive(ctl)) throw new RemusError('STATE', `a backup already runs on ${dir} (its control socket ${ctl} answers)`);
    rmSync(ctl, { force: true });
  }

  let failing: Promise<FailoverResult> | undefined;
  let finished: (() => void) | undefined;
  const done = new Promise<void>((r) => (finished = r));
  const runFailover = (sa: ServiceAddress | undefined, onStep: (l: string) => void): Promise<FailoverResult> => {
    if (failing) return Promise.reject(new RemusError('STATE', `a failover from ${dir} is already running`));
    const p = lib.failover({ restorePoint: dir, ready, ...(sa ?? serviceAddress ? { serviceAddress: (sa ?? serviceAddress) as ServiceAddress } : {}), onStep });
    failing = p;
    p.then(
      (r) => {
        say('failover', describeResult(r), { result: r });
        finished?.();
      },
      (e: unknown) => {
        failing = undefined;
        say('failover-failed', `failover failed: ${e instanceof RemusError ? `[${e.code}] ` : ''}${describeCause(e)}`, { error: e instanceof RemusError ? e.toJSON() : { message: describeCause(e) } });
      },
    );
    return p;
  };

  const backup = await lib.createCriuBackup({
    dir,
    listen,
    idleTimeoutMs: silenceMs,
    onCheckpoint: (p) => say('checkpoint', `checkpoint ${p.checkpoint}: restore point (${p.bytes} bytes)`, { checkpoint: p.checkpoint, bytes: p.bytes }),
    onRefused: (n, e) => say('refused', `checkpoint ${n} refused: [${e.code}] ${e.message}`, { checkpoint: n, code: e.code }),
    onPrimaryLost: (l) => {
      const at = l.restorePoint ? `restore point ${l.restorePoint.checkpoint}` : 'no complete checkpoint';
      const why = l.kind === 'closed' ? 'its connection closed' : `silent for ${l.silentMs} ms`;
      if (policy === 'failover' && l.restorePoint) {
        say('primary-lost', `primary lost (${why}), ${at}: failing over`, { kind: l.kind, restorePoint: l.restorePoint.checkpoint });
        runFailover(undefined, (s) => say('step', `failover: ${s}`)).catch(() => undefined);
      } else {
        say('primary-lost', `primary lost (${why}), ${at}: run \`remus failover --dir ${dir}\` on this host to take over`, { kind: l.kind, restorePoint: l.restorePoint?.checkpoint ?? null });
      }
    },
  });
  let control: Server | undefined;
  try {
    control = await listenControl(ctl, runFailover);
  } catch (e) {
    await backup.close();
    throw e;
  }
  say('listening', `criu backup listening on ${formatSocketAddress(backup.address)}, images in ${dir} (${ready.criu}${ready.softDirty ? '' : ', full dumps'}); \`remus failover --dir ${dir}\` takes over`, { address: formatSocketAddress(backup.address), dir });
  const onSignal = (): void => finished?.();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await done;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // The answer to a `remus failover` waiting on the control socket goes out before this process ends.
    const server = control;
    await new Promise<void>((r) => {
      server.close(() => r());
      setTimeout(r, 3000).unref();
    });
    rmSync(ctl, { force: true });
    await backup.close();
  }
  const point = backup.restorePoint();
  say('end', `criu backup stopped; restore point ${point?.checkpoint ?? 'none'}`, { restorePoint: point?.checkpoint ?? null });
  return 0;
}

function controlAlive(path: string): Promise<boolean> {
  return new Promise((r) => {
    const s = connect(path);
    const t = setTimeout(() => {
      s.destroy();
      r(false);
    }, 2000);
    s.on('connect', () => {
      clearTimeout(t);
      s.destroy();
      r(true);
    });
    s.on('error', () => {
      clearTimeout(t);
      r(false);
    });
  });
}

/** Control socket: one JSON line `{ "op": "failover", "serviceAddress"? }` in; `step` lines, then `done` or `error`, out. */
function listenControl(path: string, run: (sa: ServiceAddress | undefined, onStep: (l: string) => void) => Promise<FailoverResult>): Promise<Server> {
  const server = createServer((s: Socket) => {
    s.on('error', () => undefined);
    s.setTimeout(10_000, () => s.destroy());
    const send = (o: unknown): void => void (s.writable && s.write(`${JSON.stringify(o)}\n`));
    const rl = createInterface({ input: s });
    rl.once('line', (line) => {
      s.setTimeout(0);
      rl.close();
      let req: { op?: unknown; serviceAddress?: unknown };
      try {
        req = JSON.parse(line.slice(0, 4096)) as typeof req;
      } catch {
        req = {};
      }
      if (req.op !== 'failover') {
        send({ type: 'error', error: { code: 'INVALID_ARGUMENT', message: 'unknown control request' } });
        s.end();
        return;
      }
      const sa = req.serviceAddress as ServiceAddress | undefined;
      run(sa, (l) => send({ type: 'step', line: l })).then(
        (r) => {
          send({ type: 'done', result: r });
          s.end();
        },
        (e: unknown) => {
          send({ type: 'error', error: e instanceof RemusError ? e.toJSON() : { code: 'OP_FAILED', message: describeCause(e) } });
          s.end();
        },
      );
    });
  });
  return new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => {
      server.off('error', rej);
      res(server);
    });
  });
}

export async function cmdFailover(rest: readonly string[], io: Io): Promise<number> {
  const v = args(withoutDomainFlag(rest), {
    dir: { type: 'string' },
    'service-address': { type: 'string' },
    dev: { type: 'string' },
    criu: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (domainFlag(rest) === 'process') throw new RemusError('INVALID_ARGUMENT', 'remus failover is for the criu domain (a process domain has no state to restore)');
  const dir = resolve(need(v.dir, '--dir'));
  const serviceAddress = serviceAddressFlags(v['service-address'], v.dev);
  const ctl = controlPath(dir);
  const say = output(io, v.json ?? false);
  const fail = (e: { code?: string; message?: string }): number => {
    if (v.json) say('error', `failover failed: [${e.code ?? 'OP_FAILED'}] ${e.message ?? ''}`, { error: e });
    else io.err.write(`remus: failover failed: [${e.code ?? 'OP_FAILED'}] ${e.message ?? ''}\n`);
    return 1;
  };
  const sock = existsSync(ctl) ? await connectControl(ctl) : undefined;
  if (sock) {
    say('step', `asking the backup running on ${dir} to fail over`);
    sock.write(`${JSON.stringify({ op: 'failover', ...(serviceAddress ? { serviceAddress } : {}) })}\n`);
    const deadline = setTimeout(() => sock.destroy(new RemusError('TIMEOUT', 'the backup did not answer the failover request within 300 s')), 300_000);
    try {
      for await (const line of createInterface({ input: sock })) {
        const m = JSON.parse(line) as { type: string; line?: string; result?: FailoverResult; error?: { code?: string; message?: string } };
        if (m.type === 'step') say('step', `failover: ${m.line}`);
        else if (m.type === 'done' && m.result) {
          say('failover', describeResult(m.result), { result: m.result });
          return 0;
        } else if (m.type === 'error') return fail(m.error ?? {});
      }
    } catch (e) {
      return fail({ code: (e as RemusError).code, message: describeCause(e) });
    } finally {
      clearTimeout(deadline);
      sock.destroy();
    }
    return fail({ code: 'LINK_BROKEN', message: 'the backup closed the control connection without an answer' });
  }
  // No backup runs on DIR: fail over from its images here (the checks run first).
  const lib = await loadDomainCriu('remus failover');
  try {
    const r = await lib.failover({ restorePoint: dir, ...(serviceAddress ? { serviceAddress } : {}), ...(v.criu ? { criuPath: v.criu } : {}), onStep: (s) => say('step', `failover: ${s}`) });
    say('failover', describeResult(r), { result: r });
    return 0;
  } catch (e) {
    if (e instanceof RemusError) return fail(e.toJSON() as { code: string; message: string });
    throw e;
  }
}

function connectControl(path: string): Promise<Socket | undefined> {
  return new Promise((r) => {
    const s = connect(path);
    const t = setTimeout(() => {
      s.destroy();
      r(undefined);
    }, 5000);
    s.once('connect', () => {
      clearTimeout(t);
      r(s);
    });
    s.once('error', () => {
      clearTimeout(t);
      r(undefined);
    });
  });
}
