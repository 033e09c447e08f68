/**
 * `remus agent ...` (also the `remus-agent` binary): run, init, status.
 * Exit codes like `remus`: 0 success, 1 failure, 2 bad usage or config.
 */
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RemusError, describeCause, isRemusError } from '@remus/core';
import { Agent, type AgentEvent, type AgentStatus } from './agent.js';
import { initTrial } from './certs.js';
import { forHost, loadAgentConfig, pairOf } from './config.js';

/** Streams the commands write to. */
export interface AgentIo {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
}

export const AGENT_USAGE = `usage:
  remus agent run --config FILE --host NAME [--json]
  remus agent init --dir DIR --cluster NAME --host A --host B [--days N]
  remus agent status --config FILE --host NAME [--json]

run     this host's side of the pair (primary or backup) until SIGINT/SIGTERM;
        --json: one event per line (mode changes, releases, refusals, failover)
init    a CA and host certificates for a trial (openssl)
status  what the running agent of this host says (its control socket in the state directory)
`;

/** Runs `remus agent <argv>`; resolves with the exit code. */
export async function agentMain(argv: readonly string[], io: AgentIo = { out: process.stdout, err: process.stderr }): Promise<number> {
  const [sub, ...rest] = argv;
  const json = rest.includes('--json');
  try {
    switch (sub) {
      case 'run':
        return await cmdRun(rest, io);
      case 'init':
        return await cmdInit(rest, io);
      case 'status':
        return await cmdStatus(rest, io);
      case undefined:
      case '--help':
      case 'help':
        io.out.write(AGENT_USAGE);
        return sub === undefined ? 2 : 0;
      default:
        io.err.write(`remus agent: unknown command ${JSON.stringify(sub)}\n\n${AGENT_USAGE}`);
        return 2;
    }
  } catch (e) {
    if (json) io.out.write(`${JSON.stringify({ type: 'error', time: new Date().toISOString(), error: e instanceof RemusError ? e.toJSON() : { message: describeCause(e) } })}\n`);
    else io.err.write(`remus agent: ${e instanceof RemusError ? `[${e.code}] ` : ''}${describeCause(e)}\n`);
    const usage = isRemusError(e, 'INVALID_ARGUMENT') || /^ERR_PARSE_ARGS/.test(String((e as { code?: unknown }).code));
    return usage ? 2 : 1;
  }
}

function need(v: string | undefined, flag: string): string {
  if (v === undefined || v === '') throw new RemusError('INVALID_ARGUMENT', `${flag} is required\n\n${AGENT_USAGE}`);
  return v;
}

async function cmdRun(rest: readonly string[], io: AgentIo): Promise<number> {
  const { values: v } = parseArgs({ args: [...rest], options: { config: { type: 'string' }, host: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
  const config = loadAgentConfig(need(v.config, '--config'));
  const host = need(v.host, '--host');
  const write = (e: AgentEvent): void => {
    if (v.json) io.out.write(`${JSON.stringify(e)}\n`);
    else io.out.write(`${e.time} ${e.host} ${describeEvent(e)}\n`);
  };
  const agent = new Agent({ config, host, onEvent: write });
  const stop = new AbortController();
  const onSignal = (): void => {
    if (stop.signal.aborted) process.exit(1);
    stop.abort(new RemusError('ABORTED', 'stopped by a signal'));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await agent.run(stop.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return 0;
}

function describeEvent(e: AgentEvent): string {
  const { type, host: _h, time: _t, mono: _m, ...rest } = e;
  return `${type} ${JSON.stringify(rest)}`;
}

async function cmdInit(rest: readonly string[], io: AgentIo): Promise<number> {
  const { values: v } = parseArgs({ args: [...rest], options: { dir: { type: 'string' }, cluster: { type: 'string' }, host: { type: 'string', multiple: true }, days: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
  const days = v.days === undefined ? 365 : Number(v.days);
  if (!Number.isInteger(days) || days < 1) throw new RemusError('INVALID_ARGUMENT', `--days ${JSON.stringify(v.days)} must be a whole number >= 1`);
  const files = await initTrial({ dir: need(v.dir, '--dir'), cluster: need(v.cluster, '--cluster'), hosts: v.host ?? [], days });
  if (v.json) io.out.write(`${JSON.stringify({ type: 'init', files })}\n`);
  else io.out.write(`made (keys are 0600; copy each host its own .crt/.key and ca.crt, never ca.key):\n${files.map((f) => `  ${f}`).join('\n')}\n`);
  return 0;
}

/** Asks the agent of `host` (its control socket) for its status. */
export async function readStatus(socket: string, timeoutMs = 3000): Promise<AgentStatus> {
  return new Promise<AgentStatus>((resolve, reject) => {
    const s = createConnection(socket);
    let text = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new RemusError('TIMEOUT', `the agent at ${socket} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('error', (e) => {
      clearTimeout(t);
      reject(new RemusError('STATE', `no agent answers at ${socket} (${describeCause(e)}); is \`remus agent run\` running for this host?`, { cause: e }));
    });
    s.on('end', () => {
      clearTimeout(t);
      try {
        resolve(JSON.parse(text) as AgentStatus);
      } catch (e) {
        reject(new RemusError('STATE', `the agent at ${socket} answered garbage: ${describeCause(e)}`));
      }
    });
  });
}

async function cmdStatus(rest: readonly string[], io: AgentIo): Promise<number> {
  const { values: v } = parseArgs({ args: [...rest], options: { config: { type: 'string' }, host: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
  const config = loadAgentConfig(need(v.config, '--config'));
  const host = need(v.host, '--host');
  pairOf(config, host);
  const s = await readStatus(join(forHost(config.stateDir, host), 'agent.sock'));
  if (v.json) io.out.write(`${JSON.stringify({ type: 'status', ...s })}\n`);
  else {
    io.out.write(`${s.host} (cluster ${s.cluster}, pid ${s.pid}): ${s.mode}, epoch ${s.epoch} (highest seen ${s.highestEpoch})\n`);
    io.out.write(`  role: ${s.roleHeld ? `held, deadline in ${s.deadlineInMs} ms` : 'not held'}\n`);
    io.out.write(`  ${s.mode === 'primary' ? `checkpoints committed: ${s.checkpoints}` : `state: ${s.latest ? `epoch ${s.latest.epoch} checkpoint ${s.latest.checkpoint}` : 'none (not synced)'}`}; peer ${s.peerConnected ? 'connected' : 'not connected'}\n`);
  }
  return 0;
}
