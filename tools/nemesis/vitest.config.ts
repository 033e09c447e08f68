import { defineConfig } from 'vitest/config';

// Scenarios share one etcd lab per file and must not overlap: one file at a time, tests in order.
// groupOrder 2: the last group of `pnpm test`, alone: its timing faults (SIGSTOP, late timers, TTLs of 2 s)
// must not share the two cores with QEMU or other labs.
export default defineConfig({ test: { testTimeout: 90_000, hookTimeout: 90_000, fileParallelism: false, sequence: { groupOrder: 2 } } });
