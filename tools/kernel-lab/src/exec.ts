/** Runs a host command with an argument vector (never a shell) and a time bound. */
import { spawn } from 'node:child_process';

export interface ExecResult {
  /** Exit status; null when killed by a signal or not started. */
  status: number | null;
  stdout: string;
  stderr: string;
  /** Set when the command could not be started (e.g. ENOENT). */
  error?: Error;
}

/** Runs `file args`; resolves (never rejects) once it exits or `timeoutMs` kills it. `stdoutFd`: write stdout there instead. */
export function execCommand(
  file: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; stdoutFd?: number } = {},
): Promise<ExecResult> {
  return new Promise((resolvePromise) => {
    const child = spawn(file, [...args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', options.stdoutFd ?? 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 600_000);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolvePromise({ status: null, stdout, stderr, error });
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      resolvePromise({ status, stdout, stderr });
    });
  });
}

/** The last `max` characters of `text`, for error messages. */
export function tail(text: string, max = 2000): string {
  return text.length <= max ? text : `...${text.slice(-max)}`;
}
