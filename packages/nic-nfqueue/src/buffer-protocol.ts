/**
 * The line protocol between the subkind (parent) and a buffer process: one
 * JSON object per line each way. Every request carries an `id`; the reply
 * with the same `id` answers it. Requests are handled in order.
 */

/** Figures of one queue (one NIC), as the buffer process counts them. */
export interface QueueStats {
  readonly queue: number;
  /** Packets held now (queued in the kernel, not yet released). */
  readonly held: number;
  /** Bytes held now (original packet lengths). */
  readonly heldBytes: number;
  /** Packets released by commits so far. */
  readonly released: number;
  readonly releasedBytes: number;
  /** Packets dropped because holding them would pass the byte cap. */
  readonly capDropped: number;
  /** Packets the kernel dropped because the queue held the packet cap (`queue_dropped`). */
  readonly queueFullDropped: number;
  /** Packets the kernel dropped because the buffer process's socket was full (`user_dropped`). */
  readonly socketDropped: number;
  /** Packets dropped because they were still held when the queue was unbound (teardown). */
  readonly flushDropped: number;
  /** Sum of every kind of drop above. */
  readonly dropped: number;
  /** Commits (releases) done. */
  readonly epochs: number;
}

export type Request =
  | {
      readonly id: number;
      readonly op: 'bind';
      /** The device's rule tag; `unbind` finds the queue by it, even when the bind's reply was lost. */
      readonly tag: string;
      /** Queue numbers not to take (referenced by existing rules). */
      readonly exclude: readonly number[];
      /** First and last queue number to try, inclusive. */
      readonly first: number;
      readonly last: number;
      /** The kernel queue's maximum length: the packet cap. */
      readonly maxPackets: number;
      /** The byte cap, enforced by this process. */
      readonly maxBytes: number;
      /** Bytes of each packet copied to userspace (only its length is used). */
      readonly copyRange: number;
    }
  /** Records the boundary of checkpoint `checkpoint`'s epoch: the last packet seen now. */
  | { readonly id: number; readonly op: 'mark'; readonly queue: number; readonly checkpoint: number }
  /** Releases up to the boundary of checkpoint `checkpoint` (none recorded: nothing). */
  | {
      readonly id: number;
      readonly op: 'release';
      readonly queue: number;
      readonly checkpoint: number;
      /** Only with REMUS_NFQ_TRACE: CLOCK_MONOTONIC ns when the parent wrote the request (profiling). */
      readonly written?: string;
    }
  /** Unbinds every queue bound for `tag` (the kernel drops what they hold). */
  | { readonly id: number; readonly op: 'unbind'; readonly tag: string }
  | { readonly id: number; readonly op: 'stats' };

export type Reply =
  | {
      readonly id: number;
      readonly ok: true;
      readonly queue?: number;
      readonly stats?: QueueStats;
      readonly all?: readonly QueueStats[];
      readonly overruns?: number;
      /** `mark` only: nothing was held when the boundary was taken, so the epoch's release has nothing to do. */
      readonly empty?: boolean;
    }
  | { readonly id: number; readonly ok: false; readonly error: string; readonly errno: string };
