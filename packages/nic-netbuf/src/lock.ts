/**
 * The setup lock: serialises setup, teardown and reap of every nic-netbuf
 * user on the host (operations in this process and other processes).
 *
 * It is a Unix socket bound in the abstract namespace (`\0<name>`): binding
 * is exclusive, needs no file, and the kernel releases it when the holder
 * exits, even on SIGKILL, so a crashed run never leaves a stale lock. The
 * abstract namespace belongs to the network namespace of the process, so
 * the lock covers every process started in the same namespace as this one
 * (every Remus process on a host, in practice).
 */
import { createServer, type Server } from 'node:net';
import { abortError, RemusError, sleep } from '@remus/core';

/** Poll interval while someone else holds the lock. */
const RETRY_MS = 15;

/**
 * Runs `body` holding the lock named `name`. Waits at most `timeoutMs` for
 * the lock (TIMEOUT), or until `signal` fires (ABORTED); the lock is
 * released when `body` settles.
 */
export async function withLock<T>(name: string, timeoutMs: number, signal: AbortSignal | undefined, body: () => Promise<T>): Promise<T> {
  const server = await acquire(name, timeoutMs, signal);
  try {
    return await body();
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function acquire(name: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<Server> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (signal?.aborted) throw abortError(signal, `waiting for the lock ${name}`);
    const server = createServer();
    const bound = await new Promise<boolean | Error>((resolve) => {
      server.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EADDRINUSE' ? false : e));
      server.listen(`\0${name}`, () => resolve(true));
    });
    if (bound === true) return server;
    if (bound instanceof Error) throw new RemusError('OP_FAILED', `cannot take the lock ${name}: ${bound.message}`, { cause: bound });
    if (Date.now() >= deadline) {
      throw new RemusError('TIMEOUT', `another nic-netbuf setup held the lock ${name} for more than ${timeoutMs} ms`, {
        details: { lock: name, timeoutMs },
      });
    }
    await sleep(RETRY_MS, signal, `waiting for the lock ${name}`);
  }
}
