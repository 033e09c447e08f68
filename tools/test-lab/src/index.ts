/**
 * @remus/test-lab: the one set-up for Remus's namespace and process tests.
 *
 * - {@link sh} / {@link tryRun}: commands as argument vectors, never a shell.
 * - {@link createHostPair}: a host and a guest namespace joined by veth pairs,
 *   addressed (10.<net>.<i>.1|2/24, fd<net>:<i>::1|2/64) and up.
 * - {@link createTrio}: guest, host and client namespaces, routed or bridged
 *   through the host, IPv6 on or off in the guest.
 * - {@link createNamespace}: one owned namespace (e.g. for a bridge and taps).
 * - {@link LineProcess}: a child whose stdout lines are collected, with a
 *   bounded wait on them.
 * - {@link startQemu}: a QEMU without a guest and two QMP monitors, killed by
 *   pid; {@link coloPrimaryMachine} / {@link coloSecondaryMachine}: the two
 *   sides of a COLO pair (COLO-FT.txt's shapes).
 * - {@link ownedName} / {@link sweepStale}: names carrying the owner's pid and
 *   start time, so a later run removes what a SIGKILLed test left and never
 *   what a live one uses.
 * - {@link processAlive}, {@link childProcesses}: zombie-aware liveness.
 * - {@link waitFor}: a bounded poll (core's pollUntil) for test conditions.
 * - {@link tempDir}, {@link freePorts}.
 */
export { sh, tryRun } from './run.js';
export { childProcesses, processAlive, startTimeOf } from './procs.js';
export { createHostPair, createNamespace, netnsList, ownedName, sweepStale } from './netns.js';
export { createTrio } from './trio.js';
export type { Trio, TrioOptions, TrioTopology } from './trio.js';
export { LineProcess } from './lines.js';
export { COLO_QUORUM, coloPrimaryMachine, coloSecondaryMachine, qcow2, qemuArgv, startQemu, waitQmpReady } from './qemu.js';
export type { TestQemu } from './qemu.js';
export type { HostPair, HostPairOptions } from './netns.js';
export { freePorts, linkedProject, tempDir, waitFor } from './misc.js';
