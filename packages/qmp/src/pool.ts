/**
 * Shared QMP connections. A QEMU `-qmp` monitor serves one client at a time
 * (a second client waits unanswered until the first leaves), so everything
 * that drives one QEMU in one process (the COLO nic and disk subkinds, a
 * driver migrating and failing over) must share one connection. The pool
 * hands out leases on one client per address and closes it when the last
 * lease is released.
 */
import { abortError, raceSignal, type SocketAddress } from '@remus/core';
import { connectQmp, formatQmpAddress, parseQmpAddress, type QmpClient, type QmpConnectOptions } from './client.js';

/** A share of one pooled connection. Release it exactly once (extra releases are no-ops). */
export interface QmpLease {
  readonly client: QmpClient;
  /** Gives the share back; the last release closes the connection. Idempotent. */
  release(): Promise<void>;
}

/**
 * One address's connection. Invariant: `refs` counts unreleased leases plus
 * acquirers still waiting for `client`; `connecting` aborts the shared
 * attempt when the last of them goes away before it finished.
 */
interface Entry {
  readonly client: Promise<QmpClient>;
  readonly connecting: AbortController;
  refs: number;
}

export class QmpPool {
  readonly #entries = new Map<string, Entry>();

  /**
   * Leases the pool's connection to `address`, connecting if there is none
   * (or the last one was closed by QEMU: nothing reconnects a live client,
   * but a fresh acquire after a loss makes a new one). Rejects like
   * {@link connectQmp}; an aborted acquire gives its share back at once (if
   * it was the last, the shared attempt is aborted too). `options`
   * (timeouts) apply when this call opens the connection; later acquirers
   * share it as it is.
   */
  async acquire(address: string | SocketAddress, options: QmpConnectOptions = {}): Promise<QmpLease> {
    const key = formatQmpAddress(parseQmpAddress(address));
    let entry = this.#entries.get(key);
    if (!entry) {
      // The shared attempt is bounded by its own timeout and aborted only when
      // every acquirer waiting for it has gone, not by one acquirer's signal.
      const { signal: _ignored, ...shared } = options;
      const connecting = new AbortController();
      const client = connectQmp(address, { ...shared, signal: connecting.signal });
      const made: Entry = { client, connecting, refs: 0 };
      entry = made;
      this.#entries.set(key, made);
      client.then(
        (c) => {
          void c.whenClosed().then(() => {
            if (this.#entries.get(key) === made) this.#entries.delete(key);
          });
        },
        () => {
          if (this.#entries.get(key) === made) this.#entries.delete(key);
        },
      );
    }
    const mine = entry;
    mine.refs++;
    let client: QmpClient;
    try {
      client = await abortable(mine.client, options.signal);
    } catch (e) {
      await this.#drop(key, mine);
      throw e;
    }
    let released = false;
    return {
      client,
      release: async () => {
        if (released) return;
        released = true;
        await this.#drop(key, mine);
      },
    };
  }

  /** Number of open or opening connections (for tests and leak checks). */
  get size(): number {
    return this.#entries.size;
  }

  async #drop(key: string, entry: Entry): Promise<void> {
    if (--entry.refs > 0) return;
    if (this.#entries.get(key) === entry) this.#entries.delete(key);
    entry.connecting.abort(new Error('QMP pool: no acquirer is waiting for this connection any more'));
    const client = await entry.client.catch(() => undefined);
    await client?.close();
  }
}

/** The process-wide pool the COLO subkinds use unless given another. */
export const sharedQmpPool = new QmpPool();

function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  return raceSignal(p, signal, () => abortError(signal, 'QMP connect'));
}
