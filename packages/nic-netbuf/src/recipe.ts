/**
 * How a NIC's buffer is built and removed: one interface, two
 * implementations, chosen once by the `script` option.
 *
 * - {@link builtInRecipe}: this plugin's own steps with ip/tc (Xen's
 *   `remus-netbuf-setup`, done in-process).
 * - {@link scriptRecipe}: the operator's script does both.
 *
 * Both run under the host-wide setup lock (the caller takes it) and record
 * every object in the NIC's data as soon as it exists.
 */
import { randomBytes } from 'node:crypto';
import { netnsExists, RemusError, runScript, validateInterfaceName, type OpContext } from '@remus/core';
import { inNs, type Handle, type NicData } from './data.js';
import { attempt, ingressKind, ingressRedirects, linkInfo, must, rootQdisc, type Where } from './kernel.js';
import type { BufferQdisc } from './qdisc.js';

/** Setup steps in order; fault injection and error details name them. */
export const SETUP_STEPS = ['check-ingress', 'create-ifb', 'tag-ifb', 'add-qdisc', 'ifb-up', 'add-ingress', 'add-redirect', 'open-channel'] as const;
export type SetupStep = (typeof SETUP_STEPS)[number];

/** Runs before each setup step: checks the signal, then the test hook (fault injection). */
export type StepHook = (step: SetupStep, h: Handle, ctx: OpContext) => Promise<void>;

export interface Recipe {
  /** Builds the NIC's buffer and sets `qdiscHandle` (and `ifb`). Throws; teardown then removes what was recorded. */
  setup(h: Handle, ctx: OpContext): Promise<void>;
  /** Removes what setup recorded. Returns what it could not remove (empty: all gone). Idempotent. */
  teardown(h: Handle): Promise<string[]>;
}

/** The built-in recipe; `commandTimeoutMs` bounds each ip/tc command. */
export function builtInRecipe(qdisc: BufferQdisc, commandTimeoutMs: number, step: StepHook): Recipe {
  const where = (netns: string | undefined): Where => ({ netns, timeoutMs: commandTimeoutMs });
  return {
    async setup(h, ctx) {
      const d = h.data!;
      const at = where(d.netns);
      await step('check-ingress', h, ctx);
      const existing = await ingressKind(d.ifname, at);
      if (existing) throw foreignIngress(d, existing);

      await step('create-ifb', h, ctx);
      for (let tries = 0; !d.ifbCreated; tries++) {
        d.ifb = `rb${randomBytes(4).toString('hex')}`;
        const failed = await attempt('ip', ['link', 'add', d.ifb, 'type', 'ifb'], at);
        if (failed === undefined) {
          d.ifbCreated = true;
          break;
        }
        const name = d.ifb;
        d.ifb = undefined; // not ours: never touch it
        if (!/File exists/.test(failed) || tries >= 4) {
          throw new RemusError('OP_FAILED', `cannot create IFB ${name}${inNs(d.netns)}: ${failed}`, { details: { step: 'create-ifb', stderr: failed } });
        }
      }
      const ifb = d.ifb!;

      await step('tag-ifb', h, ctx);
      // addrgenmode none: no IPv6 link-local address, hence no router solicitations or MLD
      // reports of the IFB's own landing in its plug (only the guest's packets are held).
      await must('ip', ['link', 'set', 'dev', ifb, 'alias', d.tag, 'addrgenmode', 'none'], at, `cannot tag IFB ${ifb}`);

      await step('add-qdisc', h, ctx);
      await must('tc', ['qdisc', 'add', 'dev', ifb, 'root', 'handle', '1:', ...qdisc.addArgs], at, `cannot add the ${qdisc.kind} qdisc to ${ifb} ${qdisc.addHint}`.trim());
      d.qdiscHandle = '1:';

      await step('ifb-up', h, ctx);
      await must('ip', ['link', 'set', 'dev', ifb, 'up'], at, `cannot bring IFB ${ifb} up`);

      await step('add-ingress', h, ctx);
      const failed = await attempt('tc', ['qdisc', 'add', 'dev', d.ifname, 'ingress'], at);
      if (failed !== undefined) {
        if (/Exclusivity flag|File exists/.test(failed)) throw foreignIngress(d, 'ingress');
        throw new RemusError('OP_FAILED', `cannot add an ingress qdisc to ${d.ifname}${inNs(d.netns)}: ${failed}`, { details: { step: 'add-ingress' } });
      }
      d.ingressAdded = true;

      await step('add-redirect', h, ctx);
      // `protocol all`: IPv4, IPv6 and ARP alike (Xen redirected IPv4 only).
      await must(
        'tc',
        ['filter', 'add', 'dev', d.ifname, 'parent', 'ffff:', 'protocol', 'all', 'prio', '10', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', ifb],
        at,
        `cannot redirect the ingress of ${d.ifname} to ${ifb}`,
      );
    },

    async teardown(h) {
      const d = h.data!;
      if (d.netns !== undefined && !netnsExists(d.netns)) {
        // The namespace is gone, and with it the NIC, its ingress qdisc and our IFB.
        d.ingressAdded = false;
        d.ifb = undefined;
        d.ifbCreated = false;
        return [];
      }
      const at = where(d.netns);
      const problems: string[] = [];
      if (d.ingressAdded) {
        const redirects = await ingressRedirects(d.ifname, at);
        // Ours: only redirects to our IFB (or to a deleted device). Someone else's replacement is left alone.
        const ours = redirects !== undefined && redirects.every((t) => t === d.ifb || t === '*');
        if (ours) {
          const failed = await attempt('tc', ['qdisc', 'del', 'dev', d.ifname, 'ingress'], at);
          if (failed !== undefined && (await ingressKind(d.ifname, at)) !== undefined) problems.push(`cannot remove the ingress qdisc of ${d.ifname}: ${failed}`);
        }
        if (problems.length === 0) d.ingressAdded = false;
      }
      if (d.ifb !== undefined) {
        const link = await linkInfo(d.ifb, at);
        if (link && link.kind === 'ifb' && (d.ifbCreated || link.ifalias === d.tag)) {
          const failed = await attempt('ip', ['link', 'del', 'dev', d.ifb], at);
          if (failed !== undefined && (await linkInfo(d.ifb, at)) !== undefined) problems.push(`cannot delete IFB ${d.ifb}: ${failed}`);
        }
        if (problems.length === 0) {
          d.ifb = undefined;
          d.ifbCreated = false;
        }
      }
      return problems;
    },
  };
}

/** What the operator's script is told, besides its argument (`setup` or `teardown`). */
export interface ScriptSettings {
  /** Absolute path of the script. */
  readonly path: string;
  readonly timeoutMs: number;
  /** Bounds ip/tc look-ups after the script ran. */
  readonly commandTimeoutMs: number;
  /** The plug's byte limit, passed as REMUS_PLUG_LIMIT. */
  readonly limitBytes: number;
}

/**
 * A device id as the script may see it in REMUS_DEVICE: 1-64 characters from
 * A-Z a-z 0-9 _ . : @ + - (no whitespace, quotes, `$`, `/` or newlines, so a
 * careless `eval` or unquoted use in the script cannot run anything).
 */
const SCRIPT_SAFE_ID = /^[A-Za-z0-9_.:@+-]{1,64}$/;

/** Throws INVALID_ARGUMENT when the device id cannot be handed to the operator's script (see {@link SCRIPT_SAFE_ID}). */
export function checkScriptDeviceId(id: string, script: string): void {
  if (SCRIPT_SAFE_ID.test(id)) return;
  throw new RemusError(
    'INVALID_ARGUMENT',
    `device ${JSON.stringify(id)}: its id is passed to the netbuf script ${script} in REMUS_DEVICE and must be 1-64 characters from A-Z a-z 0-9 _ . : @ + - (no whitespace, quotes, $ or /)`,
    { device: id, details: { env: 'REMUS_DEVICE' } },
  );
}

/** The operator's script: `SCRIPT setup` must print `ifb=NAME` (an IFB whose root qdisc is `qdisc.kind`); `SCRIPT teardown` removes it. */
export function scriptRecipe(qdisc: BufferQdisc, s: ScriptSettings): Recipe {
  const env = (h: Handle, ifb: string): Record<string, string> => {
    const d = h.data!;
    checkScriptDeviceId(h.device.id, s.path);
    return {
      vifname: d.ifname,
      IFB: ifb,
      REMUS_DEVICE: h.device.id,
      REMUS_NETNS: d.netns ?? '',
      REMUS_OPERATION: d.operation,
      REMUS_TAG: d.tag,
      REMUS_PLUG_LIMIT: String(s.limitBytes),
    };
  };
  return {
    async setup(h, ctx) {
      const d = h.data!;
      const scriptEnv = env(h, '');
      d.scriptStarted = true;
      const r = await runScript(s.path, ['setup'], { env: scriptEnv, signal: ctx.signal, timeoutMs: s.timeoutMs });
      const line = r.stdout.split('\n').reverse().find((l) => l.startsWith('ifb='));
      if (!line) {
        throw new RemusError('OP_FAILED', `netbuf script ${s.path} did not print the IFB it chose (a line "ifb=NAME" on stdout)`, {
          details: { stdout: r.stdout.slice(-2000) },
        });
      }
      d.ifb = validateInterfaceName(line.slice(4).trim(), `IFB printed by ${s.path}`);
      const root = await rootQdisc(d.ifb, { netns: d.netns, timeoutMs: s.commandTimeoutMs });
      if (root?.kind !== qdisc.kind) {
        throw new RemusError('OP_FAILED', `netbuf script ${s.path} chose IFB ${d.ifb}, but its root qdisc is ${root?.kind ?? 'missing'}, not ${qdisc.kind}`, {
          details: { ifb: d.ifb, root },
        });
      }
      d.qdiscHandle = root.handle;
    },

    async teardown(h) {
      const d = h.data!;
      if (!d.scriptStarted) return [];
      await runScript(s.path, ['teardown'], { env: env(h, d.ifb ?? ''), timeoutMs: s.timeoutMs });
      d.scriptStarted = false;
      d.ifb = undefined;
      return [];
    },
  };
}

function foreignIngress(d: NicData, kind: string): RemusError {
  return new RemusError(
    'OP_FAILED',
    `interface ${d.ifname}${inNs(d.netns)} already has an ${kind} qdisc that this operation did not create ` +
      '(another program, another Remus operation buffering this NIC, or a crashed run); ' +
      `if it is not in use, remove it (\`tc${d.netns === undefined ? '' : ` -n ${d.netns}`} qdisc del dev ${d.ifname} ${kind === 'clsact' ? 'clsact' : 'ingress'}\`), ` +
      'or reap the crashed operation',
    { details: { step: 'check-ingress', ifname: d.ifname, netns: d.netns, kind } },
  );
}
