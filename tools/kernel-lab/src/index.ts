/**
 * @remus/kernel-lab: run test bodies as root inside a real Debian 6.1 kernel
 * (sch_plug, DRBD 8.4) under QEMU, with four distinct outcomes.
 *
 * - {@link setupLab}: `pnpm lab:setup` (apt packages, kernel download, initramfs).
 * - {@link runInLab}: one boot, one body. {@link startLab}: one boot, many bodies.
 * - {@link assertLabReady}: clear error when the lab cannot run.
 * - {@link expectLabPass}: test helper that shows output and console tail on failure.
 */
export { assertLabReady, expectLabPass, formatLabResult, runInLab, startLab } from './lab.js';
export type { LabOutcome, LabResult, LabRunOptions, LabSession, LabSessionOptions } from './lab.js';
export { LAB_APT_PACKAGES, moduleLoadOrder, readLabStamp, setupLab } from './setup.js';
export type { SetupOptions, SetupResult } from './setup.js';
export { DEFAULT_CACHE_DIR, labCacheDir, repoRoot } from './paths.js';
export type { LabStamp } from './paths.js';
