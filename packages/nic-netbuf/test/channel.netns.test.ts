/**
 * The tc batch control channel on its own, against real tc in a network
 * namespace the test makes (needs root).
 */
import { afterEach, expect, it } from 'vitest';
import { RemusError } from '@remus/core';
import { TcChannel } from '../src/channel.js';
import { makeNet, qdiscs, sh, type TestNet } from './helpers.js';

let net: TestNet | undefined;
let channel: TcChannel | undefined;
afterEach(async () => {
  await channel?.close();
  channel = undefined;
  net?.destroy();
  net = undefined;
});

function prepare(): { ns: string } {
  net = makeNet(1);
  sh('ip', ['-n', net.host, 'link', 'add', 'rbchan', 'type', 'ifb']);
  sh('tc', ['-n', net.host, 'qdisc', 'add', 'dev', 'rbchan', 'root', 'handle', '1:', 'bfifo', 'limit', '1000']);
  return { ns: net.host };
}

it('runs pipelined commands in order and reports each outcome to its own caller', async () => {
  const { ns } = prepare();
  channel = await TcChannel.open(ns);
  const change = (limit: number): Promise<void> => channel!.run(['qdisc', 'change', 'dev', 'rbchan', 'root', 'handle', '1:', 'bfifo', 'limit', String(limit)]);
  const results = await Promise.allSettled([
    change(2000),
    channel.run(['qdisc', 'change', 'dev', 'nosuchdev', 'root', 'handle', '1:', 'bfifo', 'limit', '5']),
    change(3000),
    channel.run(['qdisc', 'change', 'dev', 'rbchan', 'root', 'handle', '2:', 'bfifo', 'limit', '5']),
    change(4000),
  ]);
  expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled']);
  const second = (results[1] as PromiseRejectedResult).reason as RemusError;
  expect(second.code).toBe('OP_FAILED');
  expect(second.message).toContain('Cannot find device "nosuchdev"');
  expect(second.details['errno']).toBe('ENODEV');
  expect(((results[3] as PromiseRejectedResult).reason as Error).message).not.toContain('nosuchdev');
  expect(qdiscs(ns, 'rbchan').find((q) => q.root)?.options).toEqual({ limit: 4000 });
});

it('fails fast when the namespace does not exist', async () => {
  await expect(TcChannel.open('remus-netbuf-no-such-ns')).rejects.toMatchObject({ code: 'OP_FAILED' });
});

it('rejects with the signal’s reason when aborted, and stays usable', async () => {
  const { ns } = prepare();
  channel = await TcChannel.open(ns);
  const ac = new AbortController();
  ac.abort(new RemusError('TIMEOUT', 'op timed out'));
  await expect(channel.run(['qdisc', 'show'], ac.signal)).rejects.toMatchObject({ code: 'TIMEOUT' });
  const ac2 = new AbortController();
  const p = channel.run(['qdisc', 'change', 'dev', 'rbchan', 'root', 'handle', '1:', 'bfifo', 'limit', '1500'], ac2.signal);
  ac2.abort(new RemusError('ABORTED', 'caller aborted'));
  await expect(p).rejects.toMatchObject({ code: 'ABORTED' });
  await channel.run(['qdisc', 'change', 'dev', 'rbchan', 'root', 'handle', '1:', 'bfifo', 'limit', '2500']);
  expect(qdiscs(ns, 'rbchan').find((q) => q.root)?.options).toEqual({ limit: 2500 });
});

it('fails pending and later commands once the tc process is gone, and never restarts it', async () => {
  const { ns } = prepare();
  channel = await TcChannel.open(ns);
  process.kill(channel.pid!, 'SIGKILL');
  await expect(channel.run(['qdisc', 'show'])).rejects.toMatchObject({ code: 'OP_FAILED', message: expect.stringContaining('is gone') });
  expect(channel.alive).toBe(false);
  await channel.close();
  await channel.close();
});
