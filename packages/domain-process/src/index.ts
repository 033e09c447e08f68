/**
 * @remus/domain-process: protects a Linux process tree with the checkpoint
 * loop of `@remus/core`. Suspend and resume freeze and thaw the tree's cgroup
 * (cgroup v1 freezer, or v2 `cgroup.freeze`); save runs an optional hook and
 * sends its state to a backup, which acknowledges each checkpoint.
 *
 * It replicates nothing of the processes' memory by itself: see the README.
 */
export { ProcessDomain, findProgram, processDomain } from './domain.js';
export type { AckOption, CommandExit, DomainResource, ProcessDomainOptions, SaveContext } from './domain.js';
export { BackupLink, BackupServer, describeAddress, parseRefusal } from './backup.js';
export type { BackupAddress, BackupLinkOptions, BackupServerOptions, BackupStats, EpochGate } from './backup.js';
export { FRAME_HEADER_BYTES, FRAME_MAGIC, FrameDecoder, FrameType, MAX_REFUSE_BYTES, encodeFrame, encodeHeader } from './frame.js';
export type { Frame, FrameDecoderOptions, FrameHeader, FrameTypeValue } from './frame.js';
export { BackupErrors, ProcessErrors } from './errors.js';
export {
  addFreezeKeeper,
  addToCgroup,
  cgroupOf,
  cgroupPids,
  checkOperationCgroup,
  createCgroup,
  cleanupOperationCgroup,
  detectFreezer,
  freezerRoots,
  parentPid,
  processStartTime,
  reapCgroup,
  releaseCgroup,
  setFrozen,
} from './cgroup.js';
export type { CgroupChoice, FreezerHierarchy, OperationCgroupCleanup } from './cgroup.js';
