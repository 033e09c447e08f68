/**
 * The buffering qdisc at the IFB's root: what setup installs and the two
 * changes the checkpoint ops send to it. Production uses {@link schPlug};
 * tests on a kernel without sch_plug inject a stand-in of the same shape
 * (test/fixtures/stand-in.mjs), so no production code branches for them.
 */
import { randomBytes } from 'node:crypto';
import { abortError } from '@remus/core';
import { attempt, must, type Where } from './kernel.js';
import { PLUG_BUFFER, PLUG_RELEASE_ONE, plugOptions, type QdiscChange } from './rtnl.js';

/** One change of the qdisc, in the two forms the control channels send. */
export interface QdiscChangeSpec {
  /** Arguments after `tc qdisc change dev IFB root handle H` (the tc batch channel). */
  readonly tcArgs: readonly string[];
  /** TCA_KIND and TCA_OPTIONS of the RTM_NEWQDISC request (the netlink socket). */
  readonly netlink: QdiscChange;
}

/** A qdisc that holds a NIC's output per epoch. */
export interface BufferQdisc {
  /** Its tc kind (`plug`); the operator script's IFB must have it at the root. */
  readonly kind: string;
  /** Arguments after `tc qdisc add dev IFB root handle 1:` that install it, holding from the start. */
  readonly addArgs: readonly string[];
  /** What to tell the user when the kernel refuses `addArgs` (appended to the error). */
  readonly addHint: string;
  /** postsuspend: close the current epoch. */
  readonly block: QdiscChangeSpec;
  /** commit: release the oldest closed epoch. */
  readonly release: QdiscChangeSpec;
  /**
   * Whether this host can use it: undefined = yes, else why not. Called by
   * the first match of an operation (its result is reused); may spawn.
   */
  probe(timeoutMs: number, signal: AbortSignal): Promise<string | undefined>;
}

const PROBE_IFB = 'rbprobe';

/** sch_plug with `limit` bytes: BUFFER at postsuspend, RELEASE_ONE at commit (Xen's netbuf). */
export function schPlug(limitBytes: number): BufferQdisc {
  return {
    kind: 'plug',
    addArgs: ['plug', 'limit', String(limitBytes)],
    addHint: '(does the kernel have sch_plug?)',
    block: { tcArgs: ['plug', 'block'], netlink: { kind: 'plug', options: plugOptions(PLUG_BUFFER) } },
    release: { tcArgs: ['plug', 'release'], netlink: { kind: 'plug', options: plugOptions(PLUG_RELEASE_ONE) } },
    probe: probePlug,
  };
}

/**
 * Tries a plug qdisc on a scratch IFB inside a throwaway namespace.
 * Resolves undefined when sch_plug works, else the reason it does not.
 */
async function probePlug(timeoutMs: number, signal: AbortSignal): Promise<string | undefined> {
  const ns = `remus-netbuf-probe-${process.pid}-${randomBytes(3).toString('hex')}`;
  const host: Where = { netns: undefined, timeoutMs };
  await must('ip', ['netns', 'add', ns], host, 'cannot create a namespace to probe for sch_plug');
  try {
    if (signal.aborted) throw abortError(signal, 'sch_plug probe');
    const inside: Where = { netns: ns, timeoutMs };
    const noIfb = await attempt('ip', ['link', 'add', PROBE_IFB, 'type', 'ifb'], inside);
    if (noIfb !== undefined) return `the kernel cannot create IFB devices (${noIfb})`;
    const noPlug = await attempt('tc', ['qdisc', 'add', 'dev', PROBE_IFB, 'root', 'handle', '1:', 'plug', 'limit', '10000'], inside);
    if (noPlug === undefined) return undefined;
    if (/unknown/i.test(noPlug)) return `the kernel lacks sch_plug (tc: ${noPlug}); load module sch_plug or use a kernel built with CONFIG_NET_SCH_PLUG`;
    return `a plug qdisc cannot be installed: ${noPlug}`;
  } finally {
    await attempt('ip', ['netns', 'del', ns], host);
  }
}
