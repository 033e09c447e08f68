/**
 * The nfnetlink_queue wire format: the few messages the buffer process sends
 * (config, verdict, batch verdict) and the one it receives (a queued packet),
 * encoded by hand over a raw NETLINK_NETFILTER socket.
 *
 * Layout (linux/netfilter/nfnetlink_queue.h): every message is an nlmsghdr
 * (16 bytes, host byte order), an nfgenmsg (family u8, version u8, queue
 * number be16), then attributes (u16 len, u16 type, payload padded to 4).
 * Attribute payloads are big-endian, except where noted.
 */

/** NETLINK_NETFILTER protocol number. */
export const NETLINK_NETFILTER = 12;

const NFNL_SUBSYS_QUEUE = 3;
/** Message types: subsystem << 8 | message. */
export const NFQNL_MSG_PACKET = (NFNL_SUBSYS_QUEUE << 8) | 0;
export const NFQNL_MSG_VERDICT = (NFNL_SUBSYS_QUEUE << 8) | 1;
export const NFQNL_MSG_CONFIG = (NFNL_SUBSYS_QUEUE << 8) | 2;
export const NFQNL_MSG_VERDICT_BATCH = (NFNL_SUBSYS_QUEUE << 8) | 3;

export const NLMSG_ERROR = 2;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;

/** Config commands (NFQA_CFG_CMD). */
export const NFQNL_CFG_CMD_BIND = 1;
export const NFQNL_CFG_CMD_UNBIND = 2;

/** Copy modes (NFQA_CFG_PARAMS). */
export const NFQNL_COPY_PACKET = 2;

/** Queue flags (NFQA_CFG_FLAGS). FAIL_OPEN (1) is never set: a full queue drops. */
export const NFQA_CFG_F_GSO = 0x4;

/** Verdicts. */
export const NF_DROP = 0;
export const NF_ACCEPT = 1;

const NFQA_CFG_CMD = 1;
const NFQA_CFG_PARAMS = 2;
const NFQA_CFG_QUEUE_MAXLEN = 3;
const NFQA_CFG_MASK = 4;
const NFQA_CFG_FLAGS = 5;

const NFQA_PACKET_HDR = 1;
const NFQA_VERDICT_HDR = 2;
const NFQA_PAYLOAD = 10;
const NFQA_CAP_LEN = 13;

const NLMSG_HDRLEN = 16;
const NFGEN_HDRLEN = 4;

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** One attribute: type and payload (unpadded). */
interface Attr {
  readonly type: number;
  readonly payload: Buffer;
}

function encodeAttrs(attrs: readonly Attr[]): Buffer {
  const parts: Buffer[] = [];
  for (const a of attrs) {
    const len = 4 + a.payload.length;
    const b = Buffer.alloc(align4(len));
    b.writeUInt16LE(len, 0);
    b.writeUInt16LE(a.type, 2);
    a.payload.copy(b, 4);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/**
 * The payload of a netfilter message (nfgenmsg + attributes), without the
 * nlmsghdr: the `netlink` package's raw socket wants a whole message, so
 * {@link frame} adds the header.
 */
function nfgen(queue: number, attrs: readonly Attr[]): Buffer {
  const h = Buffer.alloc(NFGEN_HDRLEN);
  h.writeUInt8(0, 0); // AF_UNSPEC
  h.writeUInt8(0, 1); // NFNETLINK_V0
  h.writeUInt16BE(queue, 2);
  return Buffer.concat([h, encodeAttrs(attrs)]);
}

/** Wraps a payload in an nlmsghdr (host byte order, i.e. little-endian on x86). */
export function frame(type: number, flags: number, seq: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(NLMSG_HDRLEN);
  h.writeUInt32LE(NLMSG_HDRLEN + payload.length, 0);
  h.writeUInt16LE(type, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(seq >>> 0, 8);
  h.writeUInt32LE(0, 12);
  return Buffer.concat([h, payload]);
}

/** CONFIG message carrying a command (BIND/UNBIND) for a queue. */
export function configCommand(queue: number, command: number): Buffer {
  const cmd = Buffer.alloc(4);
  cmd.writeUInt8(command, 0);
  cmd.writeUInt16BE(0, 2); // pf: ignored by kernels >= 3.8
  return nfgen(queue, [{ type: NFQA_CFG_CMD, payload: cmd }]);
}

/**
 * CONFIG message setting copy mode PACKET with `copyRange` bytes, the queue's
 * maximum length (the kernel drops beyond it and counts `queue_dropped`) and
 * the GSO flag (whole GSO packets are queued, no checksum work).
 */
export function configParams(queue: number, copyRange: number, maxlen: number): Buffer {
  const params = Buffer.alloc(5);
  params.writeUInt32BE(copyRange >>> 0, 0);
  params.writeUInt8(NFQNL_COPY_PACKET, 4);
  const max = Buffer.alloc(4);
  max.writeUInt32BE(maxlen >>> 0, 0);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(NFQA_CFG_F_GSO, 0);
  return nfgen(queue, [
    { type: NFQA_CFG_PARAMS, payload: params },
    { type: NFQA_CFG_QUEUE_MAXLEN, payload: max },
    { type: NFQA_CFG_FLAGS, payload: flags },
    { type: NFQA_CFG_MASK, payload: flags },
  ]);
}

/** VERDICT (one packet) or VERDICT_BATCH (every packet with id <= `id`) payload. */
export function verdict(queue: number, verdictCode: number, id: number): Buffer {
  const v = Buffer.alloc(8);
  v.writeUInt32BE(verdictCode >>> 0, 0);
  v.writeUInt32BE(id >>> 0, 4);
  return nfgen(queue, [{ type: NFQA_VERDICT_HDR, payload: v }]);
}

/** One parsed netlink message. */
export type Incoming =
  | { readonly kind: 'packet'; readonly queue: number; readonly id: number; readonly length: number }
  | { readonly kind: 'ack'; readonly seq: number; readonly errno: number }
  | { readonly kind: 'other'; readonly type: number };

/**
 * Splits a datagram into messages and parses the ones the buffer process
 * cares about: queued packets (id, queue, original length) and ACK/ERROR
 * replies (sequence number, errno; 0 = success).
 */
export function parseMessages(buf: Buffer): Incoming[] {
  const out: Incoming[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) break;
    const type = buf.readUInt16LE(off + 4);
    const seq = buf.readUInt32LE(off + 8);
    if (type === NLMSG_ERROR) {
      const err = len >= NLMSG_HDRLEN + 4 ? buf.readInt32LE(off + NLMSG_HDRLEN) : 0;
      // The embedded original header carries the request's sequence number too.
      out.push({ kind: 'ack', seq, errno: err === 0 ? 0 : -err });
    } else if (type === NFQNL_MSG_PACKET && len >= NLMSG_HDRLEN + NFGEN_HDRLEN) {
      const queue = buf.readUInt16BE(off + NLMSG_HDRLEN + 2);
      let id = -1;
      let capLen = -1;
      let payloadLen = 0;
      let a = off + NLMSG_HDRLEN + NFGEN_HDRLEN;
      const end = off + len;
      while (a + 4 <= end) {
        const alen = buf.readUInt16LE(a);
        const atype = buf.readUInt16LE(a + 2) & 0x3fff;
        // An attribute must fit in its message: a malformed one ends the walk.
        if (alen < 4 || a + alen > end) break;
        if (atype === NFQA_PACKET_HDR && alen >= 8) id = buf.readUInt32BE(a + 4);
        else if (atype === NFQA_CAP_LEN && alen >= 8) capLen = buf.readUInt32BE(a + 4);
        else if (atype === NFQA_PAYLOAD) payloadLen = alen - 4;
        a += align4(alen);
      }
      if (id >= 0) out.push({ kind: 'packet', queue, id, length: capLen >= 0 ? capLen : payloadLen });
    } else {
      out.push({ kind: 'other', type });
    }
    off += align4(len);
  }
  return out;
}

/** True when packet id `a` comes after `b` (u32 ids that wrap, as the kernel compares them). */
export function idAfter(a: number, b: number): boolean {
  return ((b - a) | 0) < 0;
}
