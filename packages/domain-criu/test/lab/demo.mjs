// Kernel-lab body (root, in the lab's Debian 6.1 guest, where Debian's CRIU
// 3.17 works): `remus demo` as a user runs it. CRIU works on this kernel, so
// after the process-domain demo it shows the CRIU failover (the CLI's
// demo/criu-failover.ts): a counter service in its own namespace protected
// with its memory, the primary killed, the backup restores it with the
// client's TCP connection. Checks on the demo's own printout and on the
// guest afterwards: it passed; the CRIU part passed with no gap or repeat,
// no reply before its acknowledgement and the connection kept; nothing of
// it is left (namespaces, freezer cgroups, journals, image directories, the
// restored service). Prints the demo's output, FIGURES lines and PASS.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { labLog, loadNetbufModules, runBody, setupFreezer } from './guest-setup.mjs';

const REMUS = new URL('../../../cli/dist/bin.js', import.meta.url).pathname;
const STATE = '/tmp/rmcriu-demo-state';
const { check } = labLog('criu-demo-lab');

async function main() {
  rmSync(STATE, { recursive: true, force: true });
  mkdirSync(STATE, { recursive: true, mode: 0o700 });
  setupFreezer();
  loadNetbufModules();
  // Earlier bodies in this guest SIGKILL their `remus run` and leave its cgroup; only new ones are the demo's.
  const cgroupsBefore = new Set(readdirSync('/sys/fs/cgroup/freezer').filter((n) => n.startsWith('remus-')));
  const child = spawn(process.execPath, [REMUS, 'demo', '--duration', '1500', '--state-dir', STATE], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (b) => {
    out += b;
    process.stdout.write(b);
  });
  const code = await new Promise((r) => child.on('close', (c) => r(c)));
  const lines = out.split('\n');
  check(code === 0 && out.includes('remus demo PASSED'), `remus demo exited ${code} and says PASSED`);
  const said = lines.filter((l) => /^CRIU: |^CRIU failover not shown/.test(l));
  check(said.length === 1 && /^CRIU: works on this kernel/.test(said[0]), `one line says CRIU works here and the failover follows: ${said[0]}`);
  const head = lines.find((l) => l.includes('CRIU failover: passed'));
  check(head !== undefined, `the summary's CRIU part passed: ${head}`);
  const m = /checkpoint (\d+) restored \(primary's last committed: (\d+)\), criu restore ([\d.]+) ms, kill to first reply on the same connection ([\d.]+) ms/.exec(head);
  check(m && Number(m[1]) >= Number(m[2]), `the backup restored checkpoint ${m?.[1]}, at least the primary's last committed (${m?.[2]})`);
  check(Number(m[4]) >= Number(m[3]), `the first reply of the restored service came after its restore: ${m[4]} ms after the kill, restore ${m[3]} ms`);
  const clientLine = lines.find((l) => l.includes('replies on one connection'));
  const c = /client: (\d+) replies on one connection \((\d+) before the kill\), 0 gaps or repeats in the counter, 0 of (\d+) replies before their checkpoint's acknowledgement/.exec(clientLine ?? '');
  check(c && !clientLine.includes('BROKE') && Number(c[1]) >= Number(c[2]) + 20 && Number(c[3]) > 0, `one connection kept, counter without gap or repeat, no early reply: ${clientLine?.trim()}`);
  const dumps = lines.find((l) => l.includes('incremental (p50'));
  const d = /checkpoints, pause p50 ([\d.]+) ms; dumps (\d+) full \(p50 ([\d.]+) ms, (\d+) bytes\) and (\d+) incremental \(p50 ([\d.]+) ms, (\d+) bytes\)/.exec(dumps ?? '');
  check(d && Number(d[5]) > 0 && Number(d[7]) < Number(d[4]), `incremental dumps after the first full one, fewer bytes: ${dumps?.trim()}`);
  check(out.includes('nothing left'), 'the demo says nothing is left');

  // The guest afterwards: nothing of the demo.
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  check(!netns.includes('remus-demo-'), `no demo namespace left (ip netns list: ${JSON.stringify(netns.trim())})`);
  const cgroups = readdirSync('/sys/fs/cgroup/freezer').filter((n) => n.startsWith('remus-') && !cgroupsBefore.has(n));
  check(cgroups.length === 0, `no freezer cgroup of the demo left (${cgroups.join(', ')}; ${cgroupsBefore.size} of earlier bodies)`);
  const state = readdirSync(STATE);
  check(state.length === 0, `the state directory is empty: no journal, no image directory (${state.join(', ')})`);
  const ps = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('10.77.3.100'));
  check(ps.length === 0, `no demo service or client runs (${ps.join(' | ')})`);

  console.log(`FIGURES demo criu restored=${m[1]} last_committed=${m[2]} restore_ms=${m[3]} kill_to_first_reply_ms=${m[4]}`);
  console.log(`FIGURES demo criu replies=${c[1]} before_kill=${c[2]} judged=${c[3]} pause_p50_ms=${d[1]} full=${d[2]}x${d[4]}B/${d[3]}ms incremental=${d[5]}x${d[7]}B/${d[6]}ms ratio=${(Number(d[7]) / Number(d[4])).toFixed(4)}`);
  console.log('PASS');
}

await runBody(main, () => rmSync(STATE, { recursive: true, force: true }));
