/**
 * @remus/arbiter-etcd: the primary role of a Remus pair as an etcd election.
 * The leader key's create_revision is the fencing epoch; the deadline is
 * kept on the monotonic clock from answered keepalives. See the README.
 */
export { etcdArbiter } from './arbiter.js';
export type { EtcdArbiter, EtcdArbiterEvent, EtcdArbiterOptions, Leader } from './arbiter.js';
export { EtcdClient, parseEndpoint } from './client.js';
export type { EtcdClientOptions } from './client.js';
