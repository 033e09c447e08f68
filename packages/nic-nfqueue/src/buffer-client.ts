/**
 * The subkind's side of a buffer: {@link BufferProcess} starts one in another
 * network namespace, sends requests over its pipe, matches replies, and
 * notices when it dies; {@link InProcessBuffer} runs the same buffer in this
 * process, for devices in this process's own namespace. Both are a
 * {@link BufferEndpoint}.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { abortError, raceSignal, RemusError, withDeadline } from '@remus/core';
import type { QueueStats, Reply, Request } from './buffer-protocol.js';
import { NfqueueBuffer, REPORT_INTERVAL_MS } from './queue-buffer.js';

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
 * Where a device's buffer runs: a buffer process in another namespace, or
 * this process. Requests are handled one at a time, in the order sent.
 */
export interface BufferEndpoint {
  /** The namespace the buffer's socket lives in (undefined: this process's). */
  readonly netns: string | undefined;
  /** Pid of the process that holds the socket. */
  readonly pid: number | undefined;
  /** False once the buffer is gone (its process exited, or it was stopped); the kernel then drops what it held. */
  readonly alive: boolean;
  /** The latest figures of a queue (updated by every reply and every ~250 ms while they change). */
  latestStats(queue: number): QueueStats | undefined;
  /** Why the buffer is gone, for error messages. */
  describeExit(): string;
  /**
   * Sends one request and waits for its reply, at most `timeoutMs`, and no
   * longer than `signal` allows (core's `withDeadline`). Rejects with OP_FAILED
   * (the buffer said no or is gone), TIMEOUT, or ABORTED (or the signal's
   * own RemusError reason, e.g. the engine's op TIMEOUT).
   */
  request(req: WithoutId<Request>, signal: AbortSignal, timeoutMs: number): Promise<OkReply>;
  /** Closes the socket (its queues are unbound, the kernel drops what they held); resolves once it is closed. Idempotent. */
  stop(): Promise<void>;
}

/**
 * One running buffer process. `alive` turns false once it exits; from then
 * on every request fails (and the kernel drops what its queues held).
 */
export class BufferProcess implements BufferEndpoint {
  readonly netns: string | undefined;
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (r: OkReply) => void; reject: (e: unknown) => void }>();
  #nextId = 1;
  #exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #stderr = '';
  readonly #exitWaiters: (() => void)[] = [];
  /** Latest figures per queue, from replies and the process's periodic reports. */
  readonly #latest = new Map<number, QueueStats>();
  /** Profiling (the benchmark sets REMUS_NFQ_TRACE): releases carry the time they were written (see NfqueueBuffer.traceRelease). */
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

/**
 * The buffer in this process, for devices in this process's own network
 * namespace: the same {@link NfqueueBuffer} a buffer process runs, without
 * the pipe and the second process to wake (a checkpoint op is a netlink
 * message, not two pipe crossings). Its packet messages are read on this
 * process's event loop (a few dozen bytes each: the copy range is 1 byte).
 * Fail closed as a buffer process is: when this process dies, the kernel
 * unbinds its queues and drops what they held.
 */
export class InProcessBuffer implements BufferEndpoint {
  readonly netns = undefined;
  readonly #buffer: NfqueueBuffer;
  readonly #latest = new Map<number, QueueStats>();
  readonly #timer: NodeJS.Timeout;
  #chain: Promise<unknown> = Promise.resolve();
  #nextId = 1;

  private constructor(buffer: NfqueueBuffer) {
    this.#buffer = buffer;
    this.#timer = setInterval(() => {
      for (const s of this.#buffer.takeReport() ?? []) this.#latest.set(s.queue, s);
    }, REPORT_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Opens the netlink socket in this process's namespace. Rejects with ABORTED, or OP_FAILED when the socket cannot be opened. */
  static open(signal: AbortSignal): InProcessBuffer {
    if (signal.aborted) throw abortError(signal, 'in-process buffer open');
    try {
      return new InProcessBuffer(new NfqueueBuffer({ onError: (m) => process.emitWarning(`nic-nfqueue in-process buffer: ${m}`) }));
    } catch (e) {
      throw new RemusError('OP_FAILED', `nic-nfqueue: opening a netfilter netlink socket in this process failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }

  /** This process: it holds the socket. */
  get pid(): number {
    return process.pid;
  }

  get alive(): boolean {
    return this.#buffer.open;
  }

  latestStats(queue: number): QueueStats | undefined {
    return this.#latest.get(queue);
  }

  describeExit(): string {
    return this.alive ? 'running' : 'stopped (its socket is closed)';
  }

  request(req: WithoutId<Request>, signal: AbortSignal, timeoutMs: number): Promise<OkReply> {
    if (!this.alive) {
      return Promise.reject(new RemusError('OP_FAILED', `in-process buffer is ${this.describeExit()}; the NIC's output is being dropped`));
    }
    const what = `in-process buffer to answer ${req.op}`;
    if (signal.aborted) return Promise.reject(abortError(signal, what));
    const full = { ...req, id: this.#nextId++ } as Request;
    const written = this.#buffer.tracing ? process.hrtime.bigint() : 0n;
    // One at a time, in order, as a buffer process handles its lines; a request that timed out still runs.
    const handled = this.#chain.then(async () => {
      const reply = await this.#buffer.handle(full);
      if (req.op === 'release') this.#buffer.traceRelease(written, written);
      return reply;
    });
    this.#chain = handled.catch(() => undefined);
    const answered = handled.then((reply) => {
      if (!reply.ok) throw new RemusError('OP_FAILED', `in-process buffer: ${reply.error}`, { details: { errno: reply.errno } });
      if (reply.stats) this.#latest.set(reply.stats.queue, reply.stats);
      return reply;
    });
    // A checkpoint op arms no timer: each kernel message the buffer waits for has its own
    // limit (2 s), and `signal` (the engine's op timeout) cuts the wait short. Others get
    // `timeoutMs` as well.
    if (req.op === 'mark' || req.op === 'release') return raceSignal(answered, signal, () => abortError(signal, what));
    return withDeadline(() => answered, { what, timeoutMs, signal });
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#buffer.close();
  }
}

export type { QueueStats };
