import { defineConfig } from 'vitest/config';

// Lab tests boot QEMU with software emulation: boots take 7-30 s on a busy
// 2-core machine, so timeouts are generous. One file, one shared boot.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 240_000,
    hookTimeout: 240_000,
  },
});
