import { defineConfig } from 'vitest/config';

// The kit's reap test starts a real child process; the CLI tests run the built `remus`.
export default defineConfig({ test: { testTimeout: 60_000, hookTimeout: 30_000 } });
