/**
 * JSON validation helpers shared by the config files of `remus run` and
 * `remus colo start`: every problem is reported with its JSON path and a fix,
 * all at once.
 */

/** Records one problem: JSON path, what is wrong, how to fix it. */
export type Report = (path: string, message: string, fix: string) => void;

export function num(
  o: Record<string, unknown>,
  key: string,
  at: string,
  p: Report,
  spec: { def?: number; min: number; integer?: boolean; fix: string },
): number | undefined {
  const v = o[key];
  if (v === undefined) return spec.def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < spec.min || (spec.integer && !Number.isInteger(v))) {
    p(join(at, key), `${JSON.stringify(v)} is not ${spec.integer ? 'a whole number' : 'a number'} >= ${spec.min}`, spec.fix);
    return spec.def;
  }
  return v;
}

export function oneOf(o: Record<string, unknown>, key: string, at: string, p: Report, values: readonly string[], def: string): string {
  const v = o[key];
  if (v === undefined) return def;
  if (typeof v !== 'string' || !values.includes(v)) {
    const near = typeof v === 'string' ? closest(v, values) : undefined;
    p(join(at, key), `${JSON.stringify(v)} is not allowed`, `use one of ${values.map((x) => `"${x}"`).join(', ')}${near ? ` (did you mean "${near}"?)` : ''}`);
    return def;
  }
  return v;
}

export function unknownKeys(o: Record<string, unknown>, known: readonly string[], at: string, p: Report): void {
  for (const k of Object.keys(o)) {
    if (known.includes(k)) continue;
    const near = closest(k, known);
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

/** The known word nearest to `word` (edit distance <= 1/3 of its length, at least 2), if any. */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = distance(word.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j] as number;
      row[j] = Math.min((row[j] as number) + 1, (row[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length] as number;
}
