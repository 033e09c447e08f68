/**
 * The errors of the QMP client: every one is a RemusError with a stable code.
 * The client's own code is `qmp/QMP_FAILED` ({@link QmpErrorCodes}): QEMU's
 * refusals carry QEMU's error class and description; a refused, lost or
 * garbled connection has no class. A command over its time limit is TIMEOUT;
 * a command whose caller aborted it is ABORTED (core codes).
 */
import { RemusError, defineErrorCodes, isRemusError } from '@remus/core';

/** This package's error codes, namespaced `qmp/` (register them with a plugin's `errors`). */
export const QmpErrorCodes = defineErrorCodes('qmp', {
  QMP_FAILED: 'QEMU refused a QMP command (details: class, desc, command), or the QMP connection was refused, lost or garbled',
});

/**
 * QEMU answered a command with `{"error": {"class", "desc"}}`, or the
 * connection failed (refused, lost, closed, not QMP). Code `qmp/QMP_FAILED`.
 * `instanceof QmpError` is {@link isQmpError}: it holds for any error of
 * that code from any copy of this package.
 */
export class QmpError extends RemusError {
  /** QEMU's error class (`GenericError`, `CommandNotFound`, `DeviceNotFound`...); undefined when the connection failed. */
  readonly errorClass: string | undefined;
  /** QEMU's description, or what went wrong with the connection. */
  readonly desc: string;
  /** The command that failed (`qmp_capabilities` during negotiation; undefined for connection-level failures). */
  readonly command: string | undefined;

  static override [Symbol.hasInstance](value: unknown): boolean {
    return isQmpError(value);
  }

  constructor(
    message: string,
    fields: { errorClass?: string | undefined; desc: string; command?: string | undefined; cause?: unknown },
  ) {
    super(QmpErrorCodes.QMP_FAILED, message, {
      cause: fields.cause,
      details: { class: fields.errorClass, desc: fields.desc, command: fields.command },
    });
    this.errorClass = fields.errorClass;
    this.desc = fields.desc;
    this.command = fields.command;
  }
}

/**
 * True for every {@link QmpError} (a QEMU refusal or a failed connection,
 * connect included), optionally only of QEMU's error class `errorClass`.
 * Agrees with `instanceof QmpError`.
 */
export function isQmpError(e: unknown, errorClass?: string): e is QmpError {
  return (
    isRemusError(e, QmpErrorCodes.QMP_FAILED) &&
    typeof (e as { desc?: unknown }).desc === 'string' &&
    (errorClass === undefined || (e as { errorClass?: unknown }).errorClass === errorClass)
  );
}

/** True when QEMU answered with an error (a {@link QmpError} with a class), optionally of class `errorClass`; false for a lost connection. */
export function isQmpRefusal(e: unknown, errorClass?: string): e is QmpError & { readonly errorClass: string } {
  return isQmpError(e, errorClass) && e.errorClass !== undefined;
}
