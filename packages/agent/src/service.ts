/**
 * The built-in protected service: a replicated counter. A client sends one
 * line per request; the service adds 1 to its counter and answers
 * `{"id","n","epoch","host"}\n` — but the answer is output, and output
 * leaves only through the checkpoint loop's commit:
 *
 * - Requests are served while the domain runs; each answer goes into the
 *   open output epoch. While the domain is suspended, requests wait.
 * - `postsuspend` of the `agent-output` device closes the epoch (its
 *   answers belong to the checkpoint being taken); `commit` releases the
 *   closed epochs' answers, stamped with the run's fencing epoch. The core
 *   calls commit only after the backup acknowledged the checkpoint and the
 *   arbiter's role check passed; teardown drops what was never released.
 * - `save` sends the counter (the whole state) to the backup.
 *
 * Invariant: every answer released carries n <= the counter of a
 * checkpoint the backup acknowledged, so a backup promoted from its last
 * acknowledged state answers only with higher n: nothing a client saw is
 * lost. Per-checkpoint work is memory and socket writes; no process.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { RemusError, describeCause, type DomainAdapter, type DomainStepContext, type SubkindOps } from '@remus/core';

/** One answer waiting for its checkpoint's commit. */
interface HeldReply {
  readonly socket: Socket;
  readonly id: string;
  readonly n: number;
}

/** What one commit released (for the `release` event and the nemesis checker). */
export interface Release {
  readonly epoch: number;
  readonly checkpoint: number;
  readonly count: number;
  /** Lowest and highest counter value released (0 when count is 0). */
  readonly first: number;
  readonly last: number;
  /** CLOCK_MONOTONIC ms (shared by every process of the machine): when the ack arrived, before the role check. */
  readonly from: number;
  /** CLOCK_MONOTONIC ms: after the last answer was written. */
  readonly to: number;
}

/** CLOCK_MONOTONIC in ms (process.hrtime), comparable across processes of one machine. */
export const monoNow = (): number => Number(process.hrtime.bigint()) / 1e6;

/** Sends checkpoint state to the backup and waits for its ack (the agent's peer session). */
export interface StateSink {
  /** Sends one whole state record (the backup keeps the last acknowledged one; a workload's `checkState` reads it). */
  send(ctx: DomainStepContext, state: Uint8Array): void;
  waitAck(ctx: DomainStepContext): Promise<void>;
}

export class CounterService {
  readonly host: string;
  #counter: number;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  #suspended = false;
  /** Requests that arrived while suspended, served at resume in arrival order. */
  #waiting: { socket: Socket; id: string }[] = [];
  /** Answers of the running (open) output epoch. */
  #open: HeldReply[] = [];
  /** Closed epochs not yet released: answers by checkpoint, oldest first. */
  #closed: { checkpoint: number; replies: HeldReply[] }[] = [];
  #ackedAt = 0;

  constructor(host: string, counter: number) {
    this.host = host;
    this.#counter = counter;
  }

  get counter(): number {
    return this.#counter;
  }

  /** Starts accepting clients on `address`. */
  async listen(address: { readonly host: string; readonly port: number }): Promise<void> {
    const server = createServer((s) => this.#serve(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new RemusError('OP_FAILED', `the counter service cannot listen on ${address.host}:${address.port}: ${describeCause(e)}`, { cause: e })));
      server.listen(address.port, address.host, () => resolve());
    });
    this.#server = server;
  }

  /** Stops: no more clients, held answers dropped (never released). Idempotent. */
  async close(): Promise<void> {
    this.#open = [];
    this.#closed = [];
    this.#waiting = [];
    for (const s of this.#sockets) s.destroy();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #serve(socket: Socket): void {
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let buf = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 1 << 20) return void socket.destroy();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const id = buf.slice(0, i).trim().slice(0, 64);
        buf = buf.slice(i + 1);
        if (this.#suspended) this.#waiting.push({ socket, id });
        else this.#answer(socket, id);
      }
    });
  }

  #answer(socket: Socket, id: string): void {
    this.#counter++;
    this.#open.push({ socket, id, n: this.#counter });
  }

  /** The loop's domain: suspend stops serving, save sends the counter, resume serves what waited, waitAck waits for the backup. */
  domain(sink: StateSink): DomainAdapter {
    return {
      name: `counter service on ${this.host}`,
      suspend: () => {
        this.#suspended = true;
      },
      save: (ctx) => sink.send(ctx, Buffer.from(JSON.stringify({ counter: this.#counter }))),
      resume: () => {
        this.#suspended = false;
        const waiting = this.#waiting;
        this.#waiting = [];
        for (const w of waiting) if (!w.socket.destroyed) this.#answer(w.socket, w.id);
      },
      waitAck: async (ctx) => {
        await sink.waitAck(ctx);
        this.#ackedAt = monoNow();
      },
    };
  }

  /** The output device (kind `agent-output`): closes the epoch at postsuspend, releases it at commit. */
  outputSubkind(onRelease: (r: Release) => void): SubkindOps {
    return {
      name: 'agent-output',
      kind: 'agent-output',
      setup: () => undefined,
      teardown: () => {
        this.#open = [];
        this.#closed = [];
      },
      postsuspend: (_h, ctx) => {
        this.#closed.push({ checkpoint: ctx.checkpoint, replies: this.#open });
        this.#open = [];
      },
      commit: (_h, ctx) => {
        const from = this.#ackedAt;
        let count = 0;
        let first = 0;
        let last = 0;
        while (this.#closed.length > 0 && (this.#closed[0] as { checkpoint: number }).checkpoint <= ctx.checkpoint) {
          const batch = this.#closed.shift() as { replies: HeldReply[] };
          for (const r of batch.replies) {
            if (r.socket.destroyed) continue;
            r.socket.write(`${JSON.stringify({ id: r.id, n: r.n, epoch: ctx.epoch, host: this.host })}\n`);
            if (count === 0) first = r.n;
            last = r.n;
            count++;
          }
        }
        onRelease({ epoch: ctx.epoch, checkpoint: ctx.checkpoint, count, first, last, from, to: monoNow() });
      },
    };
  }
}
