/**
 * The control channel: one persistent `tc [-n NS] -force -batch -` process
 * per network namespace, fed one command per line on stdin.
 *
 * Used for NICs in namespaces other than this process's (NICs in its own
 * namespace use the in-process netlink socket, rtnl.ts): a socket lives in
 * the namespace of the process that opens it and Node cannot `setns`, while
 * `tc -n NS` switches namespace itself. Cost per op is a cross-process wakeup
 * (see the README and `pnpm bench`).
 *
 * Completion without an ack option: after each command the channel writes a
 * marker line, an unknown tc object `rmk<seq>`. tc answers it on stderr with
 * `Object "rmk<seq>" is unknown`, after whatever the command printed there,
 * and stderr is unbuffered and one pipe, so everything the command said
 * arrives before its marker. With `-force`, a failed command prints
 * `Command failed -:<line>` and tc goes on; the channel counts lines, so it
 * knows whether that line was the command's (failure) or the marker's
 * (always). Commands may be pipelined: answers come back in order.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { abortError, RemusError, withDeadline } from '@remus/core';

/** One command written and not yet answered. */
interface Pending {
  readonly seq: number;
  /** stdin line number of the command (tc counts from 1). */
  readonly commandLine: number;
  readonly command: string;
  /** stderr lines the command printed, other than `Command failed`. */
  readonly said: string[];
  failed: boolean;
  /** The caller gave up (abort/timeout); the answer is still consumed in order. */
  abandoned: boolean;
  resolve(): void;
  reject(e: unknown): void;
}

const MARKER = /^Object "rmk(\d+)" is unknown/;
const FAILED_LINE = /^Command failed -:(\d+)$/;

/**
 * One `tc -force -batch -` process in one namespace. Invariants: `queue`
 * holds every command written to stdin and not yet answered, oldest first;
 * `lines` is the number of lines written so far. Once `exited` is set every
 * call fails at once: the channel is never restarted (a restart would spawn
 * inside a checkpoint).
 */
export class TcChannel {
  /** Network namespace the channel talks to; undefined = the namespace of this process. */
  readonly netns: string | undefined;
  private readonly child: ChildProcess;
  private readonly queue: Pending[] = [];
  private lines = 0;
  private seq = 0;
  private stderrBuffer = '';
  /** stderr lines that arrived with no command pending (tc start-up errors). */
  private readonly unclaimed: string[] = [];
  private exited: string | undefined;
  private readonly exitPromise: Promise<void>;

  private constructor(netns: string | undefined, tcPath: string) {
    this.netns = netns;
    const args = [...(netns === undefined ? [] : ['-n', netns]), '-force', '-batch', '-'];
    this.child = spawn(tcPath, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    this.exitPromise = new Promise((resolve) => {
      const onGone = (why: string): void => {
        if (this.exited === undefined) this.exited = why;
        this.failAll();
        resolve();
      };
      this.child.once('error', (e) => onGone(`could not run ${tcPath}: ${e.message}`));
      this.child.once('exit', (code, signal) => {
        const tail = this.unclaimed.slice(-3).join(' | ');
        onGone(`exited (${signal ?? `code ${code}`})${tail ? `: ${tail}` : ''}`);
      });
    });
    this.child.stdin!.on('error', () => undefined); // EPIPE after exit: reported through 'exit'
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (chunk: string) => this.onStderr(chunk));
  }

  /**
   * Starts the process and waits for its first answer, so a bad namespace or
   * a missing tc fails here (in setup) rather than in a checkpoint.
   */
  static async open(netns: string | undefined, options: { tcPath?: string; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<TcChannel> {
    const channel = new TcChannel(netns, options.tcPath ?? 'tc');
    try {
      await channel.roundTrip(options.signal, options.timeoutMs ?? 10_000);
    } catch (e) {
      await channel.close();
      throw e;
    }
    return channel;
  }

  /** The process id (for leak checks). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** False once the process exited or `close` was called. */
  get alive(): boolean {
    return this.exited === undefined;
  }

  /**
   * Runs one tc command (argument vector, names already validated: no
   * whitespace, quotes or `#`). Resolves when tc finished it; rejects with
   * OP_FAILED carrying what tc printed, or with the signal's reason. Never
   * spawns.
   */
  run(args: readonly string[], signal?: AbortSignal): Promise<void> {
    return this.send(args.join(' '), signal);
  }

  /** A bare marker: proves the process reads and answers. */
  private roundTrip(signal: AbortSignal | undefined, timeoutMs: number): Promise<void> {
    return withDeadline((s) => this.send('', s), { what: `tc control channel${this.where()} to answer`, timeoutMs, signal });
  }

  private send(command: string, signal?: AbortSignal): Promise<void> {
    if (this.exited !== undefined) return Promise.reject(this.goneError(command));
    if (signal?.aborted) return Promise.reject(abortError(signal, WAIT));
    const seq = ++this.seq;
    let text = '';
    let commandLine = -1;
    if (command !== '') {
      commandLine = ++this.lines;
      text += `${command}\n`;
    }
    ++this.lines;
    text += `rmk${seq}\n`;
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        entry.abandoned = true;
        reject(abortError(signal!, WAIT));
      };
      const entry: Pending = {
        seq,
        commandLine,
        command,
        said: [],
        failed: false,
        abandoned: false,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(entry);
      this.child.stdin!.write(text);
    });
  }

  private onStderr(chunk: string): void {
    this.stderrBuffer += chunk;
    let nl: number;
    while ((nl = this.stderrBuffer.indexOf('\n')) >= 0) {
      const line = this.stderrBuffer.slice(0, nl);
      this.stderrBuffer = this.stderrBuffer.slice(nl + 1);
      this.onLine(line);
    }
  }

  private onLine(line: string): void {
    const head = this.queue[0];
    const marker = MARKER.exec(line);
    if (marker) {
      if (!head || Number(marker[1]) !== head.seq) {
        // Cannot happen unless tc reorders output; fail loudly rather than misattribute.
        this.exited = `answered marker ${marker[1]} out of order`;
        this.child.kill('SIGKILL');
        return;
      }
      this.queue.shift();
      if (head.abandoned) return;
      if (!head.failed) {
        head.resolve();
        return;
      }
      const said = head.said.join(' | ') || 'no message';
      head.reject(
        new RemusError('OP_FAILED', `tc ${head.command}${this.where()} failed: ${said}`, {
          details: { command: head.command, netns: this.netns, stderr: head.said, errno: errnoOf(head.said) },
        }),
      );
      return;
    }
    const failed = FAILED_LINE.exec(line);
    if (failed) {
      if (head && Number(failed[1]) === head.commandLine) head.failed = true;
      return; // the marker's own failure line carries nothing
    }
    if (head) head.said.push(line);
    else this.unclaimed.push(line);
  }

  private failAll(): void {
    for (const p of this.queue.splice(0)) if (!p.abandoned) p.reject(this.goneError(p.command));
  }

  private goneError(command: string): RemusError {
    return new RemusError(
      'OP_FAILED',
      `control channel (tc${this.where()} -force -batch -) is gone (${this.exited}); cannot run: tc ${command || '(marker)'}`,
      { details: { netns: this.netns, command } },
    );
  }

  private where(): string {
    return this.netns === undefined ? '' : ` -n ${this.netns}`;
  }

  /**
   * Ends the process: closes its stdin (tc exits at end of input), then
   * SIGKILL after `graceMs`. Pending commands fail. Idempotent.
   */
  async close(graceMs = 2000): Promise<void> {
    if (this.exited === undefined) this.exited = 'closed';
    this.failAll();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin!.end();
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exitPromise;
      clearTimeout(timer);
    }
  }
}

/** What an aborted wait for an answer names. */
const WAIT = 'waiting for the tc control channel';

/** Best-effort errno name from what tc printed (for `details.errno`). */
function errnoOf(said: readonly string[]): string | undefined {
  const text = said.join('\n');
  if (/Cannot find device|No such device/.test(text)) return 'ENODEV';
  if (/No such file or directory|Cannot find specified qdisc/.test(text)) return 'ENOENT';
  if (/File exists|Exclusivity flag on/.test(text)) return 'EEXIST';
  if (/Invalid argument|Invalid qdisc name/.test(text)) return 'EINVAL';
  return undefined;
}
