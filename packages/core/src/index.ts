/**
 * @remus/core: the checkpoint device layer.
 *
 * - {@link SubkindOps}: the ops a device plugin provides.
 * - {@link createCheckpointDevices}: one operation's devices, matched, set up, checkpointed, torn down.
 * - {@link runPhase}: the one multi-device engine every phase runs through.
 * - {@link runCheckpointLoop}: the Remus loop over a {@link DomainAdapter}.
 * - {@link Arbiter}: who may act as primary, under which epoch, until when ({@link localArbiter}, {@link openEpochStore}).
 * - {@link withDeadline}, {@link pollUntil}, {@link sleep}, {@link nextEvent}: the bounded, abortable waits every package uses.
 * - {@link parseSocketAddress}: the one socket address type.
 * - {@link reapDevices}: crash recovery through the engine.
 * - {@link procStat}, {@link processAlive}, {@link liveStartTime}: the one reader of /proc/<pid>/stat (zombie-aware liveness, start times).
 * - {@link runScript}: hotplug-style scripts with an argument vector, timeout and abort.
 * - {@link enterRealtime}, {@link applyRealtime}: SCHED_FIFO (reset-on-fork) for the thread that runs the checkpoint loop.
 * - {@link definePlugin} / {@link loadPlugin}: plugin metadata and loading by package name.
 */
export {
  DESCRIPTIONS,
  ErrorCodes,
  RemusError,
  defineErrorCodes,
  describeCause,
  formatOrigin,
  isPluginErrorCode,
  isRemusError,
} from './errors.js';
export type { CoreErrorCode, ErrorCode, ErrorCodeTable, ErrorOrigin, PluginErrorCode, RemusErrorOptions } from './errors.js';
export { abortError, nextEvent, pollUntil, raceSignal, sleep, withDeadline } from './wait.js';
export type { DeadlineOptions, NextEventOptions, PollOptions } from './wait.js';
export { formatSocketAddress, isLocalAddress, isLoopbackHost, parseSocketAddress } from './address.js';
export type { ParseAddressOptions, SocketAddress } from './address.js';
export { reapDevices } from './reap.js';
export { NIC_PARAMS, missingInterface, netnsExists, readNicParams, requireNetns, type NicParams } from './nic.js';
export type { ReapEntry, ReapOptions, ReapResult } from './reap.js';
export { CHECKPOINT_OPS, defineSubkind, noMatch } from './ops.js';
export type {
  CheckpointOpName,
  DeviceHandle,
  DeviceSpec,
  MatchResult,
  MaybePromise,
  NoMatch,
  OpContext,
  OpName,
  OpTimeouts,
  OpsList,
  SubkindOps,
} from './ops.js';
export { runPhase, wrapOpError } from './engine.js';
export type { OpEvent, OpListener, OpOutcome, PhaseResult, PhaseSpec, TargetOrigin } from './engine.js';
export { CheckpointDevices, DEFAULT_TIMEOUTS, createCheckpointDevices } from './devices.js';
export type { Assignment, CheckpointDevicesOptions, LayerState } from './devices.js';
export { CHECKPOINT_STEPS, runCheckpointLoop } from './loop.js';
export type {
  CheckpointFigures,
  CheckpointLoopOptions,
  CheckpointStep,
  DomainAdapter,
  DomainStepContext,
  FailurePolicy,
  LoopResult,
} from './loop.js';
export { localArbiter, openEpochStore, roleLapse, validateArbiter, validateEpoch, validateRecordName } from './arbiter.js';
export type { RangeOptions } from './validate.js';
export type { Arbiter, EpochStore, LocalArbiterOptions, Role, RoleState } from './arbiter.js';
export { liveStartTime, parseProcStat, procStat, processAlive } from './proc.js';
export { DEFAULT_REALTIME_PRIORITY, REALTIME_MODES, applyRealtime, enterRealtime, parseRealtimeMode } from './realtime.js';
export type { RealtimeHandle, RealtimeMode, RealtimeOptions, RealtimeOutcome, RealtimeReport } from './realtime.js';
export type { ProcStat } from './proc.js';
export { runScript } from './script.js';
export type { ScriptOptions, ScriptResult } from './script.js';
export { CORE_VERSION, checkCoreCompatibility, checkPlugin, createSubkind, definePlugin, loadPlugin, locatePlugin } from './plugin.js';
export type { LoadPluginOptions, PluginLocation, RemusPlugin, SubkindFactory } from './plugin.js';
export {
  MAX_TIMER_MS,
  checkDevices,
  checkOptionNames,
  closestName,
  newOperationId,
  validateCount,
  validateDuration,
  validateTimeouts,
  validateDevices,
  validateInterfaceName,
  validateName,
  validateOperationId,
  validateOpsList,
} from './validate.js';
