import { execFileSync, spawnSync } from 'node:child_process';

/** Runs `file args` (no shell) and returns stdout; throws with stderr on a non-zero exit. */
export function sh(file: string, args: readonly string[]): string {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs `file args` (no shell); never throws. */
export function tryRun(file: string, args: readonly string[]): { status: number; out: string } {
  const r = spawnSync(file, args, { encoding: 'utf8' });
  return { status: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}
