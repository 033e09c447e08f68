import { defineConfig } from 'vitest/config';

// npm install from the registry (third-party deps) can take minutes on a cold cache.
export default defineConfig({ test: { testTimeout: 120_000, hookTimeout: 900_000 } });
