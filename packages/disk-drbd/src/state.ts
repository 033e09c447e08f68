/**
 * DRBD state for the checkpoint ops: the kernel's status file (`/proc/drbd`
 * of DRBD 8.4, the version in Linux) parsed into per-minor records.
 *
 * One {@link DrbdStateSource} is opened by `init` for the whole operation.
 * Refreshing it re-reads the status file through the file handle opened at
 * `init` (a read, never a process), so the checkpoint ops spawn nothing.
 */
import { readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { RemusError } from '@remus/core';

/** The state of one DRBD minor, as the kernel last reported it. */
export interface DrbdMinorState {
  /** Minor number (`/dev/drbd<minor>`). */
  readonly minor: number;
  /** Connection state (`cs:`): `Connected`, `WFConnection`, `StandAlone`, `SyncSource`, `Unconfigured`... */
  readonly connection: string;
  /** Role here (`ro:` left): `Primary`, `Secondary`, `Unknown`. Empty when unconfigured. */
  readonly role: string;
  /** Role of the peer (`ro:` right). Empty when unconfigured. */
  readonly peerRole: string;
  /** Disk state here (`ds:` left): `UpToDate`, `Inconsistent`, `Diskless`... Empty when unconfigured. */
  readonly disk: string;
  /** Disk state of the peer (`ds:` right): `UpToDate`, `DUnknown`, `Outdated`... Empty when unconfigured. */
  readonly peerDisk: string;
  /** Replication protocol letter (`A`, `B`, `C`; `D` on Remus-patched DRBD), or `undefined` without a network config. */
  readonly protocol: string | undefined;
  /** The six I/O flag characters (`r-----`; first `s` = I/O suspended), or `''`. */
  readonly ioFlags: string;
  /**
   * Counters of the second line, numbers only: `ns` `nr` `dw` `dr` (KiB),
   * `al` `bm`, `lo` (local requests open), `pe` (sent to the peer, not yet
   * answered), `ua` (received from the peer, not yet acknowledged), `ap`
   * (application requests not yet completed), `ep` (epochs), `oos` (KiB out
   * of sync). Absent keys were not reported.
   */
  readonly counters: Readonly<Record<string, number>>;
}

/** A snapshot of the status file: the module version and every minor it lists. */
export interface DrbdStatus {
  /** The `version:` line's version (`8.4.11`), or `undefined` if the text had none. */
  readonly version: string | undefined;
  /** Minors by number. A minor not listed here is not configured. */
  readonly minors: ReadonlyMap<number, DrbdMinorState>;
}

/**
 * Where the checkpoint ops read DRBD state. Made once per operation by
 * `init` and closed by `cleanup`; the built-in one is {@link openProcDrbd}.
 * A custom source (tests, other DRBD versions) must keep the same promise:
 * `refresh` does not spawn a process.
 */
export interface DrbdStateSource {
  /** True when the DRBD module is loaded (the status file exists). */
  readonly loaded: boolean;
  /** Re-reads the kernel's state and returns it. Rejects when the state cannot be read. */
  refresh(): Promise<DrbdStatus>;
  /** The state as of the last `refresh` (an empty status before the first). */
  current(): DrbdStatus;
  /** Releases the source. Idempotent. */
  close(): Promise<void>;
}

/** Makes the state source of one operation (called by `init`). */
export type DrbdStateSourceFactory = () => Promise<DrbdStateSource>;

/** Where DRBD 8.4 publishes its state. */
export const PROC_DRBD = '/proc/drbd';

const EMPTY: DrbdStatus = { version: undefined, minors: new Map() };

/**
 * Parses the text of DRBD 8.4's `/proc/drbd`:
 *
 * ```text
 * version: 8.4.11 (api:1/proto:86-101)
 *  0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----
 *     ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
 *  1: cs:Unconfigured
 * ```
 *
 * Lines it does not know (resync progress, `srcversion:`) are ignored.
 */
export function parseProcDrbd(text: string): DrbdStatus {
  let version: string | undefined;
  const minors = new Map<number, DrbdMinorState>();
  let last: { minor: number; state: Omit<DrbdMinorState, 'counters'>; counters: Record<string, number> } | undefined;
  const flush = (): void => {
    if (last) minors.set(last.minor, { ...last.state, counters: last.counters });
    last = undefined;
  };
  for (const line of text.split('\n')) {
    const v = /^version:\s*(\S+)/.exec(line);
    if (v) {
      version = v[1];
      continue;
    }
    const head = /^\s*(\d+):\s+(.*)$/.exec(line);
    if (head) {
      flush();
      last = { minor: Number(head[1]), state: parseMinorLine(Number(head[1]), head[2]!), counters: {} };
      continue;
    }
    if (last && /^\s+ns:/.test(line)) {
      for (const [, k, val] of line.matchAll(/(\w+):(\d+)/g)) last.counters[k!] = Number(val);
    }
  }
  flush();
  return { version, minors };
}

function parseMinorLine(minor: number, rest: string): Omit<DrbdMinorState, 'counters'> {
  const field = (key: string): string => new RegExp(`(?:^|\\s)${key}:(\\S+)`).exec(rest)?.[1] ?? '';
  const [role = '', peerRole = ''] = field('ro').split('/');
  const [disk = '', peerDisk = ''] = field('ds').split('/');
  // After ds: comes the protocol letter (a space without a network config), then six I/O flags.
  const tail = /\sds:\S+\s([A-Z ])\s([-a-z]{6})/.exec(rest);
  const protocol = tail && tail[1] !== ' ' ? tail[1] : undefined;
  return { minor, connection: field('cs'), role, peerRole, disk, peerDisk, protocol, ioFlags: tail?.[2] ?? '' };
}

/**
 * Opens DRBD 8.4's status file once; every `refresh` re-reads it through the
 * same handle (one read of a kernel file, no process). When the file does
 * not exist (module not loaded), the source is `loaded: false` and every
 * refresh returns an empty status: a host without DRBD can still tell a
 * plain disk "not mine".
 *
 * Throws UNSUPPORTED_HOST when the file is DRBD 9's (which lists no devices).
 */
export async function openProcDrbd(path: string = PROC_DRBD): Promise<DrbdStateSource> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new RemusError('UNSUPPORTED_HOST', `cannot open ${path}: ${(e as Error).message}`, { cause: e });
    }
  }
  const source = new ProcDrbdSource(path, handle);
  if (handle) {
    const status = await source.refresh();
    if (status.version !== undefined && !status.version.startsWith('8.')) {
      await source.close();
      throw new RemusError(
        'UNSUPPORTED_HOST',
        `DRBD ${status.version} is loaded, but ${path} lists devices only in DRBD 8.x (Linux's in-tree DRBD 8.4): this plugin's built-in state source needs DRBD 8.4; pass a stateSource for DRBD 9`,
        { details: { version: status.version } },
      );
    }
  }
  return source;
}

/** Read buffer size: /proc/drbd is about 200 bytes per minor. */
const READ_CHUNK = 64 * 1024;

/**
 * Invariant: `#handle` is the file opened at construction until `close`,
 * then undefined; `#status` is what the last successful read returned;
 * `#reading` is the read under way, if any.
 */
class ProcDrbdSource implements DrbdStateSource {
  readonly #path: string;
  #handle: FileHandle | undefined;
  #status: DrbdStatus = EMPTY;
  readonly loaded: boolean;
  readonly #buffer = Buffer.allocUnsafe(READ_CHUNK);
  #reading: Promise<DrbdStatus> | undefined;

  constructor(path: string, handle: FileHandle | undefined) {
    this.#path = path;
    this.#handle = handle;
    this.loaded = handle !== undefined;
  }

  /** Callers that refresh while a read is under way share that read (one read per poll, however many disks). */
  refresh(): Promise<DrbdStatus> {
    this.#reading ??= this.#read().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  async #read(): Promise<DrbdStatus> {
    if (!this.loaded) return this.#status;
    const handle = this.#handle;
    if (!handle) throw new RemusError('STATE', `DRBD state source for ${this.#path} is closed`);
    const chunks: Buffer[] = [];
    let position = 0;
    // A status file is read from the start each time; it may take several
    // reads. Synchronously: a procfs read never waits for a disk, and it
    // saves the thread-pool round trip that dominates inside a guest's pause.
    for (;;) {
      const bytesRead = readSync(handle.fd, this.#buffer, 0, READ_CHUNK, position);
      if (bytesRead === 0) break;
      chunks.push(Buffer.from(this.#buffer.subarray(0, bytesRead)));
      position += bytesRead;
    }
    this.#status = parseProcDrbd(Buffer.concat(chunks).toString('latin1'));
    return this.#status;
  }

  current(): DrbdStatus {
    return this.#status;
  }

  async close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close().catch(() => undefined);
  }
}
