// A backup that may not campaign polls the arbiter's records every 500 ms for
// as long as it waits (hours, for a backup with no state). Each wait must give
// back what it took from the agent's stop signal: one abort listener per wait
// was added and never removed (MaxListenersExceededWarning after 5.5 s, and
// an unbounded leak). A fake arbiter here only answers the records; the
// agent runs as a real process-level object on loopback with real TLS.
import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { pollUntil, type Arbiter } from '@remus/core';
import { Agent, validateAgentConfig, type AgentEvent } from '../src/index.js';
import { initTrial } from '../src/certs.js';

let dir: string;
const port = 20000 + ((process.pid * 7) % 20000);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'remus-agent-listeners-'));
  await initTrial({ dir: join(dir, 'tls'), cluster: 'c1', hosts: ['ha', 'hb'] });
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Records only: the pair was initialized (so a backup without state waits), nobody is outdated; campaigning is never reached. */
function recordsOnly(reads: { n: number }): Arbiter {
  return {
    name: 'records-only',
    acquire: () => Promise.reject(new Error('a backup without state must not campaign')),
    role: () => ({ held: false, epoch: 0, deadline: -Infinity }),
    resign: () => Promise.resolve(),
    publish: () => Promise.reject(new Error('a backup publishes nothing')),
    read: async (name) => {
      reads.n++;
      return name === 'initialized' ? '1' : undefined;
    },
    close: () => Promise.resolve(),
  };
}

it('a backup waiting to be eligible keeps a constant number of listeners on its stop signal', async () => {
  const valid = validateAgentConfig({
    cluster: 'c1',
    hosts: [
      { name: 'ha', peer: '10.0.0.1:7790', service: '10.0.0.1:7800' },
      { name: 'hb', peer: '10.0.0.2:7790', service: '10.0.0.2:7800' },
    ],
    etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.11:2379', '10.0.0.12:2379'] },
    tls: { ca: join(dir, 'tls', 'ca.crt'), cert: join(dir, 'tls', '{host}.crt'), key: join(dir, 'tls', '{host}.key') },
    stateDir: join(dir, 'state', '{host}'),
  });
  // hb listens on loopback here (the config refuses loopback peers: the other host could not reach them).
  const [ha, hb] = valid.hosts;
  const config = { ...valid, hosts: [ha, { ...hb, peer: { host: '127.0.0.1', port } }] as const };
  const events: AgentEvent[] = [];
  const reads = { n: 0 };
  const agent = new Agent({ config, host: 'hb', arbiter: recordsOnly(reads), onEvent: (e) => events.push(e) });
  const stop = new AbortController();
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  const running = agent.run(stop.signal);
  try {
    const count = (): number => getEventListeners(stop.signal, 'abort').length;
    const until = (what: string, reached: () => boolean): Promise<true> =>
      pollUntil(() => reached(), { what, timeoutMs: 10_000, intervalMs: 20, describe: () => JSON.stringify(events.slice(-3)) });
    await until('the first not-eligible event', () => events.some((e) => e.type === 'not-eligible'));
    const readsAtFirst = reads.n;
    const first = count();
    // 13 more rounds of 500 ms: past Node's 10-listener warning.
    await until('13 more reads of the records', () => reads.n >= readsAtFirst + 13);
    expect(agent.mode).toBe('backup');
    expect(String(events.find((e) => e.type === 'not-eligible')?.reason)).toMatch(/no state/);
    expect(count()).toBeLessThanOrEqual(first);
    expect(warnings.filter((w) => /MaxListeners/.test(w))).toEqual([]);
  } finally {
    stop.abort();
    await running;
    process.off('warning', onWarning);
  }
  expect(agent.mode).toBe('stopped');
}, 30_000);
