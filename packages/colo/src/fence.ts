/**
 * Fencing and failover of a COLO pair. No split brain on one host: only one
 * side is on the clients' network at a time. A failover first fences the
 * losing side (SIGKILL by pid, confirmed gone; `fence.detach`), and only
 * then promotes the survivor and, for the secondary, connects it
 * (`fence.attach`). Across two hosts a pid and a local bridge are not
 * enough: a partition looks like a death, so it needs an arbiter, a fencing
 * device the survivor uses before it answers clients, and the takeover of
 * the service address.
 */
import { pollUntil, type DeviceSpec } from '@remus/core';
import type { QmpClient } from '@remus/qmp';
import { coloFailoverOnPrimary, coloFailoverOnSecondary } from './failover.js';
import type { ColoRole } from './params.js';
import { processAlive } from './watchdog.js';

/** What connects a side to the clients' network and takes it off (fencing). */
export interface ColoNetworkFence {
  /** Connects `side` to the clients' network. */
  attach(side: ColoRole, signal: AbortSignal): Promise<void>;
  /** Takes `side` off the clients' network; must succeed when it already is off. */
  detach(side: ColoRole, signal: AbortSignal): Promise<void>;
}

/** How long a SIGKILLed QEMU may take to be gone, ms. */
export const KILL_CONFIRM_MS = 5000;

/**
 * SIGKILLs `pid` and waits (polling /proc every 5 ms) until it is gone; a
 * pid already gone is fine. TIMEOUT when it outlives `timeoutMs`, ABORTED
 * on `signal`.
 */
export async function killAndConfirm(pid: number, options: { readonly timeoutMs: number; readonly signal?: AbortSignal }): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await pollUntil(() => !processAlive(pid), {
    what: `colo: pid ${pid} to be gone after SIGKILL`,
    timeoutMs: options.timeoutMs,
    intervalMs: 5,
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

export interface FailOverOptions {
  /** The survivor's command connection. */
  readonly client: QmpClient;
  /** The operation the devices were set up under. */
  readonly operation: string;
  /** The survivor's devices. */
  readonly devices: readonly DeviceSpec[];
  /** Pid of the losing side's QEMU on this host (SIGKILLed first), if known. */
  readonly failedPid: number | undefined;
  readonly fence: ColoNetworkFence | undefined;
  readonly signal: AbortSignal;
  readonly onStep: (step: string, ms: number) => void;
}

/**
 * Fails over to `survivor`: fences the other side (SIGKILL by pid confirmed
 * gone, then `fence.detach`), runs the survivor's sequence
 * ({@link coloFailoverOnSecondary} / {@link coloFailoverOnPrimary}) and,
 * for the secondary, `fence.attach`. Resolves with the ids the sequence
 * kept on purpose. Throws what the step that failed threw.
 */
export async function failOverTo(survivor: ColoRole, o: FailOverOptions): Promise<{ kept: readonly string[] }> {
  const failed: ColoRole = survivor === 'primary' ? 'secondary' : 'primary';
  if (o.failedPid !== undefined) await killAndConfirm(o.failedPid, { timeoutMs: KILL_CONFIRM_MS, signal: o.signal });
  await o.fence?.detach(failed, o.signal);
  const sequence = survivor === 'secondary' ? coloFailoverOnSecondary : coloFailoverOnPrimary;
  const { kept } = await sequence(o.client, { operation: o.operation, devices: o.devices, signal: o.signal, onStep: o.onStep });
  if (survivor === 'secondary') await o.fence?.attach('secondary', o.signal);
  return { kept };
}
