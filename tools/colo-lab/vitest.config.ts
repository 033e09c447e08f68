import { defineConfig } from 'vitest/config';

// Each scenario boots two QEMUs with software emulation on a busy 2-core
// machine: generous timeouts, and never two scenarios at once.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 240_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
