/**
 * JSON validation helpers shared by the config files of `remus run` and
 * `remus colo start`: every problem is reported with its JSON path and a fix,
 * all at once.
 */

import { MAX_TIMER_MS, RemusError, closestName, formatSocketAddress, isLocalAddress, validateCount, validateDuration, type SocketAddress } from '@remus/core';

/** Records one problem: JSON path, what is wrong, how to fix it. */
export type Report = (path: string, message: string, fix: string) => void;

/**
 * A number at `o[key]`: a time in ms (core's validateDuration: at most
 * {@link MAX_TIMER_MS}, what Node's timers hold) or, with `integer`, a
 * count (core's validateCount: a whole number). Reports and returns the
 * default when it is not.
 */
export function num(
  o: Record<string, unknown>,
  key: string,
  at: string,
  p: Report,
  spec: { def?: number; min: number; max?: number; integer?: boolean; fix: string },
): number | undefined {
  const v = o[key];
  if (v === undefined) return spec.def;
  const path = join(at, key);
  try {
    return spec.integer ? validateCount(v, path, { min: spec.min, ...(spec.max !== undefined ? { max: spec.max } : {}) }) : validateDuration(v, path, { min: spec.min, ...(spec.max !== undefined ? { max: spec.max } : {}) });
  } catch (e) {
    p(path, (e as Error).message.startsWith(path) ? (e as Error).message.slice(path.length + 1) : (e as Error).message, spec.fix);
    return spec.def;
  }
}

/** How deep a config value may nest (objects and arrays); deeper is refused before validation. */
export const MAX_DEPTH = 32;

/**
 * The JSON path of the first place where `value` nests deeper than
 * `maxDepth`, or undefined. Iterative: any depth is measured without
 * recursion.
 */
export function tooDeep(value: unknown, maxDepth = MAX_DEPTH): string | undefined {
  const stack: { v: unknown; path: string; depth: number }[] = [{ v: value, path: '$', depth: 0 }];
  while (stack.length > 0) {
    const { v, path, depth } = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= maxDepth) return path;
    if (Array.isArray(v)) v.forEach((x, i) => stack.push({ v: x, path: `${path}[${i}]`, depth: depth + 1 }));
    else for (const [k, x] of Object.entries(v)) stack.push({ v: x, path: path === '$' ? join('', k) : join(path, k), depth: depth + 1 });
  }
  return undefined;
}

export function oneOf(o: Record<string, unknown>, key: string, at: string, p: Report, values: readonly string[], def: string): string {
  const v = o[key];
  if (v === undefined) return def;
  if (typeof v !== 'string' || !values.includes(v)) {
    const near = typeof v === 'string' ? closestName(v, values) : undefined;
    p(join(at, key), `${JSON.stringify(v)} is not allowed`, `use one of ${values.map((x) => `"${x}"`).join(', ')}${near ? ` (did you mean "${near}"?)` : ''}`);
    return def;
  }
  return v;
}

export function unknownKeys(o: Record<string, unknown>, known: readonly string[], at: string, p: Report): void {
  for (const k of Object.keys(o)) {
    if (known.includes(k)) continue;
    const near = closestName(k, known);
    p(join(at, k), 'is not a known key', near ? `did you mean "${near}"?` : `remove it; known keys here: ${known.filter((x) => x !== '$schema').join(', ')}`);
  }
}

export function join(at: string, key: string): string {
  const k = /^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key);
  if (at === '') return k;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${at}.${key}` : `${at}[${k}]`;
}

export function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

/** An argument vector: a non-empty array of non-empty strings without NUL bytes (what is run, never a shell string). */
export function isArgv(x: unknown): x is string[] {
  return Array.isArray(x) && x.length > 0 && x.every((a) => typeof a === 'string' && a !== '' && !a.includes('\0'));
}

/**
 * Refuses a listen address other machines can reach for a channel without
 * authentication (`remus backup`'s state and acks, the criu backup's images):
 * INVALID_ARGUMENT naming the flag and the fix. Unix sockets and loopback
 * addresses pass.
 */
export function localListenOnly(address: SocketAddress, flag: string, carries: string): SocketAddress {
  if (isLocalAddress(address)) return address;
  throw new RemusError(
    'INVALID_ARGUMENT',
    `${flag} ${formatSocketAddress(address)}: this channel has no authentication, so anyone who reaches it could send ${carries}. Listen on 127.0.0.1:PORT or a Unix socket path, and between hosts use \`remus agent\` (TLS with mutual authentication) or a tunnel of your own that authenticates the peer`,
  );
}
