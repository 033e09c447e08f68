// Fakes for fault injection in the checkpoint loop: a domain and a device
// subkind that log every call into one shared timeline and fail a chosen step
// of a chosen checkpoint in a chosen way.
import type { DomainAdapter, DomainStepContext, OpContext, SubkindOps } from '@remus/core';

/** How an injected fault behaves. */
export type FaultHow = 'throw' | 'reject' | 'hang';

/** Fail `step` at checkpoint `checkpoint` (default 1) the way `how` says. */
export interface StepFault {
  readonly step: string;
  readonly how: FaultHow;
  readonly checkpoint?: number;
}

/** The shared timeline: `domain:suspend:1`, `dev:commit:nic0:1`... plus the fake domain's state. */
export interface Timeline {
  readonly calls: string[];
  /** Device resources alive (set up and not torn down). */
  readonly live: Set<string>;
  suspended: boolean;
}

export function newTimeline(): Timeline {
  return { calls: [], live: new Set(), suspended: false };
}

/** Faults that already fired: each fires once, so recovery (the failure policy's resume) can succeed. */
const fired = new WeakSet<StepFault>();

function inject<T>(fault: StepFault | undefined, what: string, body: () => T): T | Promise<T> {
  if (!fault || fired.has(fault)) return body();
  fired.add(fault);
  const err = new Error(`injected ${fault.how} in ${what}`);
  if (fault.how === 'throw') throw err;
  if (fault.how === 'reject') return Promise.reject(err);
  return new Promise<T>(() => undefined);
}

/** A domain whose steps log themselves; `ackDelayMs` makes the backup slow. */
export function fakeDomain(t: Timeline, faults: readonly StepFault[] = [], ackDelayMs = 0): DomainAdapter {
  const faultFor = (step: string, ctx: DomainStepContext): StepFault | undefined =>
    faults.find((f) => f.step === step && (f.checkpoint ?? 1) === ctx.checkpoint);
  return {
    name: 'fake-domain',
    suspend: (ctx) =>
      inject(faultFor('suspend', ctx), 'suspend', () => {
        t.calls.push(`domain:suspend:${ctx.checkpoint}`);
        t.suspended = true;
      }),
    save: (ctx) => inject(faultFor('save', ctx), 'save', () => void t.calls.push(`domain:save:${ctx.checkpoint}`)),
    resume: (ctx) =>
      inject(faultFor('resume', ctx), 'resume', () => {
        t.calls.push(`domain:resume:${ctx.checkpoint}`);
        t.suspended = false;
      }),
    waitAck: async (ctx) => {
      await inject(faultFor('ack', ctx), 'ack', () => undefined);
      if (ackDelayMs > 0) await new Promise((r) => setTimeout(r, ackDelayMs));
      t.calls.push(`domain:ack:${ctx.checkpoint}`);
    },
  };
}

/** A NIC subkind whose checkpoint ops log themselves and can fail. */
export function fakeNic(t: Timeline, faults: readonly StepFault[] = [], name = 'fake-nic'): SubkindOps<undefined, boolean> {
  const op = (step: 'postsuspend' | 'preresume' | 'commit') => (h: { device: { id: string } }, ctx: OpContext) =>
    inject(
      faults.find((f) => f.step === step && (f.checkpoint ?? 1) === ctx.checkpoint),
      `${step} of ${h.device.id}`,
      () => void t.calls.push(`dev:${step}:${h.device.id}:${ctx.checkpoint}`),
    );
  return {
    name,
    kind: 'nic',
    setup(h) {
      h.data = true;
      t.live.add(h.device.id);
    },
    teardown(h) {
      t.calls.push(`dev:teardown:${h.device.id}`);
      t.live.delete(h.device.id);
    },
    postsuspend: op('postsuspend'),
    preresume: op('preresume'),
    commit: op('commit'),
  };
}
