// Builds and runs the libnl-from-C peer (libnl-peer.c): the qdisc change
// Xen's netbuf makes, timed in C, so nic-netbuf's own ops can be compared
// with it in the same run (issue 18). Needs gcc and libnl-route-3-dev
// (`.ci/run` installs them); the binary is cached by source hash.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const source = new URL('./libnl-peer.c', import.meta.url).pathname;

/** Compiles the peer (once per source version) and returns its path. Throws naming the missing package. */
export function buildPeer() {
  const hash = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'remus-libnl-peer');
  const bin = join(dir, `libnl-peer-${hash}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  let flags;
  try {
    flags = execFileSync('pkg-config', ['--cflags', '--libs', 'libnl-route-3.0'], { encoding: 'utf8' }).trim().split(/\s+/);
  } catch {
    throw new Error('the libnl peer needs pkg-config and libnl-route-3-dev: apt-get install pkg-config libnl-route-3-dev');
  }
  execFileSync('gcc', ['-O2', '-o', bin, source, ...flags], { stdio: ['ignore', 'inherit', 'inherit'] });
  return bin;
}

/**
 * Runs the peer on `ifname` in this process's namespace (or `netns`), `iterations` changes.
 * kind: 'plug' (alternating buffer / release_one) or 'bfifo' (the stand-in where sch_plug is missing).
 * Returns { n, medianUs, p99Us }.
 */
export function runPeer({ ifname, iterations, kind, netns }) {
  const bin = buildPeer();
  const args = [ifname, String(iterations), kind, ...(kind === 'bfifo' ? ['10000000'] : [])];
  const out = netns
    ? execFileSync('ip', ['netns', 'exec', netns, bin, ...args], { encoding: 'utf8' })
    : execFileSync(bin, args, { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop());
}
