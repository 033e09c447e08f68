import { defineConfig } from 'vitest/config';

// One vitest run over every package, tool and the cross-package fixtures.
// Each folder is a project; its own vitest.config.ts (if any) sets its timeouts.
export default defineConfig({
  test: {
    projects: ['packages/*', 'tools/*', 'test-fixtures'],
  },
});
