import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each test file in its own process: leftover checks look for buffer
    // processes by parent pid. Files one at a time to spare the 2 cores.
    pool: 'forks',
    fileParallelism: false,
  },
});
