// Test helpers for the backup protocol: a raw client that speaks frames by
// hand (to play a hostile primary or backup), and an in-memory Duplex pair.
import { connect, type Socket } from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import { nextEvent, pollUntil } from '@remus/core';
import { FrameDecoder, parseRefusal, type BackupAddress, type Frame } from '../src/index.js';

/** A raw connection that collects the frames it receives. */
export interface RawPeer {
  readonly socket: Socket;
  readonly frames: Frame[];
  closed: boolean;
  /** Waits until `n` frames arrived (or the connection closed and fewer did). */
  frame(n?: number): Promise<Frame>;
  /** The refusal code of the last frame, if it is a REFUSE. */
  refusal(): string | undefined;
  untilClosed(): Promise<void>;
}

export async function rawPeer(address: BackupAddress, o: { read?: boolean } = {}): Promise<RawPeer> {
  const socket = 'path' in address ? connect(address.path) : connect(address.port, address.host);
  await nextEvent(socket, 'connect', { what: 'raw connect', timeoutMs: 5000, rejectOn: ['error'] });
  socket.on('error', () => undefined);
  const decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
  const peer: RawPeer = {
    socket,
    frames: [],
    closed: false,
    async frame(n = peer.frames.length + 1) {
      await pollUntil(() => peer.frames.length >= n || peer.closed, { what: `frame ${n}`, timeoutMs: 5000, intervalMs: 2 });
      const f = peer.frames[n - 1];
      if (!f) throw new Error(`connection closed after ${peer.frames.length} frames`);
      return f;
    },
    refusal() {
      const f = peer.frames.at(-1);
      return f?.type === 3 ? parseRefusal(f.payload).code : undefined;
    },
    async untilClosed() {
      await pollUntil(() => peer.closed, { what: 'the backup to close the connection', timeoutMs: 5000, intervalMs: 5 });
    },
  };
  if (o.read !== false) socket.on('data', (c: Buffer) => decoder.push(c, (f) => peer.frames.push(f)));
  else socket.pause();
  socket.on('close', () => (peer.closed = true));
  return peer;
}

/** Two connected in-memory Duplex streams (no socket underneath). */
export function duplexPair(): [Duplex, Duplex] {
  const ab = new PassThrough();
  const ba = new PassThrough();
  for (const s of [ab, ba]) s.on('error', () => undefined);
  const a = Duplex.from({ readable: ba, writable: ab });
  const b = Duplex.from({ readable: ab, writable: ba });
  const end = (): void => {
    ab.destroy();
    ba.destroy();
    a.destroy();
    b.destroy();
  };
  a.on('error', () => undefined);
  b.on('error', () => undefined);
  a.once('close', end);
  b.once('close', end);
  return [a, b];
}
