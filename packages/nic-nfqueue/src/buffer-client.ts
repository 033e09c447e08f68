/**
 * The parent's side of a buffer process: starts it in a network namespace,
 * sends requests, matches replies, and notices when it dies.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { abortError, RemusError, withDeadline } from '@remus/core';
import type { QueueStats, Reply, Request } from './buffer-protocol.js';

/** How long a SIGKILLed buffer process may take to be reported gone. */
const KILL_WAIT_MS = 5000;

/** Distributive Omit, so each request variant keeps its own fields. */
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
type OkReply = Extract<Reply, { ok: true }>;

/** Where the compiled buffer process is: beside this module, or in dist/ when this runs from src/ (tests). */
function bufferProcessPath(): string {
  const here = fileURLToPath(new URL('./buffer-process.js', import.meta.url));
  if (existsSync(here)) return here;
  const built = fileURLToPath(new URL('../dist/buffer-process.js', import.meta.url));
  if (existsSync(built)) return built;
  throw new RemusError('UNSUPPORTED_HOST', `the buffer process is missing (looked for ${here} and ${built}): build @remus/nic-nfqueue first`);
}

export interface StartOptions {
  /** Network namespace (a name under /run/netns) to run in; undefined = this process's namespace. */
  readonly netns: string | undefined;
  /** `ip` command used for `ip netns exec`. */
  readonly ip: string;
  /** Time limit for the process to start and open its socket. */
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}

/**
 * One running buffer process. `alive` turns false once it exits; from then
 * on every request fails (and the kernel drops what its queues held).
 */
export class BufferProcess {
  readonly netns: string | undefined;
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (r: OkReply) => void; reject: (e: unknown) => void }>();
  #nextId = 1;
  #exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #stderr = '';
  readonly #exitWaiters: (() => void)[] = [];
  /** Latest figures per queue, from replies and the process's periodic reports. */
  readonly #latest = new Map<number, QueueStats>();
  /** Profiling (the benchmark sets REMUS_NFQ_TRACE): releases carry the time they were written (see buffer-process.ts). */
  readonly #trace = process.env.REMUS_NFQ_TRACE !== undefined;

  private constructor(netns: string | undefined, child: ChildProcess) {
    this.netns = netns;
    this.#child = child;
  }

  /** The buffer process's pid (the node process itself: `ip netns exec` execs it). */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** The latest figures of a queue (updated by every reply and every ~250 ms while they change). */
  latestStats(queue: number): QueueStats | undefined {
    return this.#latest.get(queue);
  }

  /** False once the process exited. */
  get alive(): boolean {
    return this.#exited === undefined;
  }

  /** Why the process is gone, for error messages. */
  describeExit(): string {
    if (!this.#exited) return 'running';
    const how = this.#exited.signal ? `killed by ${this.#exited.signal}` : `exited with code ${this.#exited.code}`;
    const tail = this.#stderr.trim().split('\n').slice(-3).join(' | ');
    return `${how}${tail ? `: ${tail}` : ''}`;
  }

  /**
   * Starts a buffer process and waits until it has opened its netlink socket.
   * Rejects with UNSUPPORTED_HOST / OP_FAILED / TIMEOUT / ABORTED; the process is gone then.
   */
  static async start(options: StartOptions): Promise<BufferProcess> {
    const script = bufferProcessPath();
    if (options.signal.aborted) throw abortError(options.signal, 'buffer process start');
    const [file, args] =
      options.netns === undefined
        ? [process.execPath, [script]]
        : [options.ip, ['netns', 'exec', options.netns, process.execPath, script]];
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const bp = new BufferProcess(options.netns, child);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      bp.#stderr = (bp.#stderr + d).slice(-4000);
    });
    // A write to a dead process's stdin fails with EPIPE; the exit handler reports it.
    child.stdin!.on('error', () => undefined);
    let onReady: (() => void) | undefined;
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      let msg: Reply | { ready: true } | { stats: QueueStats[] };
      try {
        msg = JSON.parse(line) as Reply | { ready: true } | { stats: QueueStats[] };
      } catch {
        return;
      }
      if ('ready' in msg) {
        onReady?.();
        return;
      }
      if ('stats' in msg && !('id' in msg)) {
        for (const s of msg.stats) bp.#latest.set(s.queue, s);
        return;
      }
      if (msg.ok && msg.stats) bp.#latest.set(msg.stats.queue, msg.stats);
      const p = bp.#pending.get(msg.id);
      if (!p) return;
      bp.#pending.delete(msg.id);
      if (msg.ok) p.resolve(msg);
      else p.reject(new RemusError('OP_FAILED', `buffer process${bp.#where()}: ${msg.error}`, { details: { errno: msg.errno } }));
    });
    child.on('error', (e) => bp.#onExit(null, null, e));
    child.on('exit', (code, signal) => bp.#onExit(code, signal));

    const onDeath = (): void => {
      failStart?.(
        new RemusError('OP_FAILED', `buffer process${bp.#where()} failed to start: ${bp.describeExit()}`, {
          details: { file, args },
        }),
      );
    };
    let failStart: ((e: unknown) => void) | undefined;
    bp.#exitWaiters.push(onDeath);
    try {
      await withDeadline(
        () =>
          new Promise<void>((resolve, reject) => {
            onReady = resolve;
            failStart = reject;
          }),
        { what: `buffer process${bp.#where()} to start`, timeoutMs: options.timeoutMs, signal: options.signal },
      );
    } catch (e) {
      bp.kill();
      throw e;
    } finally {
      onReady = undefined;
      failStart = undefined;
      const i = bp.#exitWaiters.indexOf(onDeath);
      if (i >= 0) bp.#exitWaiters.splice(i, 1);
    }
    return bp;
  }

  #where(): string {
    return this.netns === undefined ? '' : ` in netns ${this.netns}`;
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null, error?: Error): void {
    if (this.#exited) return;
    this.#exited = { code, signal };
    if (error) this.#stderr += `\n${error.message}`;
    const err = new RemusError(
      'OP_FAILED',
      `buffer process${this.#where()} is gone (${this.describeExit()}); its queues are unbound and the kernel drops the NICs' output`,
    );
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const w of this.#exitWaiters.splice(0)) w();
  }

  /**
   * Sends one request and waits for its reply, at most `timeoutMs`, and no
   * longer than `signal` allows (core's `withDeadline`). Rejects with OP_FAILED
   * (the process said no or is gone), TIMEOUT, or ABORTED (or the signal's
   * own RemusError reason, e.g. the engine's op TIMEOUT).
   */
  request(req: WithoutId<Request>, signal: AbortSignal, timeoutMs: number): Promise<OkReply> {
    if (!this.alive) {
      return Promise.reject(
        new RemusError('OP_FAILED', `buffer process${this.#where()} is gone (${this.describeExit()}); the NIC's output is being dropped`),
      );
    }
    const id = this.#nextId++;
    return withDeadline(
      (inner) =>
        new Promise<OkReply>((resolve, reject) => {
          // A late reply (after a timeout or an abort) finds no waiter and is dropped.
          inner.addEventListener('abort', () => this.#pending.delete(id), { once: true });
          this.#pending.set(id, { resolve, reject });
          const line = this.#trace && req.op === 'release' ? { ...req, id, written: String(process.hrtime.bigint()) } : { ...req, id };
          this.#child.stdin!.write(`${JSON.stringify(line)}\n`);
        }),
      { what: `buffer process${this.#where()} to answer ${req.op}`, timeoutMs, signal },
    );
  }

  /** Sends SIGKILL to the process (by its pid). */
  kill(): void {
    if (this.alive) this.#child.kill('SIGKILL');
  }

  /**
   * Stops the process: closes its stdin (it closes its socket and exits),
   * waits up to `graceMs`, then kills it. Resolves once it is gone (TIMEOUT
   * if even SIGKILL is not reported within 5 s).
   */
  async stop(graceMs = 2000): Promise<void> {
    if (!this.alive) return;
    const gone = new Promise<void>((resolve) => this.#exitWaiters.push(resolve));
    this.#child.stdin!.end();
    try {
      await withDeadline(() => gone, { what: `buffer process${this.#where()} to exit`, timeoutMs: graceMs });
      return;
    } catch {
      this.kill();
    }
    await withDeadline(() => gone, { what: `buffer process${this.#where()} to exit after SIGKILL`, timeoutMs: KILL_WAIT_MS });
  }
}

export type { QueueStats };
