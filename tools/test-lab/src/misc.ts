import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pollUntil } from '@remus/core';

/** Polls `pred` every `intervalMs` (default 20) until it holds, at most `ms`; throws TIMEOUT naming `what` and, given `describe`, what was last seen. */
export async function waitFor(pred: () => boolean | Promise<boolean>, ms: number, what: string, describe?: () => string): Promise<void> {
  await pollUntil(async () => (await pred()) || undefined, { what, timeoutMs: ms, intervalMs: 20, ...(describe ? { describe } : {}) });
}

/** A fresh temp directory `remus-<tag>-XXXX`; `remove()` deletes it. */
export function tempDir(tag: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), `remus-${tag}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** `n` TCP ports free on 127.0.0.1 right now (each bound once and released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/**
 * A user's project with the package at `packageDir` installed as `name`
 * (linked, as pnpm installs it): core loads plugins only from such a
 * `node_modules`. `remove()` deletes the project (not the package).
 */
export function linkedProject(name: string, packageDir: string): { dir: string; remove(): void } {
  const t = tempDir('user');
  mkdirSync(join(t.dir, 'node_modules', ...name.split('/').slice(0, -1)), { recursive: true });
  symlinkSync(packageDir, join(t.dir, 'node_modules', ...name.split('/')));
  return t;
}
