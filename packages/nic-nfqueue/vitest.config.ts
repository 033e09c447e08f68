import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Network-namespace tests share the host's netfilter: one file at a time.
    fileParallelism: false,
  },
});
