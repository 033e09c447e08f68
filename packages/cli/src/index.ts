/**
 * @remus/cli: the `remus` command (see the README), and its parts for
 * programs that embed it.
 */
export { main } from './main.js';
export type { Command, Io } from './io.js';
export { configError, loadConfig, validateConfig } from './config.js';
export type { AckConfig, ConfigProblem, PluginConfig, ProcessDomainConfig, RemusConfig } from './config.js';
export { buildOps, findInstalledPlugins, loadPluginFrom } from './plugins.js';
export type { BuiltOps, LoadedPlugin } from './plugins.js';
export { DEFAULT_STATE_DIR, Journal, listJournals, processStart, stateDir, stillRunning } from './journal.js';
export type { FoundJournal, JournalData, JournalPlugin, JournalProcess } from './journal.js';
export { cleanupAll, cleanupRun } from './cleanup.js';
export type { CleanupResult } from './cleanup.js';
export { hostChecks, pluginReports } from './doctor.js';
export type { Check, DoctorReport, PluginReport } from './doctor.js';
export { prepare, runProtected } from './run.js';
export type { RunOptions, RunOutcome } from './run.js';
export { ProgressView, RunFigures, percentile, statusLine, sumStats } from './progress.js';
export type { DeviceTotals, RunSummary, ViewMode } from './progress.js';
export { countViolations, runDemo } from './demo/demo.js';
export type { DemoOptions, DemoSummary } from './demo/demo.js';
export { cmdColo, coloEventBody, coloEventText, formatColoStatus } from './colo/commands.js';
export { controlSocketNames, controlSocketPath, requestControl, serveControl, socketLive } from './colo/control.js';
export type { ControlHandler, ControlRequest, ControlResult } from './colo/control.js';
export { loadPairConfig, loadPairLibs, validatePairConfig, type PairLibs } from './colo/pair.js';
export type { ColoFenceConfig, ColoPairConfig, ColoSideConfig } from './colo/pair.js';
export { readJsonFile } from './config.js';
