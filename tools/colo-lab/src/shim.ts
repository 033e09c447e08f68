/**
 * The test-only workaround for QEMU 7.2 COLO under software emulation (see
 * shim/colo-tcg-shim.c and shared/design/colo.md). Compiled with gcc at test
 * time; loaded with LD_PRELOAD only when the accelerator is TCG.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { RemusError, runScript } from '@remus/core';

/** The shim's C source, shipped with this tool. */
export const SHIM_SOURCE = fileURLToPath(new URL('../shim/colo-tcg-shim.c', import.meta.url));
/** The exit status with which a QEMU carrying the shim refuses to run (the workaround does not apply). */
export const SHIM_REFUSE_EXIT = 97;
/** The line prefix the shim prints on stderr when it loads. */
export const SHIM_BANNER = 'colo-tcg-shim: TEST-ONLY workaround';

/** Which accelerator the lab uses. */
export type Accel = 'kvm' | 'tcg';

/**
 * KVM when `/dev/kvm` is there and backed by kvm_intel or kvm_amd; TCG
 * otherwise (this machine's KVM is PVM, which standard guests cannot boot
 * on). `REMUS_COLO_ACCEL=kvm|tcg` overrides.
 */
export function detectAccel(): Accel {
  const forced = process.env.REMUS_COLO_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return forced;
  if (forced !== undefined && forced !== '') throw new RemusError('INVALID_ARGUMENT', `REMUS_COLO_ACCEL must be kvm or tcg, not ${forced}`);
  const standardKvm = existsSync('/sys/module/kvm_intel') || existsSync('/sys/module/kvm_amd');
  return existsSync('/dev/kvm') && standardKvm ? 'kvm' : 'tcg';
}

/** Compiles the shim into `outFile` (a .so). Throws UNSUPPORTED_HOST without gcc, SCRIPT_FAILED on a compile error. */
export async function buildShim(outFile: string): Promise<string> {
  try {
    await runScript('gcc', ['-O2', '-Wall', '-Werror', '-shared', '-fPIC', '-o', outFile, SHIM_SOURCE, '-ldl', '-lpthread'], { timeoutMs: 120_000 });
  } catch (e) {
    if (e instanceof RemusError && /ENOENT/.test(String(e.message) + String(e.details?.stderrTail ?? ''))) {
      throw new RemusError('UNSUPPORTED_HOST', 'colo-lab: gcc is needed to build the TCG workaround shim (apt install gcc)', { cause: e });
    }
    throw e;
  }
  return outFile;
}

/** Counters the shim keeps in its stats file. */
export interface ShimStats {
  role: string;
  /** Condition waits on a mutex the caller did not hold that the shim fixed (bug a). */
  unownedWaits: number;
  /** Times the vCPU resumed after a stop (each checkpoint stops the VM). */
  resumes: number;
  tlbFlushes: number;
  tbFlushes: number;
  /** vCPU kicks under the mutex in those waits (bug a's lost wake-up). */
  kicks: number;
}

/** Reads a stats file the shim wrote; undefined when absent or empty. */
export function readShimStats(file: string): ShimStats | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const get = (k: string): number => Number(new RegExp(`\\b${k}=(\\d+)`).exec(text)?.[1] ?? NaN);
  const role = /\brole=(\w+)/.exec(text)?.[1];
  if (role === undefined) return undefined;
  return { role, unownedWaits: get('unowned_waits'), resumes: get('resumes'), tlbFlushes: get('tlb_flushes'), tbFlushes: get('tb_flushes'), kicks: get('kicks') };
}
