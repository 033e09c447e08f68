/**
 * The errors of the QMP client: every one is a RemusError with a stable code.
 * QEMU's own refusals are {@link QmpError}s (code QMP_FAILED) carrying QEMU's
 * error class and description; a lost or refused connection is QMP_FAILED
 * too, without a class; a command over its time limit is TIMEOUT; a command
 * whose caller aborted it is ABORTED.
 */
import { RemusError } from '@remus/core';

/**
 * QEMU answered a command with `{"error": {"class", "desc"}}`, or the
 * connection failed before an answer came. Code `QMP_FAILED`.
 */
export class QmpError extends RemusError {
  /** QEMU's error class (`GenericError`, `CommandNotFound`, `DeviceNotFound`...); undefined when the connection failed. */
  readonly errorClass: string | undefined;
  /** QEMU's description, or what went wrong with the connection. */
  readonly desc: string;
  /** The command that failed (`qmp_capabilities` during negotiation; undefined for connection-level failures). */
  readonly command: string | undefined;

  constructor(
    message: string,
    fields: { errorClass?: string | undefined; desc: string; command?: string | undefined; cause?: unknown },
  ) {
    super('QMP_FAILED', message, {
      cause: fields.cause,
      details: { class: fields.errorClass, desc: fields.desc, command: fields.command },
    });
    this.errorClass = fields.errorClass;
    this.desc = fields.desc;
    this.command = fields.command;
  }
}

/** True when `e` is a QEMU refusal ({@link QmpError} with a class), optionally of the given class. */
export function isQmpError(e: unknown, errorClass?: string): e is QmpError {
  return e instanceof QmpError && e.errorClass !== undefined && (errorClass === undefined || e.errorClass === errorClass);
}
