import { defineConfig } from 'vitest/config';

// Each scenario boots two QEMUs with software emulation on a busy 2-core
// machine: generous timeouts, and never two scenarios at once. groupOrder 1:
// runs after every other project of `pnpm test` (group 0) and before the
// nemesis (2): the COLO watchdog's 1.5 s QMP probes must not compete with
// etcd clusters and other QEMUs for the two cores.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 240_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    sequence: { groupOrder: 1 },
  },
});
