/**
 * `remus doctor`: what this host can do for Remus, which installed plugins
 * would take which devices, and how to fix what is missing. Kernel features
 * are probed for real, inside a scratch network namespace that is deleted
 * afterwards, so the host is left as it was.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { DEFAULT_REALTIME_PRIORITY, createCheckpointDevices, describeCause, runScript, type DeviceSpec } from '@remus/core';
import { loadDomainCriu, loadDomainProcess, type DomainCriuLib } from './libs.js';
import { ip, removeNetns } from './netns.js';
import { findInstalledPlugins, installCommand, loadPluginFrom } from './plugins.js';

/** One capability and whether the host has it. */
export interface Check {
  readonly name: string;
  readonly ok: boolean;
  /** What was found (version, path) or what failed. */
  readonly detail: string;
  /** How to get it, when missing. */
  readonly fix?: string;
}

/** What one installed plugin's subkind would do here. */
export interface PluginReport {
  readonly package: string;
  readonly version?: string;
  readonly error?: string;
  readonly subkinds: { readonly name: string; readonly kind?: string; readonly verdict: string }[];
}

export interface DoctorReport {
  readonly checks: Check[];
  readonly plugins: PluginReport[];
  /** With a config: which subkind would take each device. */
  readonly devices?: { readonly device: string; readonly subkind?: string; readonly declined: { subkind: string; reason: string }[]; readonly error?: string; readonly code?: string }[];
}

async function tryRun(file: string, args: readonly string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await runScript(file, args, { timeoutMs: 15_000 });
    return { ok: true, out: (r.stdout || r.stderr).trim() };
  } catch (e) {
    const details = (e as { details?: { stderrTail?: string } }).details;
    return { ok: false, out: (details?.stderrTail || describeCause(e) || '').trim() };
  }
}

/** The first executable `name` on PATH, or undefined. */
function findProgram(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    if (dir === '') continue;
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/** Probes the host. Leaves nothing behind (the scratch namespace is deleted even on failure). */
export async function hostChecks(): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (c: Check): void => void checks.push(c);
  add({ name: 'root', ok: process.getuid?.() === 0, detail: `uid ${process.getuid?.()}`, fix: 'run remus as root (cgroups, namespaces, iptables and qdiscs need it)' });
  let domainProcess: Awaited<ReturnType<typeof loadDomainProcess>> | undefined;
  try {
    domainProcess = await loadDomainProcess('remus doctor (the cgroup freezer check)');
  } catch (e) {
    add({ name: 'cgroup freezer', ok: false, detail: describeCause(e) ?? '', fix: 'install @remus/domain-process next to remus (the process domain)' });
  }
  for (const v of domainProcess ? (['v1', 'v2'] as const) : []) {
    try {
      const h = domainProcess!.detectFreezer(v);
      add({ name: `cgroup freezer ${v}`, ok: true, detail: h.root });
    } catch (e) {
      add({ name: `cgroup freezer ${v}`, ok: false, detail: describeCause(e) ?? '', fix: v === 'v1' ? 'mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer' : 'mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)' });
    }
  }
  for (const tool of ['ip', 'tc', 'iptables']) {
    const path = findProgram(tool);
    add({ name: `${tool} command`, ok: path !== undefined, detail: path ?? 'not found', fix: tool === 'iptables' ? 'apt-get install iptables' : 'apt-get install iproute2' });
  }
  // What `realtime: auto` would get: a throwaway `true` under SCHED_FIFO, the policy core's applyRealtime asks for.
  const rt = await tryRun('chrt', ['--fifo', '--reset-on-fork', String(DEFAULT_REALTIME_PRIORITY), 'true']);
  add({
    name: 'real-time scheduling (SCHED_FIFO)',
    ok: rt.ok,
    detail: rt.ok ? `the checkpoint loop can run under SCHED_FIFO priority ${DEFAULT_REALTIME_PRIORITY}` : `${rt.out}: the loop would run at normal priority (realtime "auto") or not at all (realtime "on")`,
    fix: 'run as root with CAP_SYS_NICE (a container needs it granted); under cgroup v1 with RT group scheduling, give the cgroup cpu.rt_runtime_us; util-linux provides chrt',
  });
  const ns = `remus-doctor-${process.pid}`;
  const made = await tryRun('ip', ['netns', 'add', ns]);
  add({ name: 'network namespaces', ok: made.ok, detail: made.ok ? 'ip netns add works' : made.out, fix: 'a kernel with CONFIG_NET_NS and iproute2' });
  if (made.ok) {
    try {
      await tryRun('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      const plug = await tryRun('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'lo', 'root', 'plug', 'limit', '10000']);
      add({
        name: 'sch_plug qdisc',
        ok: plug.ok,
        detail: plug.ok ? 'a plug qdisc can be created (nic-netbuf works)' : `missing: ${plug.out}`,
        fix: 'modprobe sch_plug, or a kernel built with CONFIG_NET_SCH_PLUG; without it @remus/nic-nfqueue buffers in userspace',
      });
      const ifb = await tryRun('ip', ['-n', ns, 'link', 'add', 'remusdoc0', 'type', 'ifb']);
      add({ name: 'ifb devices', ok: ifb.ok, detail: ifb.ok ? 'an ifb device can be created' : `missing: ${ifb.out}`, fix: 'modprobe ifb, or CONFIG_IFB' });
      const veth = await tryRun('ip', ['-n', ns, 'link', 'add', 'remusdoc1', 'type', 'veth', 'peer', 'name', 'remusdoc2']);
      add({ name: 'veth pairs', ok: veth.ok, detail: veth.ok ? 'a veth pair can be created' : `missing: ${veth.out}`, fix: 'modprobe veth, or CONFIG_VETH' });
      const nfq = await tryRun('ip', ['netns', 'exec', ns, 'iptables', '-w', '5', '-A', 'OUTPUT', '-m', 'comment', '--comment', 'remus-doctor', '-j', 'NFQUEUE', '--queue-num', '4242']);
      add({
        name: 'iptables NFQUEUE',
        ok: nfq.ok,
        detail: nfq.ok ? 'an NFQUEUE rule can be added (nic-nfqueue works)' : `missing: ${nfq.out}`,
        fix: 'apt-get install iptables; a kernel with CONFIG_NETFILTER_XT_TARGET_NFQUEUE and CONFIG_NETFILTER_NETLINK_QUEUE',
      });
    } finally {
      await removeNetns(ns).catch(() => undefined);
    }
  }
  const drbdTools = findProgram('drbdadm');
  add({ name: 'DRBD kernel module', ok: existsSync('/proc/drbd'), detail: existsSync('/proc/drbd') ? '/proc/drbd present' : 'no /proc/drbd', fix: 'modprobe drbd (a kernel with the DRBD module); disk replication needs it on both hosts' });
  add({ name: 'DRBD tools', ok: drbdTools !== undefined, detail: drbdTools ?? 'drbdadm not found', fix: 'apt-get install drbd-utils' });
  const qemu = findProgram('qemu-system-x86_64');
  const qv = qemu ? await tryRun(qemu, ['--version']) : { ok: false, out: 'not found' };
  add({ name: 'QEMU', ok: qv.ok, detail: qv.out.split('\n')[0] ?? '', fix: 'apt-get install qemu-system-x86' });
  add({ name: 'KVM', ok: existsSync('/dev/kvm'), detail: existsSync('/dev/kvm') ? '/dev/kvm present' : 'no /dev/kvm', fix: 'enable virtualisation in the firmware and load kvm_intel/kvm_amd; QEMU falls back to TCG (slow)' });
  // The CRIU domain (memory, files and TCP connections replicated): its own checks, when it is installed.
  let criu: DomainCriuLib | undefined;
  try {
    criu = await loadDomainCriu('remus doctor (the CRIU checks)');
  } catch (e) {
    add({ name: 'CRIU domain', ok: false, detail: 'not installed', fix: `${installCommand('@remus/domain-criu')} to replicate a process tree's memory and TCP connections` });
  }
  for (const c of criu ? await criu.doctorChecks({ timeoutMs: 20_000 }) : []) {
    add({ name: `CRIU ${c.name}`, ok: c.status !== 'error', detail: c.status === 'warning' ? `${c.message} (degraded)` : c.message, ...(c.status === 'error' ? { fix: c.name === 'criu-check' ? 'install CRIU 4.1 or later (Debian 12 ships 3.17), or run on a kernel older than 6.13; see @remus/domain-criu\'s README' : c.name === 'criu' ? 'apt-get install criu' : 'run remus as root' } : {}) });
  }
  return checks;
}

/** Loads every installed plugin and says what each subkind would do with a device of its kind. */
export async function pluginReports(dirs: readonly string[]): Promise<PluginReport[]> {
  const out: PluginReport[] = [];
  for (const name of findInstalledPlugins(dirs)) {
    let loaded;
    try {
      loaded = await loadPluginFrom(name, dirs);
    } catch (e) {
      // A library without plugin metadata (e.g. @remus/domain-process) is not a plugin.
      if (!/does not export `plugin`/.test(describeCause(e) ?? '')) out.push({ package: name, error: describeCause(e), subkinds: [] });
      continue;
    }
    const subkinds: PluginReport['subkinds'][number][] = [];
    for (const sub of Object.keys(loaded.plugin.subkinds)) {
      try {
        const ops = loaded.plugin.subkinds[sub]?.({});
        if (!ops) continue;
        subkinds.push({ name: sub, kind: ops.kind, verdict: ops.kind === 'nic' ? await probe(ops.kind, () => [ops]) : `provides ${ops.kind} devices (whether it takes yours depends on their params: \`remus doctor --config FILE\` checks them)` });
      } catch (e) {
        subkinds.push({ name: sub, verdict: `needs options: ${describeCause(e)}` });
      }
    }
    out.push({ package: name, version: loaded.plugin.version, subkinds });
  }
  return out;
}

/**
 * Plans a probe NIC (the loopback interface, present everywhere) against
 * the subkind: a decline shows its reason. Planning runs init and match
 * only, which must not change anything. Other kinds are not probed: a
 * device without params tells nothing, and a subkind that correctly
 * declines one would look unusable.
 */
async function probe(kind: string, ops: () => Parameters<typeof createCheckpointDevices>[0]['ops']): Promise<string> {
  const device: DeviceSpec = { id: 'doctor-probe', kind, params: { ifname: 'lo' } };
  try {
    const [a] = await createCheckpointDevices({ ops: ops(), devices: [device], operationId: `doctor${process.pid}` }).plan();
    if (a?.subkind) return `would take ${kind} devices`;
    if (a?.declined[0]) return `declines ${kind} devices here: ${a.declined[0].reason}`;
    if (a?.error) return `would take ${kind} devices given their params (probe without params: ${firstLine(a.error.message)})`;
    return `handles ${kind} devices`;
  } catch (e) {
    return `handles ${kind} devices (probe failed: ${firstLine(describeCause(e) ?? '')})`;
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** Text form of a doctor report. */
export function formatDoctor(r: DoctorReport): string {
  const lines: string[] = ['host:'];
  for (const c of r.checks) {
    lines.push(`  ${c.ok ? 'ok  ' : 'MISS'}  ${c.name}: ${c.detail}`);
    if (!c.ok && c.fix) lines.push(`        fix: ${c.fix}`);
  }
  lines.push('plugins:');
  if (r.plugins.length === 0) lines.push(`  none installed: add one, e.g. \`${installCommand('@remus/nic-nfqueue')}\``);
  for (const p of r.plugins) {
    lines.push(`  ${p.package}${p.version ? `@${p.version}` : ''}${p.error ? `: not usable: ${p.error}` : ''}`);
    for (const s of p.subkinds) lines.push(`    ${s.name}${s.kind ? ` (${s.kind})` : ''}: ${s.verdict}`);
  }
  if (r.devices) {
    lines.push('devices:');
    for (const d of r.devices) {
      const why = d.declined.map((x) => `${x.subkind}: ${x.reason}`).join('; ');
      const none = d.code === undefined || d.code === 'DEVICE_NOT_SUPPORTED' ? `NOT SUPPORTED${d.error ? ` (${firstLine(d.error)})` : ''}` : `MATCH FAILED: [${d.code}] ${firstLine(d.error ?? '')}`;
      lines.push(`  ${d.device}: ${d.subkind ? `taken by ${d.subkind}` : none}${why ? `  [declined: ${why}]` : ''}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
