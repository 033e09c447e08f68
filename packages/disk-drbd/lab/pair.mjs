// A DRBD 8.4 pair inside one kernel-lab guest (run as root there, never on
// the host): two loop devices on guest tmpfs files, resource r0 on minor 0
// (this host: Primary) and r1 on minor 1 (the "backup"), connected to each
// other over loopback (127.0.0.1:7789 and 127.0.0.2:7790: distinct addresses,
// because DRBD 8.4 names a connection by its endpoints) with protocol C. drbdsetup-84 drives
// the kernel directly, so no configuration file or host name is involved.
//
// `node pair.mjs up` makes it (idempotent within a guest), `down` removes it.
// Other lab programs import the helpers.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export const DIR = '/tmp/remus-disk-drbd-lab';
export const DRBDSETUP = '/lib/drbd/drbdsetup-84';
const STATE = `${DIR}/pair.json`;
const SIZE_MB = 16;

/** The two sides: the primary (here) and the backup (the peer). */
export const SIDES = [
  { resource: 'r0', minor: 0, local: 'ipv4:127.0.0.1:7789', peer: 'ipv4:127.0.0.2:7790', file: `${DIR}/r0.img` },
  { resource: 'r1', minor: 1, local: 'ipv4:127.0.0.2:7790', peer: 'ipv4:127.0.0.1:7789', file: `${DIR}/r1.img` },
];

export function run(cmd, args, { allowFail = false } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0 && !allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${(r.stderr || r.stdout || '').trim()}`);
  }
  return r;
}

export function drbdsetup(...args) {
  return run(DRBDSETUP, args);
}

/** cs/ro/ds/protocol of a minor, from /proc/drbd. */
export function minorLine(minor) {
  const text = readFileSync('/proc/drbd', 'utf8');
  const line = text.split('\n').find((l) => new RegExp(`^\\s*${minor}:`).test(l));
  return line?.trim() ?? '';
}

/** Waits until a minor's /proc/drbd line matches `re`, at most `ms`. */
export async function waitFor(minor, re, ms = 60_000) {
  const until = Date.now() + ms;
  for (;;) {
    const line = minorLine(minor);
    if (re.test(line)) return line;
    if (Date.now() > until) throw new Error(`minor ${minor} did not reach ${re} within ${ms} ms: ${line}\n${readFileSync('/proc/drbd', 'utf8')}`);
    await sleep(50);
  }
}

export function pair() {
  return JSON.parse(readFileSync(STATE, 'utf8'));
}

export async function up() {
  if (existsSync(STATE)) return pair();
  run('modprobe', ['drbd']);
  // drbdmeta takes a lock file in /var/lock (-> /run/lock); the guest's /run is empty.
  for (const d of ['/run/lock', '/var/lock', '/run/drbd', '/var/lib/drbd']) mkdirSync(d, { recursive: true });
  mkdirSync(DIR, { recursive: true });
  const loops = {};
  for (const s of SIDES) {
    execFileSync('truncate', ['-s', `${SIZE_MB}M`, s.file]);
    loops[s.resource] = run('losetup', ['--find', '--show', s.file]).stdout.trim();
    run('drbdmeta', ['--force', String(s.minor), 'v08', loops[s.resource], 'internal', 'create-md']);
    drbdsetup('new-resource', s.resource);
    drbdsetup('new-minor', s.resource, String(s.minor), '0');
    drbdsetup('attach', String(s.minor), loops[s.resource], loops[s.resource], 'internal');
  }
  for (const s of SIDES) {
    drbdsetup('connect', s.resource, s.local, s.peer, '--protocol=C');
  }
  for (const s of SIDES) await waitFor(s.minor, /cs:Connected/);
  // Both backing files are zeros: identical, so no initial sync is needed.
  drbdsetup('new-current-uuid', '0', '--clear-bitmap=yes');
  for (const s of SIDES) await waitFor(s.minor, /ds:UpToDate\/UpToDate/);
  drbdsetup('primary', '0');
  await waitFor(0, /ro:Primary\/Secondary/);
  const size = Number(run('blockdev', ['--getsize64', '/dev/drbd0']).stdout.trim());
  const state = { loops, size };
  writeFileSync(STATE, JSON.stringify(state));
  return state;
}

export function down() {
  const state = existsSync(STATE) ? pair() : { loops: {} };
  for (const s of SIDES) run(DRBDSETUP, ['down', s.resource], { allowFail: true });
  for (const loop of Object.values(state.loops)) run('losetup', ['-d', loop], { allowFail: true });
  rmSync(DIR, { recursive: true, force: true });
}

/** What the plugin must leave as it found it: each resource's configuration and its cs/ro/ds/protocol. */
export function snapshot() {
  return SIDES.map((s) => ({
    resource: s.resource,
    show: drbdsetup('show', s.resource).stdout,
    state: minorLine(s.minor).replace(/\s+/g, ' '),
  }));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const cmd = process.argv[2];
  if (cmd === 'up') {
    console.log(JSON.stringify(await up()));
    console.log(readFileSync('/proc/drbd', 'utf8'));
  } else if (cmd === 'down') {
    down();
  } else {
    console.error('usage: pair.mjs up|down');
    process.exit(2);
  }
}
