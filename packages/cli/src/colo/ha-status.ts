/**
 * `remus colo status --etcd ENDPOINTS --prefix PREFIX`: the status of a COLO
 * pair split across two hosts, from its arbiter alone (works from any host
 * that reaches etcd): the epoch, which host holds the role, whether the
 * pair is protected (the holder's fenced `colo-state` record under the
 * current epoch) and a host marked outdated. Needs @remus/arbiter-etcd and
 * @remus/colo, loaded when the command runs.
 */
import { RemusError } from '@remus/core';
import { loadArbiterEtcd, loadColo } from '../libs.js';
import type { Io } from '../io.js';

/** Prints the pair's status (a JSON object with `json`); exit 0 when someone holds the role, 1 when nobody does. */
export async function coloHaStatusCommand(v: { etcd: string; prefix?: string | undefined; json?: boolean | undefined }, io: Io): Promise<number> {
  const endpoints = v.etcd.split(',').map((e) => e.trim()).filter(Boolean);
  if (endpoints.length === 0) throw new RemusError('INVALID_ARGUMENT', '--etcd needs host:port of the etcd members, comma-separated');
  if (!v.prefix) throw new RemusError('INVALID_ARGUMENT', '--etcd needs --prefix: the election prefix the pair\'s sides use');
  const forWhat = 'remus colo status --etcd';
  const { etcdArbiter } = await loadArbiterEtcd(forWhat);
  const { coloHaStatus, COLO_STATE_RECORD, COLO_OUTDATED_RECORD } = await loadColo(forWhat);
  // The etcd arbiter always has `read` (core's Arbiter leaves it optional).
  const a = etcdArbiter({ endpoints, prefix: v.prefix, host: 'remus-colo-status' });
  const signal = AbortSignal.timeout(10_000);
  let s;
  try {
    const [leader, state, outdated] = await Promise.all([a.leader(signal), a.read!(COLO_STATE_RECORD, signal), a.read!(COLO_OUTDATED_RECORD, signal)]);
    s = coloHaStatus(leader, state, outdated);
  } finally {
    await a.close();
  }
  if (v.json) io.out.write(`${JSON.stringify({ type: 'status', ...s })}\n`);
  else {
    io.out.write(
      `epoch: ${s.epoch ?? 'none'}\nrole held by: ${s.holder ?? 'nobody'}\nprotected: ${s.protected ? 'yes' : 'no'}\n` +
        `${s.state ? `state: ${s.state}\n` : ''}${s.outdated ? `outdated: ${s.outdated}\n` : ''}${s.why}\n`,
    );
  }
  return s.holder === undefined ? 1 : 0;
}
