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
export { BackupLink, BackupServer, describeAddress } from './backup.js';
export type { BackupAddress, BackupStats } from './backup.js';
export { cgroupOf, cgroupPids, detectFreezer, reapCgroup, releaseCgroup, setFrozen } from './cgroup.js';
export type { CgroupChoice, FreezerHierarchy } from './cgroup.js';
