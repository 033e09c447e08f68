import { defineConfig } from 'vitest/config';

// Tests build network namespaces and spawn ip/tc: give them room on a busy host.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The namespace tests share the host's network stack and the setup lock: run files one at a time.
    fileParallelism: false,
  },
});
