/**
 * One host's side of a COLO pair as its own process (what a host's agent
 * runs): `node side-main.js CONFIG.json`, started inside the host's
 * namespace. It drives only its own QEMU (its QMP sockets), decides through
 * the etcd arbiter, attaches/detaches its own tap, and prints one JSON line
 * per event on stdout (`{"t": <ms since the epoch>, "type": ...}`; `status`
 * lines every `statusEveryMs`). SIGTERM: detach and exit 0 (the QEMU stays).
 */
import { readFileSync } from 'node:fs';
import { openEpochStore, runScript, type DeviceSpec } from '@remus/core';
import { etcdArbiter } from '@remus/arbiter-etcd';
import { ColoSideDriver, type ColoRole } from '@remus/colo';

/** The config file. */
export interface SideConfig {
  readonly role: ColoRole;
  readonly host: string;
  readonly peer: string;
  readonly qmp: string;
  readonly qmpEvents?: string;
  readonly pid?: number;
  readonly devices: DeviceSpec[];
  readonly migrationUri?: string;
  readonly checkpointDelayMs?: number;
  readonly operationId: string;
  readonly etcd: { readonly endpoints: string[]; readonly prefix: string; readonly ttlSeconds: number };
  readonly epochStore: string;
  /** The tap of this host's QEMU and the bridge to the clients (in this namespace). */
  readonly tap: string;
  readonly bridge: string;
  readonly statusEveryMs?: number;
  /** Bound of each QMP command, ms (the solo sequence's first step can wait for a cut link's TCP to give up). */
  readonly commandTimeoutMs?: number;
}

function out(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ t: performance.timeOrigin + performance.now(), ...o })}\n`);
}

async function main(): Promise<void> {
  const cfg = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as SideConfig;
  const arbiter = etcdArbiter({ ...cfg.etcd, host: cfg.host, onEvent: (e) => out({ type: 'arbiter', event: e as unknown as Record<string, unknown> }) });
  const ip = (args: string[], signal: AbortSignal) => runScript('ip', args, { timeoutMs: 5000, signal }).then(() => {});
  const side = await ColoSideDriver.connect({
    role: cfg.role,
    host: cfg.host,
    peer: cfg.peer,
    qmp: cfg.qmp,
    ...(cfg.qmpEvents ? { qmpEvents: cfg.qmpEvents } : {}),
    ...(cfg.pid ? { pid: cfg.pid } : {}),
    devices: cfg.devices,
    ...(cfg.migrationUri ? { migrationUri: cfg.migrationUri } : {}),
    checkpointDelayMs: cfg.checkpointDelayMs ?? 2000,
    ...(cfg.commandTimeoutMs ? { commandTimeoutMs: cfg.commandTimeoutMs } : {}),
    operationId: cfg.operationId,
    arbiter,
    epochs: openEpochStore(cfg.epochStore),
    fence: {
      attach: (s) => ip(['link', 'set', cfg.tap, 'master', cfg.bridge], s),
      detach: (s) => ip(['link', 'set', cfg.tap, 'nomaster'], s),
    },
    onEvent: (e) => out(e.type === 'error' ? { type: 'error', error: e.error.toJSON() } : { ...e }),
  });
  const timer = setInterval(() => out({ type: 'status', status: side.status() }), cfg.statusEveryMs ?? 1000);
  const end = async (code: number): Promise<never> => {
    clearInterval(timer);
    await side.close().catch(() => {});
    await arbiter.close();
    process.exit(code);
  };
  process.once('SIGTERM', () => void end(0));
  // Commands, one JSON line each on stdin: {"command":"reprotect","devices":[...],"migrationUri":"tcp:..."}.
  let buf = '';
  process.stdin.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const cmd = JSON.parse(buf.slice(0, i)) as { command: string; devices: DeviceSpec[]; migrationUri: string };
      buf = buf.slice(i + 1);
      if (cmd.command !== 'reprotect') continue;
      const t0 = performance.now();
      side.reprotect({ devices: cmd.devices, migrationUri: cmd.migrationUri }).then(
        (r) => out({ type: 'reprotected', ms: performance.now() - t0, ...r }),
        (e: unknown) => out({ type: 'reprotect-failed', message: String(e) }),
      );
    }
  });
  try {
    await side.start({ timeoutMs: 150_000 });
    out({ type: 'started', status: side.status() });
  } catch (e) {
    out({ type: 'start-failed', message: String(e) });
    await end(1);
  }
}

main().catch((e: unknown) => {
  out({ type: 'crash', message: String(e) });
  process.exit(2);
});
