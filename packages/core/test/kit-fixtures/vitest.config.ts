import { defineConfig } from 'vitest/config';

export default defineConfig({ test: { include: ['**/*.kit.ts'], root: new URL('.', import.meta.url).pathname } });
