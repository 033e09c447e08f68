// The workload seam: service.type selects the workload (closest-name errors), the counter workload's state records.
import { describe, expect, it } from 'vitest';
import { isRemusError } from '@remus/core';
import { counterWorkload, validateAgentConfig, workloadFor } from '../src/index.js';

const config = (service: unknown) => ({
  cluster: 'c1',
  hosts: [
    { name: 'ha', peer: '10.0.0.1:7790', service: '10.0.0.1:7800' },
    { name: 'hb', peer: '10.0.0.2:7790', service: '10.0.0.2:7800' },
  ],
  etcd: { endpoints: ['10.0.0.10:2379', '10.0.0.11:2379', '10.0.0.12:2379'] },
  tls: { ca: 'tls/ca.crt', cert: 'tls/{host}.crt', key: 'tls/{host}.key' },
  ttlSeconds: 2,
  service,
});

describe('agent workload', () => {
  it('service.type selects the workload; an unknown type is refused naming the closest known one', () => {
    expect(workloadFor(validateAgentConfig(config({ type: 'counter' }), '/etc').service).type).toBe('counter');
    let err: unknown;
    try {
      validateAgentConfig(config({ type: 'countr' }), '/etc');
    } catch (e) {
      err = e;
    }
    expect(isRemusError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
    expect((err as Error).message).toContain('service.type "countr" is not known (did you mean "counter"?)');
  });

  it('counter: checkState reads {"counter": N} and refuses anything else', () => {
    const w = counterWorkload();
    expect(w.checkState(Buffer.from('{"counter":41}'))).toEqual({ counter: 41 });
    expect(() => w.checkState(Buffer.from('{"counter":-1}'))).toThrow(/counter/);
    expect(() => w.checkState(Buffer.from('not json'))).toThrow();
  });

  it('counter: a primary started from a state record serves from it, and save sends the next record', async () => {
    const w = counterWorkload();
    const p = await w.startPrimary({
      host: 'ha',
      epoch: 7,
      state: Buffer.from('{"counter":41}'),
      listen: { host: '127.0.0.1', port: 0 },
      onRelease: () => undefined,
      signal: new AbortController().signal,
    });
    try {
      const sent: string[] = [];
      const d = p.domain({ send: (_c, s) => void sent.push(Buffer.from(s).toString('utf8')), waitAck: () => Promise.resolve() });
      await d.save?.({ checkpoint: 1, epoch: 7, signal: new AbortController().signal } as never);
      expect(sent).toEqual(['{"counter":41}']);
      expect(p.output.kind).toBe('agent-output');
    } finally {
      await p.close();
    }
  });
});
