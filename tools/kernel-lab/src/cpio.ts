/**
 * A minimal writer for the cpio "newc" format the kernel unpacks as an
 * initramfs (the host has no cpio tool; busybox's may lack create support).
 */

/** One entry of the archive; directories must come before their contents. */
export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(parts: Buffer[], length: number): void {
  const rest = (4 - (length % 4)) % 4;
  if (rest > 0) parts.push(Buffer.alloc(rest));
}

function header(ino: number, mode: number, size: number, name: string, rdev: [number, number] = [0, 0]): Buffer[] {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, rdev[0], rdev[1], nameBuf.length, 0];
  const head = Buffer.from(`070701${fields.map(hex8).join('')}`, 'ascii');
  const parts = [head, nameBuf];
  pad4(parts, head.length + nameBuf.length);
  return parts;
}

/** Builds an uncompressed newc archive (with its TRAILER!!!) from `entries`. */
export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    let mode: number;
    let data: Buffer = Buffer.alloc(0);
    let rdev: [number, number] = [0, 0];
    switch (e.type) {
      case 'dir':
        mode = S_IFDIR | (e.mode ?? 0o755);
        break;
      case 'file':
        mode = S_IFREG | (e.mode ?? 0o644);
        data = e.data;
        break;
      case 'symlink':
        mode = S_IFLNK | 0o777;
        data = Buffer.from(e.target, 'utf8');
        break;
      case 'char':
        mode = S_IFCHR | (e.mode ?? 0o600);
        rdev = [e.major, e.minor];
        break;
    }
    parts.push(...header(ino++, mode, data.length, name, rdev));
    parts.push(data);
    pad4(parts, data.length);
  }
  parts.push(...header(0, 0, 0, 'TRAILER!!!'));
  return Buffer.concat(parts);
}
