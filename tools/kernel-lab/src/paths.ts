/** Where the lab keeps its cache, and where the repo checkout is. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Default cache, stable across runs and outside any checkout. */
export const DEFAULT_CACHE_DIR = '/var/cache/remus-kernel-lab';

/** The cache directory: `REMUS_LAB_CACHE` if set, else {@link DEFAULT_CACHE_DIR}. */
export function labCacheDir(): string {
  const fromEnv = process.env.REMUS_LAB_CACHE;
  return fromEnv !== undefined && fromEnv !== '' ? resolve(fromEnv) : DEFAULT_CACHE_DIR;
}

/** The stamp that says setup finished; its JSON is a {@link LabStamp}. */
export function stampPath(cacheDir: string): string {
  return join(cacheDir, 'lab.json');
}

/** What setup records about the kernel it prepared. */
export interface LabStamp {
  /** Format of the cache; a new one makes setup rebuild. */
  format: number;
  /** Package name, e.g. `linux-image-6.1.0-57-amd64`. */
  package: string;
  /** Package version, e.g. `6.1.192-3`. */
  version: string;
  /** Kernel release, e.g. `6.1.0-57-amd64` (the /lib/modules folder name). */
  release: string;
  /** Absolute path of the kernel image (an ELF vmlinux QEMU boots through its PVH entry). */
  kernel: string;
  /** Absolute path of the initramfs. */
  initramfs: string;
  /** Hash of the `/init` inside it; another one means the initramfs is out of date. */
  initHash: string;
  /** Absolute path of the folder holding `kernel/`, `modules.dep`... for `release`. */
  modulesDir: string;
}

/**
 * The repo checkout root: the nearest folder above this module holding
 * `pnpm-workspace.yaml`; `process.cwd()` if there is none.
 */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir;
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}
