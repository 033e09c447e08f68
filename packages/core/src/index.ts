/**
 * @remus/core: the checkpoint device layer.
 *
 * - {@link SubkindOps}: the ops a device plugin provides.
 * - {@link createCheckpointDevices}: one operation's devices, matched, set up, checkpointed, torn down.
 * - {@link runPhase}: the one multi-device engine every phase runs through.
 * - {@link runCheckpointLoop}: the Remus loop over a {@link DomainAdapter}.
 * - {@link Arbiter}: who may act as primary, under which epoch, until when ({@link localArbiter}, {@link openEpochStore}).
 * - {@link runScript}: hotplug-style scripts with an argument vector, timeout and abort.
 * - {@link definePlugin} / {@link loadPlugin}: plugin metadata and loading by package name.
 */
export { ErrorCodes, RemusError, isRemusError, describeCause, formatOrigin } from './errors.js';
export type { ErrorCode, ErrorOrigin, RemusErrorOptions } from './errors.js';
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
export type { Arbiter, EpochStore, LocalArbiterOptions, Role, RoleState } from './arbiter.js';
export { raceSignal } from './abort.js';
export { runScript } from './script.js';
export type { ScriptOptions, ScriptResult } from './script.js';
export { CORE_VERSION, checkPlugin, createSubkind, definePlugin, loadPlugin } from './plugin.js';
export type { LoadPluginOptions, RemusPlugin, SubkindFactory } from './plugin.js';
export {
  newOperationId,
  validateDevices,
  validateInterfaceName,
  validateName,
  validateOperationId,
  validateOpsList,
} from './validate.js';
