/** Argument helpers shared by the commands. */
import { parseArgs } from 'node:util';
import { MAX_TIMER_MS, RemusError, parseRealtimeMode, validateCount, validateDuration, type RealtimeMode } from '@remus/core';
import type { Io } from './io.js';
import type { ViewMode } from './progress.js';

/** Parsed options (strings and booleans) and the positional arguments (`_`). */
export type ArgValues<T extends Record<string, { type: 'string' | 'boolean' }>> = { [K in keyof T]?: T[K]['type'] extends 'string' ? string : boolean } & { _: string[] };

/**
 * Parses `rest` strictly; `positionals` allows that many positional arguments.
 * Every parse error (unknown option, missing value, unexpected argument) is
 * INVALID_ARGUMENT: a usage error, exit 2.
 */
export function args<T extends Record<string, { type: 'string' | 'boolean' }>>(rest: readonly string[], options: T, positionals = 0): ArgValues<T> {
  let r: ReturnType<typeof parseArgs>;
  try {
    r = parseArgs({ args: [...rest], options, allowPositionals: positionals > 0, strict: true });
  } catch (e) {
    if (!/^ERR_PARSE_ARGS/.test(String((e as { code?: unknown }).code))) throw e;
    throw new RemusError('INVALID_ARGUMENT', `${(e as Error).message} (see remus --help)`, { cause: e });
  }
  if (r.positionals.length > positionals) throw new RemusError('INVALID_ARGUMENT', `unexpected argument ${JSON.stringify(r.positionals[positionals])} (see remus --help)`);
  return { ...(r.values as object), _: r.positionals } as ArgValues<T>;
}

export function need(value: string | undefined, flag: string): string {
  if (value === undefined) throw new RemusError('INVALID_ARGUMENT', `${flag} is required (see remus --help)`);
  return value;
}

/**
 * A time flag in milliseconds: decimal digits only (no `0x3`, `1e9`, `1.5`),
 * then core's validateDuration (1 to {@link MAX_TIMER_MS}, what Node's
 * timers hold). Throws INVALID_ARGUMENT naming the flag.
 */
export function durationFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]{1,12}$/.test(value)) throw new RemusError('INVALID_ARGUMENT', `${flag} ${JSON.stringify(value)} is not a time: give whole milliseconds in decimal digits, from 1 to ${MAX_TIMER_MS}`);
  return validateDuration(Number(value), flag, { min: 1 });
}

/** A count flag: decimal digits only, then core's validateCount (at least 1). Throws INVALID_ARGUMENT naming the flag. */
export function countFlag(value: string | undefined, flag: string, max?: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]{1,16}$/.test(value)) throw new RemusError('INVALID_ARGUMENT', `${flag} ${JSON.stringify(value)} is not a count: give a whole number in decimal digits, at least 1`);
  return validateCount(Number(value), flag, { min: 1, ...(max !== undefined ? { max } : {}) });
}

/** `--realtime auto|on|off` (see `RemusConfig.realtime`). Throws INVALID_ARGUMENT naming the flag and the values. */
export function realtimeFlag(value: string | undefined): RealtimeMode | undefined {
  return value === undefined ? undefined : parseRealtimeMode(value, '--realtime');
}

export function viewMode(json: boolean | undefined, io: Io): ViewMode {
  if (json) return 'json';
  return io.out.isTTY ? 'tty' : 'lines';
}
