/**
 * `remus agent` with `service.type: "process"` across two hosts (namespaces
 * `ha` and `hb` of the nemesis lab, a real three-member etcd): the operator's
 * command (src/process-service.ts, a counter whose state is a file) runs in
 * a service namespace of the primary host under the process domain, its
 * state file replicated at every checkpoint, its replies held by the real
 * nic-nfqueue on the host side of its veth until the backup acknowledged the
 * checkpoint. The primary host dies (agent and service SIGKILLed); the
 * backup promotes, writes the last acknowledged state, starts the command,
 * and the client's counter goes on above everything it saw: the history
 * checker finds no violation (no reply of a lower epoch after a higher one,
 * counters strictly increasing: nothing acknowledged to the client lost).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runScript } from '@remus/core';
import { HOSTS, NemesisLab, mono, type HostName } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const SERVICE = join(here, '..', 'dist', 'process-service.js');
const NFQUEUE = join(here, '..', '..', '..', 'packages', 'nic-nfqueue');
const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p)) as string;
const svcNs = (h: string): string => `rmsvc${process.pid}-${h}`;

let lab: NemesisLab | undefined;
beforeAll(async () => {
  lab = await NemesisLab.create();
  // Each host: a service namespace behind a veth (`vs0` on the host side: nic-nfqueue holds what the
  // service sends through it), the host's service address forwarded there (DNAT).
  for (const h of HOSTS) {
    const hostNs = lab.net.node(h).netns;
    const ns = svcNs(h);
    await runScript(IP, ['netns', 'add', ns], { timeoutMs: 10_000 });
    await runScript(IP, ['-n', ns, 'link', 'set', 'lo', 'up'], { timeoutMs: 10_000 });
    await runScript(IP, ['-n', hostNs, 'link', 'add', 'vs0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns], { timeoutMs: 10_000 });
    await runScript(IP, ['-n', hostNs, 'addr', 'add', '10.88.0.1/30', 'dev', 'vs0'], { timeoutMs: 10_000 });
    await runScript(IP, ['-n', hostNs, 'link', 'set', 'vs0', 'up'], { timeoutMs: 10_000 });
    await runScript(IP, ['-n', ns, 'addr', 'add', '10.88.0.2/30', 'dev', 'eth0'], { timeoutMs: 10_000 });
    await runScript(IP, ['-n', ns, 'link', 'set', 'eth0', 'up'], { timeoutMs: 10_000 });
    await runScript(IP, ['-n', ns, 'route', 'add', 'default', 'via', '10.88.0.1'], { timeoutMs: 10_000 });
    await lab.net.run(h, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    await lab.net.run(h, 'iptables', ['-w', '5', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '-d', lab.net.node(h).ip, '--dport', '7800', '-j', 'DNAT', '--to-destination', '10.88.0.2:7800']);
  }
}, 180_000);

afterAll(async () => {
  for (const h of HOSTS) {
    const ns = svcNs(h);
    const pids = (await runScript(IP, ['netns', 'pids', ns], { timeoutMs: 10_000 }).catch(() => ({ stdout: '' }))).stdout.split('\n').filter(Boolean);
    for (const p of pids) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // Gone.
      }
    }
    await runScript(IP, ['netns', 'del', ns], { timeoutMs: 10_000 }).catch(() => undefined);
  }
  await lab?.destroy();
});

/** SIGKILLs every process in host `h`'s service namespace (the service dies with its host). */
async function killService(h: HostName): Promise<number> {
  const pids = (await runScript(IP, ['netns', 'pids', svcNs(h)], { timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
  for (const p of pids) process.kill(Number(p), 'SIGKILL');
  return pids.length;
}

it('process workload: the primary host dies, the backup restarts the command from the last acknowledged state file, the counter goes on above every reply seen; replies held by nic-nfqueue until acknowledged; the checker finds no violation', async () => {
  const l = lab!;
  const sc = await l.scenario({
    ttlSeconds: 2,
    intervalMs: 50,
    service: {
      type: 'process',
      command: [IP, 'netns', 'exec', svcNs('{host}'), process.execPath, SERVICE],
      stateFile: 'svc-{host}.json',
      output: { package: '@remus/nic-nfqueue', subkind: 'nic-nfqueue', params: { ifname: 'vs0' } },
    },
  });
  // The output plugin is installed next to the config, as an operator would.
  mkdirSync(join(sc.dir, 'node_modules', '@remus'), { recursive: true });
  symlinkSync(NFQUEUE, join(sc.dir, 'node_modules', '@remus', 'nic-nfqueue'));
  try {
    await sc.start('ha');
    await sc.waitReplies('ha', 60, 30_000);
    const primary = sc.agent('ha');
    expect(primary.events.some((e) => e.host === 'ha' && e.type === 'mode' && e.mode === 'primary' && e.service === 'process')).toBe(true);

    // nic-nfqueue holds what the service sends through vs0 on the primary (and only there).
    expect(await l.net.run('ha', 'iptables', ['-w', '5', '-t', 'raw', '-S', 'PREROUTING'])).toMatch(/-i vs0 .*-j NFQUEUE --queue-num \d+/);
    expect(await l.net.run('hb', 'iptables', ['-w', '5', '-t', 'raw', '-S', 'PREROUTING'])).not.toContain('NFQUEUE');

    // The primary host dies: its agent (and with it nic-nfqueue's buffer, whose held replies are dropped) and its service.
    const killedAt = mono();
    const epoch1 = sc.currentEpoch();
    const seenBefore = sc.replies.length;
    primary.signal('SIGKILL');
    expect(await killService('ha')).toBeGreaterThan(0);
    const promoted = await sc.agent('hb').waitEvent((e) => e.host === 'hb' && e.type === 'mode' && e.mode === 'primary', 30_000);
    await sc.waitReplies('hb', 30, 30_000, seenBefore);
    const first = sc.firstReplyAbove(epoch1, killedAt);
    expect(first?.h).toBe('hb');

    const r = sc.check();
    expect(r.violations, r.violations.join('\n')).toEqual([]);
    const fromA = sc.replies.filter((x) => x.h === 'ha');
    const fromB = sc.replies.filter((x) => x.h === 'hb');
    const lastA = Math.max(...fromA.map((x) => x.n));
    expect(fromA.length).toBeGreaterThan(60);
    expect(Math.min(...fromB.map((x) => x.n)), 'hb continues above every count ha released').toBeGreaterThan(lastA);
    expect(promoted.epoch as number).toBeGreaterThan(epoch1);
    // hb's state file now holds its own count (the command wrote it after starting from the acknowledged one).
    const stateB = JSON.parse(readFileSync(join(sc.dir, 'svc-hb.json'), 'utf8')) as { counter: number };
    expect(stateB.counter).toBeGreaterThanOrEqual(Math.max(...fromB.map((x) => x.n)));
    // ha comes back (a new agent: a backup that gets a full state), then hb dies: ha promotes, first
    // reaping the cgroup its killed agent's phase left (recorded next to the state file), and serves on.
    const record = JSON.parse(readFileSync(join(sc.dir, 'svc-ha.json.operation'), 'utf8')) as { cgroup: string };
    expect(existsSync(record.cgroup), 'the killed phase left its cgroup').toBe(true);
    // The killed agent's NFQUEUE rule is still there (nothing runs that could remove it).
    const nfq = async (h: HostName): Promise<string[]> => (await l.net.run(h, 'iptables', ['-w', '5', '-t', 'raw', '-S', 'PREROUTING'])).split('\n').filter((x) => x.includes('NFQUEUE'));
    const stale = await nfq('ha');
    expect(stale, 'the killed agent left its rule').toHaveLength(1);
    const mark = sc.events.length;
    sc.startAgent('ha');
    await sc.agent('hb').waitEvent((e) => e.host === 'hb' && e.type === 'backup-current', 30_000, mark);
    const killed2 = mono();
    const epoch2 = sc.currentEpoch();
    const seen2 = sc.replies.length;
    sc.agent('hb').signal('SIGKILL');
    expect(await killService('hb')).toBeGreaterThan(0);
    const back = await sc.agent('ha').waitEvent((e) => e.host === 'ha' && e.type === 'mode' && e.mode === 'primary', 30_000, mark);
    await sc.waitReplies('ha', 30, 30_000, seen2);
    const first2 = sc.firstReplyAbove(epoch2, killed2);
    expect(first2?.h).toBe('ha');
    expect(existsSync(record.cgroup), "the promoted host reaped its killed phase's cgroup").toBe(false);
    // ...and its killed agent's output rule (recorded in its state directory), through nic-nfqueue's reap: one rule, the live one.
    const reaped = sc.events.slice(mark).find((e) => e.host === 'ha' && e.type === 'output-reaped');
    expect(reaped?.errors, JSON.stringify(reaped)).toEqual([]);
    expect((reaped?.removed as string[]).join('\n')).toMatch(/NFQUEUE|queue/);
    const live = await nfq('ha');
    expect(live).toHaveLength(1);
    expect(live[0]).not.toBe(stale[0]);
    const r2 = sc.check();
    expect(r2.violations, r2.violations.join('\n')).toEqual([]);
    expect(back.epoch as number).toBeGreaterThan(promoted.epoch as number);
    console.log(
      `process workload, back to ha: kill of hb to first reply from ha ${(first2!.at - killed2).toFixed(0)} ms; ${r2.replies} replies checked in all, 0 violations; epochs ${String(promoted.epoch)} -> ${String(back.epoch)}`,
    );
    console.log(
      `process workload across two hosts: ${r.replies} replies checked (${fromA.length} from ha, ${fromB.length} from hb), 0 violations; ` +
        `ha's last count ${lastA}, hb's first ${Math.min(...fromB.map((x) => x.n))} (gap = replies held in the unacknowledged epoch, dropped); ` +
        `kill to first reply from hb ${(first!.at - killedAt).toFixed(0)} ms at TTL 2 s; epochs ${epoch1} -> ${String(promoted.epoch)}`,
    );
  } catch (e) {
    // What the agents said, for the failure's message.
    const said = sc.events.slice(-40).map((x) => JSON.stringify(x)).join('\n');
    const stderr = HOSTS.map((h) => `${h}: ${sc.agents.get(h)?.stderr.slice(-10).join('\n') ?? ''}`).join('\n');
    throw new Error(`${String(e)}\n--- events\n${said}\n--- stderr\n${stderr}`);
  } finally {
    await sc.stop();
    // A host killed last keeps its phase's (empty) cgroup until its next promotion: removed here.
    for (const h of HOSTS) removeLeftCgroup(join(sc.dir, `svc-${h}.json.operation`));
  }
}, 240_000);

/** Removes the empty freezer cgroup a killed agent's phase recorded (its processes were killed with its host). */
function removeLeftCgroup(recordFile: string): void {
  if (!existsSync(recordFile)) return;
  const { cgroup } = JSON.parse(readFileSync(recordFile, 'utf8')) as { cgroup: string };
  if (!/\/remus-[A-Za-z0-9]+$/.test(cgroup) || !existsSync(cgroup)) return;
  for (const child of readdirSync(cgroup, { withFileTypes: true })) if (child.isDirectory()) rmdirSync(join(cgroup, child.name));
  rmdirSync(cgroup);
}
