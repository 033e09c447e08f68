/**
 * `autoReprotect` in a pair file: after each failover, the driver of
 * `remus colo start` runs the operator's command, which starts a fresh
 * secondary QEMU and prints the new pair file (the survivor as `primary`) on
 * stdout; the pair file is validated like `remus colo reprotect`'s, and
 * @remus/colo's `autoReprotect` then reprotects the survivor onto the fresh
 * secondary and watches the new pair in turn.
 *
 * The command gets on stdin one JSON object:
 * `{ "name", "failover": { survivor, why, ... }, "survivor": { "role", "qmp", "qmpEvents", "pid" } }`
 * and in its environment `REMUS_COLO_PAIR` (the pair name) and
 * `REMUS_COLO_SURVIVOR` (`primary` or `secondary`: the old role of the side
 * that serves). It must leave nothing holding its stdout open (start QEMU
 * with its output redirected, e.g. `-daemonize`), and exit 0 within
 * `autoReprotect.timeoutMs`; then its process group is killed.
 */
import { RemusError, runScript } from '@remus/core';
import type { ColoStatus } from '@remus/colo';
import { loadPairLibs, validatePairConfig, type ColoAutoReprotectConfig, type ColoPairConfig } from './pair.js';

type Failover = NonNullable<ColoStatus['failover']>;

/** What the command receives on stdin. */
export function hookInput(cfg: ColoPairConfig, failover: Failover): Record<string, unknown> {
  const { devices: _devices, ...survivor } = cfg.description[failover.survivor];
  return { name: cfg.name, failover, survivor: { role: failover.survivor, ...survivor } };
}

/**
 * Runs an autoReprotect command (an argument vector in its own process
 * group, bounded by its `timeoutMs`) with `input` as JSON on stdin and `env`
 * added, and parses what it printed as JSON. Throws SCRIPT_FAILED /
 * SCRIPT_TIMEOUT / ABORTED from the command, INVALID_ARGUMENT naming the
 * command and what it `mustPrint` when its output is not JSON. `source`
 * names the output in the caller's further messages.
 */
export async function runHook(
  hook: ColoAutoReprotectConfig,
  input: Record<string, unknown>,
  env: Record<string, string>,
  mustPrint: string,
  signal: AbortSignal,
): Promise<{ raw: unknown; source: string }> {
  const [file, ...args] = hook.command as [string, ...string[]];
  const r = await runScript(file, args, { input: JSON.stringify(input), env, timeoutMs: hook.timeoutMs, signal });
  const source = `the output of autoReprotect.command (${file})`;
  try {
    return { raw: JSON.parse(r.stdout), source };
  } catch (e) {
    throw new RemusError('INVALID_ARGUMENT', `${source} is not JSON (${(e as Error).message}): it must print ${mustPrint}`);
  }
}

/**
 * Runs the command for the failover of the pair `cfg` and returns the new
 * pair's validated config. Throws SCRIPT_FAILED / SCRIPT_TIMEOUT / ABORTED
 * from the command, INVALID_ARGUMENT naming the command when its output is
 * not a usable pair file (not JSON, another pair name, a primary that is not
 * the survivor, or any pair file problem).
 */
export async function pairFromHook(cfg: ColoPairConfig, hook: ColoAutoReprotectConfig, failover: Failover, signal: AbortSignal): Promise<ColoPairConfig> {
  const { raw: printed, source } = await runHook(
    hook,
    hookInput(cfg, failover),
    { REMUS_COLO_PAIR: cfg.name, REMUS_COLO_SURVIVOR: failover.survivor },
    'the new pair file, e.g. { "primary": <the survivor>, "secondary": <the fresh QEMU>, "migrationUri": ... }',
    signal,
  );
  // No name: the pair keeps its own.
  const raw = printed !== null && typeof printed === 'object' && !Array.isArray(printed) && (printed as Record<string, unknown>).name === undefined ? { ...(printed as object), name: cfg.name } : printed;
  const next = validatePairConfig(raw, await loadPairLibs('remus colo start (autoReprotect)'), source, true);
  if (next.name !== cfg.name) throw new RemusError('INVALID_ARGUMENT', `${source} names pair ${JSON.stringify(next.name)}: it must keep the name ${JSON.stringify(cfg.name)} (the control socket stays the same), or leave "name" out`);
  const survivorQmp = cfg.description[failover.survivor].qmp;
  if (next.description.primary.qmp !== survivorQmp) {
    throw new RemusError('INVALID_ARGUMENT', `${source}: its primary (QMP ${next.description.primary.qmp}) is not the survivor (the ${failover.survivor}, QMP ${survivorQmp}): the side that serves becomes the primary of the new pair`);
  }
  if (next.description.secondary.qmp === survivorQmp) throw new RemusError('INVALID_ARGUMENT', `${source}: its secondary is the survivor itself (QMP ${survivorQmp}): start a fresh QEMU for the secondary`);
  return next;
}
