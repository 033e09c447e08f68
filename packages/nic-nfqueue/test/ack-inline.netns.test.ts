/**
 * A release's ACKs are read inside the call that sent its verdicts: nfnetlink
 * queues them within that `sendmsg`, and the buffer reads them from the
 * socket's descriptor right away instead of one event-loop turn later. Real
 * kernel: a namespace of its own whose OUTPUT chain queues UDP to loopback
 * (needs root and iptables; the namespace and its rule go with it).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createNamespace } from '@remus/test-lab';

const FIXTURE = fileURLToPath(new URL('./fixtures/ack-inline.mjs', import.meta.url));
const QUEUE = 7301;
const PORT = 47301;
let ns: { name: string; destroy(): void } | undefined;

afterEach(() => {
  ns?.destroy();
  ns = undefined;
});

function inNs(name: string, argv: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', name, ...argv], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('nic-nfqueue reads a release\'s ACKs inline (netns)', () => {
  it('awaits no ACK once the call that sent the verdicts returns, and the held datagrams arrive only after the release', () => {
    ns = createNamespace('rnfqack');
    const rule = inNs(ns.name, ['iptables', '-A', 'OUTPUT', '-o', 'lo', '-p', 'udp', '--dport', String(PORT), '-j', 'NFQUEUE', '--queue-num', String(QUEUE)]);
    expect(rule.stderr).toBe('');
    const run = inNs(ns.name, [process.execPath, FIXTURE, String(QUEUE), String(PORT), '6']);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const r = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
    expect(r).toEqual({ inlineAcks: true, awaitingAfterSend: 0, heldBefore: 6, before: 0, after: 6, released: 6, held: 0 });
  });
});
