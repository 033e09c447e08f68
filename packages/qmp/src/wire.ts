/**
 * QMP's wire format, read from bytes a peer controls: lines (QEMU ends every
 * message with "\r\n"; newlines inside strings are escaped) and the JSON
 * object on each. Pure and bounded: a line longer than the limit, text that
 * is not JSON or JSON that is not a QMP message is a protocol error
 * (`qmp/QMP_FAILED`, desc `protocol error`), never a crash, and the
 * buffer never holds more than one line's limit.
 */
import { QmpError } from './errors.js';
import type { QmpEvent } from './events.js';

/** What QEMU says when a client connects (`{"QMP": {...}}`). */
export interface QmpGreeting {
  readonly version: { readonly qemu: { readonly major: number; readonly minor: number; readonly micro: number }; readonly package: string };
  /** Capabilities QEMU offers (e.g. `oob`). */
  readonly capabilities: readonly string[];
}

/** The longest line the client accepts, in characters (QEMU 7.2's `query-qmp-schema` answer is ~200 k). */
export const MAX_QMP_LINE = 16 * 1024 * 1024;

function protocolError(why: string, cause?: unknown): QmpError {
  return new QmpError(`QMP protocol error: ${why}`, { desc: 'protocol error', cause });
}

/** Splits a character stream into trimmed, non-empty lines. Invariant: `buffered` <= `maxLine`. */
export class QmpLineReader {
  readonly #maxLine: number;
  #buffer = '';

  constructor(maxLine = MAX_QMP_LINE) {
    this.#maxLine = maxLine;
  }

  /** Characters of an incomplete line held. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** Takes the next chunk and returns the lines it completes. Throws a protocol error for a line over the limit (the reader is then empty). */
  push(chunk: string): string[] {
    const last = chunk.lastIndexOf('\n');
    if (last < 0) {
      this.#buffer += chunk;
      if (this.#buffer.length > this.#maxLine) this.#overflow();
      return [];
    }
    const text = this.#buffer + chunk.slice(0, last);
    this.#buffer = chunk.slice(last + 1);
    const lines: string[] = [];
    for (const raw of text.split('\n')) {
      if (raw.length > this.#maxLine) this.#overflow();
      const line = raw.trim();
      if (line !== '') lines.push(line);
    }
    if (this.#buffer.length > this.#maxLine) this.#overflow();
    return lines;
  }

  #overflow(): never {
    this.#buffer = '';
    throw protocolError(`a line longer than ${this.#maxLine} characters`);
  }
}

/** One message from QEMU. `id` is undefined when QEMU could not read the request's id (it then answers the oldest). */
export type QmpMessage =
  | { readonly kind: 'greeting'; readonly greeting: QmpGreeting }
  | { readonly kind: 'event'; readonly event: QmpEvent }
  | { readonly kind: 'return'; readonly id: number | undefined; readonly value: unknown }
  | { readonly kind: 'error'; readonly id: number | undefined; readonly errorClass: string; readonly desc: string };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads one line as a QMP message; throws a protocol error for anything else. */
export function parseQmpMessage(line: string): QmpMessage {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    throw protocolError(`not JSON: ${line.slice(0, 80)}`, e);
  }
  if (!isRecord(msg)) throw protocolError(`not a JSON object: ${line.slice(0, 80)}`);
  if ('QMP' in msg) {
    if (!isRecord(msg['QMP'])) throw protocolError('a greeting without an object');
    return { kind: 'greeting', greeting: msg['QMP'] as unknown as QmpGreeting };
  }
  if (typeof msg['event'] === 'string') {
    const ts = isRecord(msg['timestamp']) ? msg['timestamp'] : {};
    const seconds = typeof ts['seconds'] === 'number' ? ts['seconds'] : 0;
    const microseconds = typeof ts['microseconds'] === 'number' ? ts['microseconds'] : 0;
    const data = isRecord(msg['data']) ? msg['data'] : {};
    return { kind: 'event', event: { event: msg['event'], data, timestamp: { seconds, microseconds } } as QmpEvent };
  }
  const id = typeof msg['id'] === 'number' ? msg['id'] : undefined;
  if ('error' in msg) {
    const err = isRecord(msg['error']) ? msg['error'] : {};
    const errorClass = typeof err['class'] === 'string' ? err['class'] : 'GenericError';
    const desc = typeof err['desc'] === 'string' ? err['desc'] : 'unknown error';
    return { kind: 'error', id, errorClass, desc };
  }
  if ('return' in msg) return { kind: 'return', id, value: msg['return'] };
  throw protocolError(`neither greeting, event, return nor error: ${line.slice(0, 80)}`);
}
