/**
 * The image transfer protocol between a CRIU domain (primary) and its backup.
 *
 * Every frame: a 16-byte header {u32 magic "RCRI", u8 type, 3 zero bytes,
 * u32 checkpoint, u32 payload length} (big endian) and the payload, at most
 * `maxFrameBytes`. Primary -> backup, per checkpoint N:
 *   BEGIN(N, JSON {parent: number|null, epoch})
 *   FILE(N, u16 name length, name, bytes)   - a file's bytes may span several FILE frames
 *   END(N, 32-byte sha256 over every FILE payload of N, in order)
 * Backup -> primary: ACK(N) once checkpoint N is complete on disk,
 * NACK(N, utf-8 reason) when it was refused (and the restore point unchanged).
 * PING(0, empty): primary -> backup every `keepaliveMs` (also while a dump
 * runs), so the backup can tell a live primary from a silent one.
 */
import { RemusError } from '@remus/core';
import { CriuErrors } from './errors.js';

export const FRAME_MAGIC = 0x52435249; // "RCRI"
export const HEADER_BYTES = 16;
/** Default cap on one frame's payload: 1 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 1 << 20;

export const Frame = { BEGIN: 1, FILE: 2, END: 3, ACK: 4, NACK: 5, PING: 6 } as const;
export type FrameType = (typeof Frame)[keyof typeof Frame];

export interface WireFrame {
  readonly type: FrameType;
  readonly checkpoint: number;
  readonly payload: Buffer;
}

export function encodeFrame(type: FrameType, checkpoint: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt32BE(FRAME_MAGIC, 0);
  h.writeUInt8(type, 4);
  h.writeUInt32BE(checkpoint >>> 0, 8);
  h.writeUInt32BE(payload.length, 12);
  return Buffer.concat([h, payload]);
}

/** A FILE payload: u16 name length, name, data. */
export function filePayload(name: string, data: Buffer): Buffer {
  const n = Buffer.from(name, 'utf8');
  const l = Buffer.alloc(2);
  l.writeUInt16BE(n.length, 0);
  return Buffer.concat([l, n, data]);
}

export function parseFilePayload(p: Buffer): { name: string; data: Buffer } {
  if (p.length < 2) throw new RemusError(CriuErrors.FRAME_INVALID, 'FILE frame shorter than its name length');
  const len = p.readUInt16BE(0);
  if (len === 0 || p.length < 2 + len) throw new RemusError(CriuErrors.FRAME_INVALID, 'FILE frame with an empty or truncated name');
  return { name: p.subarray(2, 2 + len).toString('utf8'), data: p.subarray(2 + len) };
}

/**
 * Splits a byte stream into frames. Bounded: a header declaring more than
 * `maxFrameBytes` of payload, a bad magic or type, or non-zero padding throws
 * (the connection is then closed); at most one frame is buffered.
 */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);
  readonly #max: number;

  constructor(maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {
    this.#max = maxFrameBytes;
  }

  /** Feeds bytes; returns the frames completed by them. */
  push(chunk: Buffer): WireFrame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: WireFrame[] = [];
    for (;;) {
      if (this.#buf.length < HEADER_BYTES) return out;
      const magic = this.#buf.readUInt32BE(0);
      const type = this.#buf.readUInt8(4);
      if (magic !== FRAME_MAGIC) throw new RemusError(CriuErrors.FRAME_INVALID, `bad frame magic 0x${magic.toString(16)}`);
      if (type < Frame.BEGIN || type > Frame.PING) throw new RemusError(CriuErrors.FRAME_INVALID, `unknown frame type ${type}`);
      if (this.#buf.readUIntBE(5, 3) !== 0) throw new RemusError(CriuErrors.FRAME_INVALID, 'non-zero padding in a frame header');
      const length = this.#buf.readUInt32BE(12);
      if (length > this.#max) throw new RemusError(CriuErrors.FRAME_TOO_LARGE, `frame of ${length} bytes exceeds the cap of ${this.#max}`);
      if (this.#buf.length < HEADER_BYTES + length) return out;
      out.push({ type: type as FrameType, checkpoint: this.#buf.readUInt32BE(8), payload: Buffer.from(this.#buf.subarray(HEADER_BYTES, HEADER_BYTES + length)) });
      this.#buf = this.#buf.subarray(HEADER_BYTES + length);
    }
  }

  /** Bytes of an incomplete frame held. */
  get pending(): number {
    return this.#buf.length;
  }
}

/** Names a checkpoint may contain: CRIU image files, plain names only. */
export function checkImageName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name) || name === 'parent' || name.startsWith('.remus')) {
    throw new RemusError(CriuErrors.FRAME_INVALID, `image file name ${JSON.stringify(name.slice(0, 140))} refused (plain CRIU image names only)`);
  }
}
