/**
 * @remus/test-lab: the one set-up for Remus's namespace and process tests.
 *
 * - {@link sh} / {@link tryRun}: commands as argument vectors, never a shell.
 * - {@link createHostPair}: a host and a guest namespace joined by veth pairs,
 *   addressed (10.<net>.<i>.1|2/24, fd<net>:<i>::1|2/64) and up.
 * - {@link ownedName} / {@link sweepStale}: names carrying the owner's pid and
 *   start time, so a later run removes what a SIGKILLed test left and never
 *   what a live one uses.
 * - {@link processAlive}, {@link childProcesses}: zombie-aware liveness.
 * - {@link waitFor}: a bounded poll (core's pollUntil) for test conditions.
 * - {@link tempDir}, {@link freePorts}.
 */
export { sh, tryRun } from './run.js';
export { childProcesses, processAlive, startTimeOf } from './procs.js';
export { createHostPair, netnsList, ownedName, sweepStale } from './netns.js';
export type { HostPair, HostPairOptions } from './netns.js';
export { freePorts, linkedProject, tempDir, waitFor } from './misc.js';
