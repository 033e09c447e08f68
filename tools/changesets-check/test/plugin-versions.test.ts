// Plugin metadata must follow the package version that changesets bumps.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const repo = new URL('../../..', import.meta.url).pathname;

describe('plugin metadata', () => {
  it('every package that exports a plugin reports its own package name and version', async () => {
    let plugins = 0;
    for (const name of readdirSync(join(repo, 'packages'))) {
      const dir = join(repo, 'packages', name);
      const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string; version: string };
      const entry = join(dir, 'dist', 'index.js');
      if (!existsSync(entry)) throw new Error(`${manifest.name} is not built: run pnpm build`);
      const mod = (await import(pathToFileURL(entry).href)) as { plugin?: { name: string; version: string } };
      if (!mod.plugin) continue;
      plugins++;
      expect(mod.plugin.name).toBe(manifest.name);
      expect(mod.plugin.version).toBe(manifest.version);
    }
    expect(plugins).toBeGreaterThanOrEqual(4);
  });
});
