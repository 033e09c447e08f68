/**
 * The backup protocol's frames and their incremental decoder.
 *
 * Frame (big endian): u32 magic 0x524d4232 ("RMB2"), u16 type, u16 flags
 * (0), u64 epoch, u64 checkpoint (both at most 2^53-1), u32 payload length,
 * payload. Type 1 STATE carries a checkpoint's state to the backup; 2 ACK
 * acknowledges it (no payload); 3 REFUSE says why the backup refused a frame
 * or the connection (UTF-8 JSON `{code, message}`, at most 4 KiB) before it
 * closes the connection; 4 PING (no payload) is the primary's keepalive
 * between checkpoints, unanswered.
 */
import { RemusError } from '@remus/core';
import { BackupErrors } from './errors.js';

export const FRAME_MAGIC = 0x524d4232;
export const FRAME_HEADER_BYTES = 28;
/** Frame types. */
export const FrameType = { STATE: 1, ACK: 2, REFUSE: 3, PING: 4 } as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];
/** Largest REFUSE payload. */
export const MAX_REFUSE_BYTES = 4096;

/** A decoded header. */
export interface FrameHeader {
  readonly type: FrameTypeValue;
  readonly epoch: number;
  readonly checkpoint: number;
  /** Payload bytes. */
  readonly length: number;
}

/** A complete frame. */
export interface Frame extends FrameHeader {
  readonly payload: Buffer;
}

const TWO32 = 2 ** 32;
const MAX_HIGH = Math.floor(Number.MAX_SAFE_INTEGER / TWO32);

/** The 28-byte header for a frame (the payload is written after it, uncopied). */
export function encodeHeader(type: FrameTypeValue, epoch: number, checkpoint: number, length: number): Buffer {
  for (const [v, what] of [
    [epoch, 'epoch'],
    [checkpoint, 'checkpoint'],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RemusError('INVALID_ARGUMENT', `backup frame: ${what} ${String(v)} is not a whole number from 0 to 2^53-1`);
  }
  if (!Number.isInteger(length) || length < 0 || length >= TWO32) {
    throw new RemusError('INVALID_ARGUMENT', `backup frame: payload of ${String(length)} bytes does not fit a frame (< 4 GiB)`);
  }
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h.writeUInt32BE(FRAME_MAGIC, 0);
  h.writeUInt16BE(type, 4);
  h.writeUInt16BE(0, 6);
  h.writeUInt32BE(Math.floor(epoch / TWO32), 8);
  h.writeUInt32BE(epoch % TWO32, 12);
  h.writeUInt32BE(Math.floor(checkpoint / TWO32), 16);
  h.writeUInt32BE(checkpoint % TWO32, 20);
  h.writeUInt32BE(length, 24);
  return h;
}

/** A whole frame in one buffer (copies the payload; for small frames and tests). */
export function encodeFrame(type: FrameTypeValue, epoch: number, checkpoint: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const h = encodeHeader(type, epoch, checkpoint, payload.byteLength);
  return payload.byteLength === 0 ? h : Buffer.concat([h, payload]);
}

/** Options of {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest STATE payload accepted (bytes). ACK carries none, REFUSE at most {@link MAX_REFUSE_BYTES}. */
  readonly maxFrameBytes: number;
  /**
   * Called with each complete header, before any payload buffer is made:
   * throw (a RemusError) to refuse the frame; the decoder then fails with it.
   */
  readonly onHeader?: (header: FrameHeader) => void;
}

/**
 * Decodes frames from a byte stream pushed in chunks of any size. Linear:
 * each payload byte is copied once, into a buffer of the declared length made
 * after the header passed the caps and `onHeader`. A malformed frame throws a
 * RemusError (`backup/FRAME_INVALID`, `backup/FRAME_TOO_LARGE`, or what
 * `onHeader` threw); after that the decoder is failed and every push throws
 * the same error.
 */
export class FrameDecoder {
  readonly #max: number;
  readonly #onHeader: ((h: FrameHeader) => void) | undefined;
  readonly #head = Buffer.alloc(FRAME_HEADER_BYTES);
  #headFill = 0;
  #header: FrameHeader | undefined;
  #payload: Buffer | undefined;
  #fill = 0;
  #error: unknown;

  constructor(options: FrameDecoderOptions) {
    if (!Number.isSafeInteger(options.maxFrameBytes) || options.maxFrameBytes < 0 || options.maxFrameBytes >= TWO32) {
      throw new RemusError('INVALID_ARGUMENT', `backup: maxFrameBytes ${String(options.maxFrameBytes)} must be a whole number of bytes below 4 GiB`);
    }
    this.#max = options.maxFrameBytes;
    this.#onHeader = options.onHeader;
  }

  /** True while a frame has begun (some header byte arrived) and is not complete. */
  get inFrame(): boolean {
    return this.#headFill > 0 || this.#header !== undefined;
  }

  /** Bytes of payload buffer held for the frame being received. */
  get pendingBytes(): number {
    return this.#payload?.length ?? 0;
  }

  /** The error the decoder failed with, if any. */
  get error(): unknown {
    return this.#error;
  }

  /** Feeds a chunk; calls `onFrame` for each frame it completes, in order. */
  push(chunk: Uint8Array, onFrame: (frame: Frame) => void): void {
    if (this.#error !== undefined) throw this.#error;
    try {
      this.#push(chunk, onFrame);
    } catch (e) {
      this.#error = e;
      this.#payload = undefined;
      throw e;
    }
  }

  #push(chunk: Uint8Array, onFrame: (frame: Frame) => void): void {
    let at = 0;
    const n = chunk.byteLength;
    while (at < n) {
      if (this.#header === undefined) {
        const take = Math.min(FRAME_HEADER_BYTES - this.#headFill, n - at);
        this.#head.set(chunk.subarray(at, at + take), this.#headFill);
        this.#headFill += take;
        at += take;
        if (this.#headFill < FRAME_HEADER_BYTES) return;
        const h = this.#parseHeader();
        this.#onHeader?.(h);
        this.#headFill = 0;
        if (h.length === 0) {
          onFrame({ ...h, payload: Buffer.alloc(0) });
          continue;
        }
        this.#header = h;
        this.#payload = Buffer.allocUnsafe(h.length);
        this.#fill = 0;
        continue;
      }
      const payload = this.#payload as Buffer;
      const take = Math.min(payload.length - this.#fill, n - at);
      payload.set(chunk.subarray(at, at + take), this.#fill);
      this.#fill += take;
      at += take;
      if (this.#fill === payload.length) {
        const h = this.#header;
        this.#header = undefined;
        this.#payload = undefined;
        onFrame({ ...h, payload });
      }
    }
  }

  #parseHeader(): FrameHeader {
    const b = this.#head;
    const bad = (why: string, details: Record<string, unknown> = {}): RemusError =>
      new RemusError(BackupErrors.FRAME_INVALID, `backup frame refused: ${why}`, { details });
    const magic = b.readUInt32BE(0);
    if (magic !== FRAME_MAGIC) throw bad(`bad magic 0x${magic.toString(16).padStart(8, '0')} (not a Remus backup frame, or a peer of another protocol version)`, { magic });
    const type = b.readUInt16BE(4);
    if (type !== FrameType.STATE && type !== FrameType.ACK && type !== FrameType.REFUSE && type !== FrameType.PING) throw bad(`unknown type ${type}`, { type });
    const flags = b.readUInt16BE(6);
    if (flags !== 0) throw bad(`flags 0x${flags.toString(16)} set (none are defined)`, { flags });
    const eh = b.readUInt32BE(8);
    const ch = b.readUInt32BE(16);
    if (eh > MAX_HIGH) throw bad('epoch above 2^53-1');
    if (ch > MAX_HIGH) throw bad('checkpoint above 2^53-1');
    const epoch = eh * TWO32 + b.readUInt32BE(12);
    const checkpoint = ch * TWO32 + b.readUInt32BE(20);
    const length = b.readUInt32BE(24);
    if ((type === FrameType.ACK || type === FrameType.PING) && length !== 0) throw bad(`an ${type === FrameType.ACK ? 'ack' : 'keepalive'} with ${length} bytes of payload`, { length });
    if (type === FrameType.REFUSE && length > MAX_REFUSE_BYTES) throw bad(`a refusal of ${length} bytes (at most ${MAX_REFUSE_BYTES})`, { length });
    if (type === FrameType.STATE && length > this.#max) {
      throw new RemusError(BackupErrors.FRAME_TOO_LARGE, `backup frame refused: checkpoint ${checkpoint} declares ${length} bytes of state, above the ${this.#max} byte cap per frame (maxFrameBytes)`, {
        details: { checkpoint, length, maxFrameBytes: this.#max },
      });
    }
    return { type: type as FrameTypeValue, epoch, checkpoint, length };
  }
}
