/**
 * Types shared by the command modules (kept out of main.ts so that the
 * commands do not import the dispatcher that imports them).
 */

/** Streams the CLI writes to (replaceable in tests). */
export interface Io {
  readonly out: NodeJS.WritableStream & { isTTY?: boolean };
  readonly err: NodeJS.WritableStream;
}

/** A command: its arguments after the command name; resolves with the exit code. */
export type Command = (rest: readonly string[], io: Io) => Promise<number>;
