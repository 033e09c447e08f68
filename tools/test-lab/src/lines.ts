import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * A child process (argument vector, no shell) whose stdout lines are
 * collected, with a bounded wait on them and line-wise stdin. Its stderr goes
 * to the test's. `stop()` ends stdin and SIGKILLs it (by its own pid).
 */
export class LineProcess {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  #waiters: (() => void)[] = [];

  constructor(file: string, args: readonly string[]) {
    this.child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      this.lines.push(l);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.child.stdin!.on('error', () => undefined);
  }

  /** Waits until `pred(lines)` holds, at most `ms`; throws naming `what` and the last lines seen otherwise. */
  async waitFor(pred: (lines: readonly string[]) => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred(this.lines)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}; lines: ${JSON.stringify(this.lines.slice(-20))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 50));
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Writes one line to its stdin. */
  write(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Ends stdin and SIGKILLs the process if it still runs. Idempotent. */
  stop(): void {
    this.child.stdin!.end();
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
