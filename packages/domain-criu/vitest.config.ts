import { defineConfig } from 'vitest/config';

// The lab test boots a QEMU guest: generous bounds on a busy 2-core host.
export default defineConfig({ test: { testTimeout: 60_000, hookTimeout: 300_000, fileParallelism: false } });
