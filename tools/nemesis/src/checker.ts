/**
 * The checker: over one recorded history, the properties of ha.md's
 * "Testing it" section. All times are CLOCK_MONOTONIC ms of one machine, so
 * overlap between hosts is measured directly, not inferred.
 *
 * 1. Client order: no reply of epoch e is received after a reply of an epoch
 *    higher than e.
 * 2. No lost state: the counters the client receives strictly increase in
 *    receipt order (a reply released is covered by a checkpoint the backup
 *    acknowledged; a promoted backup continues above it).
 * 3. One releaser at a time: the hosts' own release windows (from the ack,
 *    before the role check, to after the last write) of different epochs
 *    never overlap and are ordered by epoch; an epoch belongs to one host.
 */
import type { Release } from '@remus/agent';

/** A reply as the client recorded it. */
export interface ClientReply {
  /** Host that answered. */
  readonly h: string;
  /** Epoch that released it. */
  readonly e: number;
  /** Counter value. */
  readonly n: number;
  readonly id: string;
  /** Receipt time, CLOCK_MONOTONIC ms. */
  readonly at: number;
}

/** A release as the releasing agent reported it (`release` event): the agent's own record, with the host. */
export interface HostRelease extends Release {
  readonly host: string;
}

export interface History {
  readonly replies: readonly ClientReply[];
  readonly releases: readonly HostRelease[];
}

export interface CheckResult {
  readonly violations: readonly string[];
  readonly replies: number;
  readonly releases: number;
  /** Epochs that released anything, in order, with their host and window. */
  readonly epochs: readonly { readonly epoch: number; readonly host: string; readonly from: number; readonly to: number; readonly replies: number }[];
}

/** Checks one history. Pure. */
export function checkHistory(history: History): CheckResult {
  const violations: string[] = [];
  const replies = [...history.replies].sort((a, b) => a.at - b.at);
  let maxEpoch = 0;
  let maxAt = 0;
  let lastN = -Infinity;
  let lastNAt = 0;
  for (const r of replies) {
    if (r.e < maxEpoch) violations.push(`client: reply n=${r.n} of epoch ${r.e} from ${r.h} at ${r.at.toFixed(1)} after a reply of epoch ${maxEpoch} at ${maxAt.toFixed(1)}`);
    if (r.e > maxEpoch) {
      maxEpoch = r.e;
      maxAt = r.at;
    }
    if (!(r.n > lastN)) violations.push(`client: counter went from ${lastN} (at ${lastNAt.toFixed(1)}) to ${r.n} (epoch ${r.e}, ${r.h}, at ${r.at.toFixed(1)}): acknowledged state lost or output repeated`);
    lastN = r.n;
    lastNAt = r.at;
  }
  const byEpoch = new Map<number, { epoch: number; host: string; from: number; to: number; replies: number }>();
  for (const x of history.releases) {
    const w = byEpoch.get(x.epoch);
    if (!w) byEpoch.set(x.epoch, { epoch: x.epoch, host: x.host, from: x.from, to: x.to, replies: x.count });
    else {
      if (w.host !== x.host) violations.push(`hosts: epoch ${x.epoch} released by both ${w.host} and ${x.host}`);
      w.from = Math.min(w.from, x.from);
      w.to = Math.max(w.to, x.to);
      w.replies += x.count;
    }
  }
  const epochs = [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  for (let i = 1; i < epochs.length; i++) {
    const a = epochs[i - 1] as (typeof epochs)[number];
    const b = epochs[i] as (typeof epochs)[number];
    if (!(a.to < b.from)) {
      violations.push(`hosts: ${a.host} released epoch ${a.epoch} until ${a.to.toFixed(1)}, ${b.host} released epoch ${b.epoch} from ${b.from.toFixed(1)}: ${(a.to - b.from).toFixed(1)} ms of overlap`);
    }
  }
  return { violations, replies: replies.length, releases: history.releases.length, epochs };
}
