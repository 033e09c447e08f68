/** Small helpers for bounded, abortable waits. */

/**
 * Settles like `p`, unless `signal` fires first: then rejects with
 * `toError(signal.reason)` (default: the reason itself). A late result of `p`
 * is dropped and a late rejection is handled, never unhandled.
 */
export function raceSignal<T>(
  p: Promise<T>,
  signal: AbortSignal,
  toError: (reason: unknown) => unknown = (reason) => reason,
): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(toError(signal.reason));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(toError(signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
