import { defineConfig } from 'vitest/config';

// One vitest run over every package, tool and the cross-package fixtures.
// Each folder with a vitest.config.ts is a project (every package must have one).
export default defineConfig({
  test: {
    projects: ['packages/*/vitest.config.ts', 'tools/*/vitest.config.ts', 'examples/*/vitest.config.ts', 'test-fixtures/vitest.config.ts'],
  },
});
