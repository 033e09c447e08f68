/**
 * @remus/etcd-lab (private): a real etcd cluster in network namespaces for
 * the arbiter's and the HA lab's tests. See the README.
 */
export { LabNet, createLabNet, removeNamespace, sweepStaleLabs } from './net.js';
export type { LabNode } from './net.js';
export { EtcdCluster, startEtcdCluster } from './etcd.js';
export type { EtcdClusterOptions } from './etcd.js';
