/**
 * Checks made before anything is touched (at start of a domain, before a
 * failover, and by `remus doctor`): criu present, criu usable on this kernel
 * (the vDSO failure of CRIU < 4.1 on kernel 6.13+ named as such), soft-dirty
 * memory tracking (without it every dump is full), root.
 */
import { release } from 'node:os';
import { RemusError } from '@remus/core';
import { CriuErrors } from './errors.js';
import { lastLines, locateCriu, runProgram } from './run.js';

/** One finding. `error` blocks CRIU use; `warning` degrades it (full dumps). */
export interface DoctorCheck {
  /** Stable name: `root`, `criu`, `criu-check`, `soft-dirty`. */
  readonly name: string;
  readonly status: 'ok' | 'warning' | 'error';
  /** One line for the user. */
  readonly message: string;
  /** The RemusError code an `error` maps to. */
  readonly code?: string;
}

export interface DoctorOptions {
  /** criu program (default: `criu` on PATH, /usr/sbin, /sbin). */
  readonly criuPath?: string;
  /** Run the checks in this network namespace (see {@link runProgram}). */
  readonly netns?: string;
  /** Bound on each `criu check`, ms. Default 30 000. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** The message when criu fails on the vDSO (CRIU < 4.1 on kernel 6.13+). */
export const CRIU_TOO_OLD_MESSAGE = 'CRIU 4.1 or later is needed on kernel 6.13+';

/**
 * Runs every check and returns all findings (never rejects for a failed
 * check; rejects only on abort). For `remus doctor`.
 */
export async function doctorChecks(o: DoctorOptions = {}): Promise<DoctorCheck[]> {
  const out: DoctorCheck[] = [];
  const isRoot = process.getuid?.() === 0;
  out.push(
    isRoot
      ? { name: 'root', status: 'ok', message: 'running as root' }
      : { name: 'root', status: 'error', message: 'CRIU dumps and restores need root: run remus as root', code: CriuErrors.NOT_ROOT },
  );
  const criu = locateCriu(o.criuPath);
  if (criu === undefined) {
    out.push({
      name: 'criu',
      status: 'error',
      message: `criu not found${o.criuPath ? ` at ${o.criuPath}` : ' on PATH'}: install it (Debian: apt-get install criu; ${CRIU_TOO_OLD_MESSAGE})`,
      code: CriuErrors.CRIU_MISSING,
    });
    return out;
  }
  const timeoutMs = o.timeoutMs ?? 30_000;
  const version = await runProgram([criu, '--version'], { timeoutMs, signal: o.signal, what: 'criu --version' });
  const v = /Version:\s*(\S+)/.exec(version.output)?.[1] ?? 'unknown version';
  out.push({ name: 'criu', status: 'ok', message: `${criu} ${v}` });
  if (!isRoot) return out;
  const check = await runProgram([criu, 'check'], { timeoutMs, signal: o.signal, netns: o.netns, what: 'criu check' });
  const checkOk = check.code === 0 && /Looks good/.test(check.output);
  if (!checkOk) {
    const vdso = /vdso/i.test(check.output);
    out.push({
      name: 'criu-check',
      status: 'error',
      message: vdso
        ? `${CRIU_TOO_OLD_MESSAGE} (criu ${v} on kernel ${release()} fails on the vDSO: ${lastLines(check.output, 1)})`
        : `criu check failed on kernel ${release()}: ${lastLines(check.output, 3)}`,
      code: vdso ? CriuErrors.CRIU_TOO_OLD : CriuErrors.CRIU_UNUSABLE,
    });
    return out;
  }
  out.push({ name: 'criu-check', status: 'ok', message: `criu check: looks good on kernel ${release()}` });
  const dirty = await runProgram([criu, 'check', '--feature', 'mem_dirty_track'], { timeoutMs, signal: o.signal, netns: o.netns, what: 'criu check --feature mem_dirty_track' });
  out.push(
    dirty.code === 0
      ? { name: 'soft-dirty', status: 'ok', message: 'memory tracking (soft-dirty) works: checkpoints after the first are incremental' }
      : { name: 'soft-dirty', status: 'warning', message: 'no soft-dirty memory tracking (CONFIG_MEM_SOFT_DIRTY) on this kernel: every checkpoint is a full dump' },
  );
  return out;
}

/** What {@link assertCriuReady} found usable. */
export interface CriuReady {
  readonly criu: string;
  /** False: every dump is full (the caller says so once). */
  readonly softDirty: boolean;
}

/** Runs {@link doctorChecks} and throws the first error as a RemusError with its code. */
export async function assertCriuReady(o: DoctorOptions = {}): Promise<CriuReady> {
  const checks = await doctorChecks(o);
  const bad = checks.find((c) => c.status === 'error');
  if (bad) throw new RemusError((bad.code ?? CriuErrors.CRIU_UNUSABLE) as typeof CriuErrors.CRIU_UNUSABLE, bad.message, { details: { check: bad.name } });
  return { criu: locateCriu(o.criuPath) as string, softDirty: checks.some((c) => c.name === 'soft-dirty' && c.status === 'ok') };
}
