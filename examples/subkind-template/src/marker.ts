/**
 * The `marker` subkind: one file per device, `<dir>/remus-<operation>-<device>.marker`,
 * that records each checkpoint's postsuspend and commit. It stands for any
 * device a subkind protects: setup makes a resource tagged with the operation,
 * the checkpoint ops touch it without spawning anything, teardown removes it
 * (idempotent, also after a failed setup), reap finds a crashed run's files by
 * their tag.
 *
 * Guarantees: a marker exists exactly between setup and teardown; every line
 * it holds was written before the op that wrote it resolved. Not guaranteed:
 * durability across a host crash unless `fsync` is on.
 */
import { appendFile, open, readdir, rm, stat } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { RemusError, defineErrorCodes, defineSubkind, noMatch, type DeviceSpec, type SubkindOps } from '@remus/core';

/** This plugin's own error codes, namespaced `marker/...` (no core release needed to add one). */
export const MarkerErrors = defineErrorCodes('marker', {
  MARKER_GONE: 'the marker file of a set-up device disappeared',
});

export interface MarkerOptions {
  /** fsync the marker after every commit line. Default false. */
  readonly fsync?: boolean;
}

/**
 * The device's private data. Invariant: `path` is set as soon as setup has
 * decided the name, before the file exists, so that teardown after a failed
 * setup removes whatever was made; `undefined` means setup never ran.
 */
interface MarkerData {
  readonly path: string;
}

/** The params this subkind reads. */
const PARAMS = ['dir'] as const;

function markerName(operation: string, deviceId: string): string {
  return `remus-${operation}-${deviceId}.marker`;
}

/** The `dir` param, or undefined when absent. */
function dirOf(device: DeviceSpec): string | undefined {
  return device.params?.['dir'] as string | undefined;
}

/** Makes the `marker` subkind. Throws INVALID_ARGUMENT on bad options. */
export function markerSubkind(options: MarkerOptions = {}): SubkindOps<undefined, MarkerData> {
  if (options === null || typeof options !== 'object') throw new RemusError('INVALID_ARGUMENT', 'marker: options must be an object');
  if (options.fsync !== undefined && typeof options.fsync !== 'boolean') {
    throw new RemusError('INVALID_ARGUMENT', `marker: options.fsync must be a boolean, got ${JSON.stringify(options.fsync)}`);
  }
  const fsync = options.fsync ?? false;

  return defineSubkind<undefined, MarkerData>({
    name: 'marker',
    kind: 'marker',
    params: PARAMS,
    // Commit may fsync: give it more than the core's 5 s default on a slow disk.
    timeouts: { commit: 10_000 },

    checkParams(device) {
      const dir = dirOf(device);
      if (dir !== undefined && (typeof dir !== 'string' || !isAbsolute(dir))) {
        throw new RemusError('INVALID_ARGUMENT', `device ${device.id}: params.dir must be an absolute path, got ${JSON.stringify(dir)}`, {
          device: device.id,
          subkind: 'marker',
        });
      }
    },

    // Reads only: a device without `dir` is another subkind's; a `dir` that is missing is a fault.
    async match(h) {
      const dir = dirOf(h.device);
      if (dir === undefined) return noMatch('no params.dir: not a marker device');
      const s = await stat(dir).catch(() => undefined);
      if (!s?.isDirectory()) {
        throw new RemusError('DEVICE_NOT_READY', `device ${h.device.id}: ${dir} is not a directory`, { device: h.device.id, subkind: 'marker' });
      }
      return true;
    },

    async setup(h, ctx) {
      const path = join(dirOf(h.device)!, markerName(ctx.operation, h.device.id));
      h.data = { path };
      ctx.signal.throwIfAborted();
      await appendFile(path, `setup ${new Date().toISOString()}\n`);
    },

    async teardown(h) {
      if (!h.data) return;
      await rm(h.data.path, { force: true });
    },

    async postsuspend(h, ctx) {
      await appendLine(h.data!.path, h.device.id, `postsuspend ${ctx.checkpoint}\n`);
    },

    async commit(h, ctx) {
      await appendLine(h.data!.path, h.device.id, `commit ${ctx.checkpoint} epoch ${ctx.epoch}\n`);
      if (fsync) {
        const f = await open(h.data!.path, 'r');
        try {
          await f.sync();
        } finally {
          await f.close();
        }
      }
    },

    async reap(operation, devices) {
      const removed: string[] = [];
      for (const dir of new Set(devices.map(dirOf).filter((d): d is string => d !== undefined))) {
        const names = await readdir(dir).catch(() => [] as string[]);
        for (const name of names) {
          if (!name.startsWith(`remus-${operation}-`) || !name.endsWith('.marker')) continue;
          await rm(join(dir, name), { force: true });
          removed.push(`removed ${join(dir, name)}`);
        }
      }
      return removed;
    },
  });
}

/** Appends to an existing marker only ('r+' never creates): a marker that vanished fails the checkpoint, never swallowed. */
async function appendLine(path: string, deviceId: string, line: string): Promise<void> {
  let f;
  try {
    f = await open(path, 'r+');
  } catch (e) {
    throw new RemusError(MarkerErrors.MARKER_GONE, `device ${deviceId}: ${path} is gone`, { device: deviceId, subkind: 'marker', cause: e });
  }
  try {
    await f.write(line, (await f.stat()).size);
  } finally {
    await f.close();
  }
}
