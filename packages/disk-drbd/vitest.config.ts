import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The lab tests boot a QEMU guest with software emulation: minutes, not seconds.
    testTimeout: 60_000,
    hookTimeout: 300_000,
  },
});
