/**
 * @remus/nemesis (private): Jepsen-style fault injection for the remus
 * agent on one machine, and the checker over each history. See the README.
 */
export { checkHistory } from './checker.js';
export type { CheckResult, ClientReply, History, HostRelease } from './checker.js';
export { AgentProc, FENCE, HOSTS, NemesisLab, Scenario, mono, other, recordTotals, sleep } from './lab.js';
export type { Fault, HostName, LabOptions } from './lab.js';
export { FAULT_KINDS, rng, runScenario } from './scenarios.js';
export type { FaultKind, RunOptions, ScenarioResult } from './scenarios.js';
