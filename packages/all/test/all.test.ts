// @remus/all brings every package it lists.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { PACKAGES } from '../src/index.js';

const require = createRequire(import.meta.url);
const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> };

describe('@remus/all', () => {
  it('lists exactly its dependencies, and each resolves from it', () => {
    expect([...PACKAGES].sort()).toEqual(Object.keys(manifest.dependencies).sort());
    for (const name of PACKAGES) expect(require.resolve(`${name}/package.json`)).toMatch(/package\.json$/);
  });
});
