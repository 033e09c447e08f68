/** Argument helpers shared by the commands. */
import { parseArgs } from 'node:util';
import { RemusError } from '@remus/core';
import type { Io } from './main.js';
import type { ViewMode } from './progress.js';

/** Parsed options (strings and booleans) and the positional arguments (`_`). */
export type ArgValues<T extends Record<string, { type: 'string' | 'boolean' }>> = { [K in keyof T]?: T[K]['type'] extends 'string' ? string : boolean } & { _: string[] };

/** Parses `rest` strictly; `positionals` allows that many positional arguments. */
export function args<T extends Record<string, { type: 'string' | 'boolean' }>>(rest: readonly string[], options: T, positionals = 0): ArgValues<T> {
  const r = parseArgs({ args: [...rest], options, allowPositionals: positionals > 0, strict: true });
  if (r.positionals.length > positionals) throw new RemusError('INVALID_ARGUMENT', `unexpected argument ${JSON.stringify(r.positionals[positionals])} (see remus --help)`);
  return { ...(r.values as object), _: r.positionals } as ArgValues<T>;
}

export function need(value: string | undefined, flag: string): string {
  if (value === undefined) throw new RemusError('INVALID_ARGUMENT', `${flag} is required (see remus --help)`);
  return value;
}

export function positiveNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new RemusError('INVALID_ARGUMENT', `${flag} ${JSON.stringify(value)} must be a number > 0`);
  return n;
}

export function viewMode(json: boolean | undefined, io: Io): ViewMode {
  if (json) return 'json';
  return io.out.isTTY ? 'tty' : 'lines';
}
