import { defineConfig } from 'vitest/config';

// Tests start real QEMU processes (two per file at most); run the files one
// after the other so that no more than two or three QEMUs share the cores.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
