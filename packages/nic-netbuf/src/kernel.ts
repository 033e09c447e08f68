/**
 * Setup-time talk to the kernel: one-shot `ip`/`tc` commands with argument
 * vectors through the core's script runner (never a shell), each bounded by
 * a timeout. Checkpoint ops never come here: they use the control channel.
 *
 * Every name reaching these functions was validated first
 * (validateInterfaceName / validateName).
 */
import { RemusError, runScript } from '@remus/core';

/** Where a command runs: its namespace (undefined = this process's) and its time limit. */
export interface Where {
  readonly netns: string | undefined;
  readonly timeoutMs: number;
}

interface Outcome {
  readonly ok: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `ip` or `tc` with `-n NS` when a namespace is given. Resolves with the
 * outcome for exit codes 0-2 (the caller decides what a failure means);
 * rejects for timeouts and missing tools.
 */
async function tool(file: 'ip' | 'tc', args: readonly string[], where: Where): Promise<Outcome> {
  const argv = [...(where.netns === undefined ? [] : ['-n', where.netns]), ...args];
  const r = await runScript(file, argv, { timeoutMs: where.timeoutMs, okExitCodes: [0, 1, 2] });
  return { ok: r.exitCode === 0, stdout: r.stdout, stderr: r.stderr.trim() };
}

/** Runs a command that must succeed; throws OP_FAILED with what it printed. */
export async function must(file: 'ip' | 'tc', args: readonly string[], where: Where, what: string): Promise<void> {
  const r = await tool(file, args, where);
  if (!r.ok) throw commandError(file, args, where, what, r.stderr);
}

/** Like {@link must} but returns the failure text instead of throwing. */
export async function attempt(file: 'ip' | 'tc', args: readonly string[], where: Where): Promise<string | undefined> {
  const r = await tool(file, args, where);
  return r.ok ? undefined : r.stderr || 'failed';
}

export function commandError(file: string, args: readonly string[], where: Where, what: string, stderr: string): RemusError {
  const ns = where.netns === undefined ? '' : ` -n ${where.netns}`;
  return new RemusError('OP_FAILED', `${what}: \`${file}${ns} ${args.join(' ')}\` failed: ${stderr || 'no message'}`, {
    details: { file, args: [...args], netns: where.netns, stderr },
  });
}

/** The interface's link record, or undefined if it does not exist. */
export async function linkInfo(ifname: string, where: Where): Promise<{ ifname: string; ifalias?: string; kind?: string } | undefined> {
  const r = await tool('ip', ['-d', '-j', 'link', 'show', 'dev', ifname], where);
  if (!r.ok) {
    if (/does not exist|Cannot find device/.test(r.stderr)) return undefined;
    throw commandError('ip', ['-d', '-j', 'link', 'show', 'dev', ifname], where, `cannot look up interface ${ifname}`, r.stderr);
  }
  const [link] = JSON.parse(r.stdout) as { ifname: string; ifalias?: string; linkinfo?: { info_kind?: string } }[];
  if (!link) return undefined;
  return { ifname: link.ifname, ifalias: link.ifalias, kind: link.linkinfo?.info_kind };
}

/** Every IFB in the namespace with its alias. */
export async function listIfbs(where: Where): Promise<{ ifname: string; ifalias: string }[]> {
  const r = await tool('ip', ['-d', '-j', 'link', 'show', 'type', 'ifb'], where);
  if (!r.ok) throw commandError('ip', ['-d', '-j', 'link', 'show', 'type', 'ifb'], where, 'cannot list IFB devices', r.stderr);
  const links = JSON.parse(r.stdout || '[]') as { ifname: string; ifalias?: string }[];
  return links.map((l) => ({ ifname: l.ifname, ifalias: l.ifalias ?? '' }));
}

/** The kind of the interface's ingress-side qdisc (`ingress` or `clsact`), if any. */
export async function ingressKind(ifname: string, where: Where): Promise<string | undefined> {
  const args = ['-j', 'qdisc', 'show', 'dev', ifname];
  const r = await tool('tc', args, where);
  if (!r.ok) {
    if (/Cannot find device/.test(r.stderr)) return undefined;
    throw commandError('tc', args, where, `cannot list the qdiscs of ${ifname}`, r.stderr);
  }
  const qdiscs = JSON.parse(r.stdout || '[]') as { kind: string; parent?: string }[];
  return qdiscs.find((q) => q.kind === 'ingress' || q.kind === 'clsact')?.kind;
}

/** The root qdisc of an interface: kind and handle (e.g. `plug`, `1:`). */
export async function rootQdisc(ifname: string, where: Where): Promise<{ kind: string; handle: string } | undefined> {
  const args = ['-j', 'qdisc', 'show', 'dev', ifname, 'root'];
  const r = await tool('tc', args, where);
  if (!r.ok) throw commandError('tc', args, where, `cannot read the root qdisc of ${ifname}`, r.stderr);
  const [q] = JSON.parse(r.stdout || '[]') as { kind: string; handle: string }[];
  return q;
}

/**
 * Where the ingress filters of an interface redirect to: one entry per
 * mirred action (`*` when the target device is gone). Undefined if the
 * interface has no ingress qdisc or does not exist.
 */
export async function ingressRedirects(ifname: string, where: Where): Promise<string[] | undefined> {
  const args = ['-j', 'filter', 'show', 'dev', ifname, 'ingress'];
  const r = await tool('tc', args, where);
  if (!r.ok) {
    if (/Cannot find device|Cannot find specified qdisc|Invalid handle|No such file/i.test(r.stderr)) return undefined;
    throw commandError('tc', args, where, `cannot list the ingress filters of ${ifname}`, r.stderr);
  }
  const filters = JSON.parse(r.stdout || '[]') as { options?: { actions?: { kind?: string; to_dev?: string }[] } }[];
  const targets: string[] = [];
  for (const f of filters) for (const a of f.options?.actions ?? []) if (a.kind === 'mirred') targets.push(a.to_dev ?? '*');
  return targets;
}
