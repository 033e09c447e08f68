/**
 * @remus/agent: the per-host agent of a Remus pair (`remus agent`). Primary
 * or backup under an arbiter (etcd), state and acks over mutually
 * authenticated TLS, failover only after the old lease is gone plus a
 * margin, an optional hard fence before promotion. See the README.
 */
export { Agent } from './agent.js';
export type { AgentEvent, AgentMode, AgentOptions, AgentStatus } from './agent.js';
export { AGENT_USAGE, agentMain, readStatus } from './cli.js';
export type { AgentIo } from './cli.js';
export { initTrial, issueHostCert, makeCa } from './certs.js';
export { forHost, loadAgentConfig, pairOf, validateAgentConfig } from './config.js';
export type { AgentConfig, CriuServiceConfig, HostConfig, ProcessServiceConfig, ServiceConfig, ServiceOutputConfig } from './config.js';
export { AgentErrors, connectPeer, listenPeer, loadTls } from './peer.js';
export type { ConnectPeerOptions, ListenPeerOptions, PeerConnection, PeerMessage, TlsMaterial } from './peer.js';
export { CounterService, monoNow } from './service.js';
export type { Release, StateSink } from './service.js';
export { MAX_PROCESS_STATE_BYTES, counterWorkload, processWorkload } from './workload.js';
export { MAX_CRIU_RECORD_BYTES, criuWorkload } from './criu-workload.js';
export { workloadFor } from './workloads.js';
export type { AgentWorkload, PrimaryWorkload, WorkloadStart } from './workload.js';
