// The conformance kit on the marker subkind: real files in a temp directory,
// the reap test after SIGKILLing a real child that set the device up (it
// imports the built dist/index.js).
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { describeSubkindConformance } from '@remus/core/testing';
import { markerSubkind } from '../src/index.js';

const root = mkdtempSync(join(tmpdir(), 'remus-marker-kit-'));
const dir = join(root, 'markers');
afterAll(() => rmSync(root, { recursive: true, force: true }));

describeSubkindConformance({
  title: 'subkind conformance: marker',
  make: () => markerSubkind(),
  device: () => ({ id: 'notes', kind: 'marker', params: { dir } }),
  foreignDevice: () => ({ id: 'other', kind: 'marker', params: {} }),
  beforeEach: () => mkdirSync(dir, { recursive: true }),
  afterEach: () => rmSync(dir, { recursive: true, force: true }),
  leftovers: () => readdirSync(dir),
  crash: { module: new URL('../dist/index.js', import.meta.url), export: 'markerSubkind' },
});
