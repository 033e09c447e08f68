import { defineConfig } from 'vitest/config';

// Scenarios share one etcd lab per file and must not overlap: one file at a time, tests in order.
export default defineConfig({ test: { testTimeout: 90_000, hookTimeout: 90_000, fileParallelism: false } });
