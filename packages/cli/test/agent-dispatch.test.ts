import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { main } from '../src/main.js';

function sink(): Writable & { text: string } {
  const w = new Writable({ write: (c, _e, cb) => ((w.text += String(c)), cb()) }) as Writable & { text: string };
  w.text = '';
  return w;
}

describe('remus agent dispatch', () => {
  it('names the package to install when @remus/agent is not installed (the CLI does not depend on it)', async () => {
    const out = sink();
    const err = sink();
    const code = await main(['agent', 'run', '--config', 'x.json', '--host', 'ha'], { out, err });
    expect(code).toBe(2);
    expect(err.text).toContain('npm install @remus/agent');
  });
});
