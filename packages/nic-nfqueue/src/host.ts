/**
 * Everything this subkind asks of the host outside the buffer process:
 * capability probes, interface look-ups and the iptables/ip6tables rules.
 * Only setup, teardown, match, init and reap come here: these spawn
 * processes (argument vectors via the core's runScript, never a shell).
 */
import { existsSync, readFileSync } from 'node:fs';
import { RemusError, runScript } from '@remus/core';

/** Commands this subkind runs. */
export interface HostCommands {
  readonly ip: string;
  readonly iptables: string;
  readonly ip6tables: string;
}

export type Family = 'ipv4' | 'ipv6';
export type Mode = 'routed' | 'bridged';

/** How long one setup/teardown command may take. */
const COMMAND_TIMEOUT_MS = 15_000;

/** Runs `file args` inside `netns` (via `ip netns exec`) or here. */
export function runIn(
  cmds: HostCommands,
  netns: string | undefined,
  file: string,
  args: readonly string[],
  signal: AbortSignal | undefined,
  okExitCodes: readonly number[] = [0],
) {
  const [f, a] = netns === undefined ? [file, args] : [cmds.ip, ['netns', 'exec', netns, file, ...args]];
  return runScript(f, a, { timeoutMs: COMMAND_TIMEOUT_MS, okExitCodes, ...(signal ? { signal } : {}) });
}

function tool(cmds: HostCommands, family: Family): string {
  return family === 'ipv4' ? cmds.iptables : cmds.ip6tables;
}

/** What the host can do, probed once per operation (in init). */
export type HostProbe = { readonly ok: true; readonly nftBackend: boolean } | { readonly ok: false; readonly reason: string };

function procHas(path: string, word: string): boolean {
  try {
    return readFileSync(path, 'utf8').split('\n').includes(word);
  } catch {
    return false;
  }
}

/**
 * Whether the kernel can load `module` on demand: it is listed as built in or
 * as a module of the running kernel (`/lib/modules/<release>/modules.*`).
 * /proc lists a target or subsystem only once its module is loaded, and
 * iptables or the first queue bind loads it.
 */
function moduleAvailable(module: string): boolean {
  const dir = `/lib/modules/${release()}`;
  const re = new RegExp(`/${module.replace(/[-_]/g, '[-_]')}\\.ko`);
  for (const f of ['modules.builtin', 'modules.dep']) {
    try {
      if (re.test(readFileSync(`${dir}/${f}`, 'utf8'))) return true;
    } catch {
      // No such list: modules are not installed (or the kernel has none).
    }
  }
  return false;
}

function release(): string {
  try {
    return readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    return '';
  }
}

/** A kernel feature is there when /proc lists it, or its module can be loaded. */
function kernelHas(procPath: string, word: string | undefined, module: string): boolean {
  const listed = word === undefined ? existsSync(procPath) : procHas(procPath, word);
  return listed || moduleAvailable(module);
}

/**
 * Checks that the kernel has nfnetlink_queue and the NFQUEUE target, and that
 * iptables and ip6tables run. Reads /proc and runs `iptables -V`; changes nothing.
 */
export async function probeHost(cmds: HostCommands, signal: AbortSignal): Promise<HostProbe> {
  if (!kernelHas('/proc/net/netfilter/nfnetlink_queue', undefined, 'nfnetlink_queue')) {
    return { ok: false, reason: 'kernel lacks nfnetlink_queue (no /proc/net/netfilter/nfnetlink_queue, no module)' };
  }
  for (const [file, proc] of [
    ['ip_tables_targets', 'IPv4'],
    ['ip6_tables_targets', 'IPv6'],
  ] as const) {
    if (!kernelHas(`/proc/net/${file}`, 'NFQUEUE', 'xt_NFQUEUE')) {
      return { ok: false, reason: `kernel lacks the ${proc} NFQUEUE target (not in /proc/net/${file}, no xt_NFQUEUE module)` };
    }
  }
  let nftBackend = false;
  for (const family of ['ipv4', 'ipv6'] as const) {
    const bin = tool(cmds, family);
    try {
      const r = await runScript(bin, ['-V'], { timeoutMs: COMMAND_TIMEOUT_MS, signal });
      if (/nf_tables/.test(r.stdout)) nftBackend = true;
    } catch (e) {
      if (signal.aborted) throw e;
      return { ok: false, reason: `${bin} does not run (${e instanceof Error ? e.message : String(e)}); install the iptables package` };
    }
  }
  return { ok: true, nftBackend };
}

/** Whether bridged traffic can be matched: br_netfilter and the physdev match. */
export function probeBridge(): { ok: true } | { ok: false; reason: string } {
  if (!existsSync('/proc/sys/net/bridge/bridge-nf-call-iptables')) {
    // Unlike the others, br_netfilter is not loaded on demand by iptables.
    return {
      ok: false,
      reason: moduleAvailable('br_netfilter')
        ? 'bridge netfilter is not loaded: bridged traffic never reaches iptables (modprobe br_netfilter)'
        : 'kernel lacks bridge netfilter (br_netfilter): bridged traffic never reaches iptables',
    };
  }
  if (!kernelHas('/proc/net/ip_tables_matches', 'physdev', 'xt_physdev') || !kernelHas('/proc/net/ip6_tables_matches', 'physdev', 'xt_physdev')) {
    return { ok: false, reason: 'kernel lacks the physdev match (xt_physdev)' };
  }
  return { ok: true };
}

/** An interface as `ip -d -j link show` describes it (the fields used here). */
export interface LinkInfo {
  readonly ifname: string;
  /** The bridge the interface is a port of, if it is one. */
  readonly bridge: string | undefined;
}

/**
 * Looks the interface up in its namespace: undefined when it does not exist;
 * throws OP_FAILED when `ip` fails otherwise.
 */
export async function lookupLink(cmds: HostCommands, netns: string | undefined, ifname: string, signal: AbortSignal): Promise<LinkInfo | undefined> {
  const nsArgs = netns === undefined ? [] : ['-n', netns];
  const args = [...nsArgs, '-d', '-j', 'link', 'show', 'dev', ifname];
  const r = await runScript(cmds.ip, args, { timeoutMs: COMMAND_TIMEOUT_MS, signal, okExitCodes: [0, 1, 255] });
  if (r.exitCode !== 0) {
    if (/does not exist|Cannot find device/.test(r.stderr)) return undefined;
    throw new RemusError('OP_FAILED', `cannot look up interface ${ifname}${netns === undefined ? '' : ` in netns ${netns}`}: ${r.stderr.trim() || `exit ${r.exitCode}`}`, {
      details: { ifname, netns, stderr: r.stderr },
    });
  }
  const links = JSON.parse(r.stdout) as { ifname: string; master?: string; linkinfo?: { info_slave_kind?: string } }[];
  const link = links[0];
  if (!link) return undefined;
  const bridge = link.linkinfo?.info_slave_kind === 'bridge' ? link.master : undefined;
  return { ifname: link.ifname, bridge };
}

/**
 * Makes sure bridged IPv4 and IPv6 traffic of `bridge` passes through
 * iptables: when the namespace's `bridge-nf-call-ip(6)tables` sysctl is off,
 * turns on the bridge's own `nf_call_iptables`/`nf_call_ip6tables`. Returns
 * what it turned on (left on at teardown: another operation may rely on it).
 */
export async function ensureBridgeNetfilter(
  cmds: HostCommands,
  netns: string | undefined,
  bridge: string,
  signal: AbortSignal,
): Promise<string[]> {
  const sysctls = await runIn(
    cmds,
    netns,
    'cat',
    ['/proc/sys/net/bridge/bridge-nf-call-iptables', '/proc/sys/net/bridge/bridge-nf-call-ip6tables'],
    signal,
  );
  const [v4, v6] = sysctls.stdout.trim().split(/\s+/);
  const turnOn: string[] = [];
  if (v4 !== '1') turnOn.push('nf_call_iptables', '1');
  if (v6 !== '1') turnOn.push('nf_call_ip6tables', '1');
  if (turnOn.length === 0) return [];
  const nsArgs = netns === undefined ? [] : ['-n', netns];
  await runScript(cmds.ip, [...nsArgs, 'link', 'set', 'dev', bridge, 'type', 'bridge', ...turnOn], { timeoutMs: COMMAND_TIMEOUT_MS, signal });
  return turnOn.filter((_, i) => i % 2 === 0);
}

/** Queue numbers referenced by any firewall rule in the namespace (iptables, ip6tables, nft). */
export async function queueNumbersInUse(cmds: HostCommands, netns: string | undefined, signal: AbortSignal): Promise<number[]> {
  const used = new Set<number>();
  const addRange = (a: number, b: number): void => {
    for (let n = a; n <= b && n - a < 65536; n++) used.add(n);
  };
  const scan = (text: string): void => {
    for (const m of text.matchAll(/--queue-num (\d+)/g)) used.add(Number(m[1]));
    for (const m of text.matchAll(/--queue-balance (\d+):(\d+)/g)) addRange(Number(m[1]), Number(m[2]));
  };
  for (const family of ['ipv4', 'ipv6'] as const) {
    scan((await runIn(cmds, netns, `${tool(cmds, family)}-save`, [], signal)).stdout);
  }
  // Rules of the other backend queue packets just the same (legacy and nft
  // tables both hook into netfilter); the nft side shows in `nft list ruleset`.
  for (const save of ['iptables-legacy-save', 'ip6tables-legacy-save']) {
    if (save === `${cmds.iptables}-save` || save === `${cmds.ip6tables}-save`) continue;
    const r = await runIn(cmds, netns, save, [], signal).catch((e: unknown) => {
      if (signal.aborted) throw e;
      return undefined;
    });
    if (r) scan(r.stdout);
  }
  // Native nft rules (not made by iptables) may queue too; nft may be absent.
  const nft = await runIn(cmds, netns, 'nft', ['list', 'ruleset'], signal, [0, 1]).catch((e: unknown) => {
    if (signal.aborted) throw e;
    return undefined;
  });
  for (const m of nft?.stdout.matchAll(/queue (?:flags [a-z,]+ )?(?:num|to) (\d+)(?:-(\d+))?/g) ?? []) {
    addRange(Number(m[1]), Number(m[2] ?? m[1]));
  }
  return [...used].sort((a, b) => a - b);
}

/**
 * The tag in every rule's comment: `remus:<operation>:<device>`. A device id
 * that is not plain (A-Z a-z 0-9 _ . -, up to 64) is replaced by `x` and its
 * hex encoding (cut to 64 characters), so the tag never needs quoting.
 */
export function ruleTag(operation: string, deviceId: string): string {
  const safe = /^[A-Za-z0-9_.-]{1,64}$/.test(deviceId) ? deviceId : `x${Buffer.from(deviceId).toString('hex')}`.slice(0, 64);
  return `remus:${operation}:${safe}`;
}

/**
 * The rule that queues what the guest sends through `ifname`: in the raw
 * table's PREROUTING chain (before conntrack and routing, so forwarded and
 * host-bound packets alike, and conntrack sees released packets in order),
 * inserted first. Routed: `-i ifname`; bridged: `-m physdev --physdev-in
 * ifname`. Never `--queue-bypass`: with no buffer bound the kernel drops.
 */
export function ruleSpec(mode: Mode, ifname: string, tag: string, queue: number): string[] {
  const match = mode === 'routed' ? ['-i', ifname] : ['-m', 'physdev', '--physdev-in', ifname];
  return [...match, '-m', 'comment', '--comment', tag, '-j', 'NFQUEUE', '--queue-num', String(queue)];
}

/** Inserts the rule first in raw PREROUTING. */
export async function insertRule(
  cmds: HostCommands,
  netns: string | undefined,
  family: Family,
  spec: readonly string[],
  signal: AbortSignal,
): Promise<void> {
  await runIn(cmds, netns, tool(cmds, family), ['-w', '5', '-t', 'raw', '-I', 'PREROUTING', '1', ...spec], signal);
}

/** One of our rules as found in the namespace. */
export interface FoundRule {
  readonly family: Family;
  readonly tag: string;
  /** The rule's spec (after `-A PREROUTING`). */
  readonly spec: readonly string[];
  readonly queue: number | undefined;
}

/** Lists raw PREROUTING rules whose comment tag satisfies `want`. */
export async function findRules(
  cmds: HostCommands,
  netns: string | undefined,
  want: (tag: string) => boolean,
  signal: AbortSignal | undefined,
): Promise<FoundRule[]> {
  const found: FoundRule[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const r = await runIn(cmds, netns, tool(cmds, family), ['-w', '5', '-t', 'raw', '-S', 'PREROUTING'], signal);
    for (const line of r.stdout.split('\n')) {
      // Our tags never contain spaces, so splitting on whitespace is exact for
      // our rules; iptables-nft quotes comments, the legacy tool does not.
      const words = line
        .trim()
        .split(/\s+/)
        .map((w) => w.replace(/^"(.*)"$/, '$1'));
      if (words[0] !== '-A' || words[1] !== 'PREROUTING') continue;
      const c = words.indexOf('--comment');
      const tag = c >= 0 ? words[c + 1] : undefined;
      if (tag === undefined || !tag.startsWith('remus:') || !want(tag)) continue;
      const q = words.indexOf('--queue-num');
      found.push({ family, tag, spec: words.slice(2), queue: q >= 0 ? Number(words[q + 1]) : undefined });
    }
  }
  return found;
}

/** Deletes one rule found by {@link findRules}; a rule already gone is fine. */
export async function deleteRule(cmds: HostCommands, netns: string | undefined, rule: FoundRule, signal: AbortSignal | undefined): Promise<void> {
  await runIn(cmds, netns, tool(cmds, rule.family), ['-w', '5', '-t', 'raw', '-D', 'PREROUTING', ...rule.spec], signal, [0, 1]);
}
