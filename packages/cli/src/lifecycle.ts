/**
 * The lifecycle every long-running command shares (`remus run`, `remus demo`
 * through it, `remus colo start`): the journal is on disk before the body
 * touches anything, an optional control socket serves while the body runs,
 * SIGINT/SIGTERM go to the command's handler while it runs and while it
 * finishes (so a second signal during teardown is the command's, not a kill),
 * the command's own finish (teardown, detach, reap) runs whatever happened,
 * and the journal is removed only when the finish says nothing is left.
 *
 * Order: journal, control socket, signal handlers, body, finish, handlers
 * removed, journal removed if clean, control socket closed.
 */
import { Journal, type JournalData } from './journal.js';
import { serveControl, type ControlHandler } from './colo/control.js';

/** What a new journal records (see Journal.create). */
export interface JournalSpec {
  readonly stateDir: string;
  readonly operation: string;
  readonly command: string;
  readonly plugins: JournalData['plugins'];
  readonly devices: JournalData['devices'];
  readonly domainMode?: 'command' | 'pid';
}

export interface LifecycleOptions<T> {
  /** A journal to make, or one already made (by the caller, who then keeps it: it is never removed here). */
  readonly journal: JournalSpec | Journal;
  /** A control socket to serve at `path` while the command runs (the handler may use the journal). */
  readonly control?: { readonly path: string; readonly handler: ControlHandler };
  /** Called for SIGINT and SIGTERM while the body and the finish run; absent: signals are not handled here. */
  readonly onSignal?: (signal: NodeJS.Signals) => void;
  /** The command's work; the journal is on disk, the control socket serves. */
  readonly body: (journal: Journal) => Promise<T>;
  /**
   * Runs after the body, also when it threw (`error`): teardown, detach,
   * reap. Resolves with whether nothing of the run is left (then the
   * journal is removed).
   */
  readonly finish: (journal: Journal, outcome: { result: T | undefined; error: unknown }) => Promise<boolean>;
}

/** The outcome of {@link runLifecycle}: the body's result or error, and whether nothing was left. */
export interface LifecycleOutcome<T> {
  readonly result: T | undefined;
  /** What the body threw (undefined when it returned). */
  readonly error: unknown;
  readonly clean: boolean;
  readonly journal: Journal;
}

/** Runs one command's lifecycle (see the file comment). Rejects only when the journal or the control socket cannot be made. */
export async function runLifecycle<T>(o: LifecycleOptions<T>): Promise<LifecycleOutcome<T>> {
  const own = !(o.journal instanceof Journal);
  const journal = o.journal instanceof Journal ? o.journal : Journal.create(o.journal.stateDir, o.journal.operation, o.journal.command, o.journal.plugins, o.journal.devices, o.journal.domainMode);
  let control: { close: () => Promise<void> } | undefined;
  try {
    if (o.control) control = await serveControl(o.control.path, o.control.handler);
  } catch (e) {
    if (own) journal.remove();
    throw e;
  }
  const onSignal = o.onSignal;
  if (onSignal) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  let result: T | undefined;
  let error: unknown;
  try {
    result = await o.body(journal);
  } catch (e) {
    error = e ?? new Error('failed');
  }
  let clean = false;
  try {
    clean = await o.finish(journal, { result, error });
  } finally {
    if (onSignal) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    if (clean && own) journal.remove();
    await control?.close();
  }
  return { result, error, clean, journal };
}
