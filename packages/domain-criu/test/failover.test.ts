/**
 * failover() before criu is reached: with the checks passed earlier
 * (`ready`), an empty or damaged restore point is refused with its own code,
 * nothing is added (no address, no lock left), and it may be retried.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { CriuErrors, failover } from '../src/index.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rmcriu-fo-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const ready = { criu: '/nonexistent/criu-never-run', softDirty: true };

it('a backup without a complete checkpoint refuses with NO_RESTORE_POINT, leaves no lock, and can be retried', async () => {
  await expect(failover({ restorePoint: dir, ready })).rejects.toMatchObject({ code: CriuErrors.NO_RESTORE_POINT });
  expect(existsSync(join(dir, '.failover'))).toBe(false);
  await expect(failover({ restorePoint: dir, ready })).rejects.toMatchObject({ code: CriuErrors.NO_RESTORE_POINT });
});
