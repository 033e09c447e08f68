/**
 * Fault injection for the unit tests: a fake `/proc/drbd` (a file the tests
 * rewrite, read by the real state source and parser) and a block device
 * node with DRBD's major (made with mknod; only stat()ed, never opened).
 * Needs root for mknod.
 */
import { existsSync, mkdtempSync, openSync, rmSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import type { DeviceSpec, OpContext } from '@remus/core';

const STATUS_SIZE = 2048;

export interface MinorText {
  cs?: string;
  ro?: string;
  ds?: string;
  protocol?: string;
  flags?: string;
  ap?: number;
  pe?: number;
  oos?: number;
}

/** One minor as DRBD 8.4 prints it. */
export function minorText(minor: number, m: MinorText = {}): string {
  const cs = m.cs ?? 'Connected';
  if (cs === 'Unconfigured') return ` ${minor}: cs:Unconfigured\n`;
  return (
    ` ${minor}: cs:${cs} ro:${m.ro ?? 'Primary/Secondary'} ds:${m.ds ?? 'UpToDate/UpToDate'} ${m.protocol ?? 'C'} ${m.flags ?? 'r-----'}\n` +
    `    ns:1024 nr:0 dw:1024 dr:2048 al:1 bm:0 lo:0 pe:${m.pe ?? 0} ua:0 ap:${m.ap ?? 0} ep:1 wo:f oos:${m.oos ?? 0}\n`
  );
}

export function procText(...minors: string[]): string {
  return `version: 8.4.11 (api:1/proto:86-101)\nsrcversion: 211FB288A383ED945B83420 \n\n${minors.join('')}`;
}

/** A scratch folder with a fake status file and a DRBD-major device node; `remove()` deletes both. */
export class FakeDrbd {
  readonly dir = mkdtempSync(join(tmpdir(), `remus-disk-drbd-${process.pid}-`));
  readonly statusFile = join(this.dir, 'drbd');
  readonly devicePath = join(this.dir, 'drbd7');
  /** A plain file: a disk that is not a DRBD device. */
  readonly plainFile = join(this.dir, 'disk.img');

  constructor(initial: string = procText(minorText(7))) {
    this.write(initial);
    const r = spawnSync('mknod', [this.devicePath, 'b', '147', '7']);
    if (r.status !== 0) throw new Error(`mknod failed (tests need root): ${r.stderr}`);
    closeSync(openSync(this.plainFile, 'w'));
  }

  /**
   * Rewrites the status file in place (same inode, so an open handle sees
   * it), padded to one fixed size and written at once, so a concurrent read
   * sees the old or the new text, never an empty file.
   */
  write(text: string): void {
    if (text.length > STATUS_SIZE) throw new Error('fake status text too long');
    const fd = openSync(this.statusFile, existsSync(this.statusFile) ? 'r+' : 'w');
    try {
      writeSync(fd, text.padEnd(STATUS_SIZE, '\n'), 0);
      ftruncateSync(fd, STATUS_SIZE);
    } finally {
      closeSync(fd);
    }
  }

  device(id = 'xvda'): DeviceSpec {
    return { id, kind: 'disk', params: { path: this.devicePath } };
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export function ctx(checkpoint = 0, signal: AbortSignal = new AbortController().signal): OpContext {
  return { signal, checkpoint, epoch: 0, operation: 'disk-drbd-test' };
}
