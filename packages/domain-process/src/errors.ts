/**
 * The package's own stable error codes (namespaced, see core's
 * `defineErrorCodes`): `backup/...` for the state/ack protocol, `process/...`
 * for the domain and its cgroups. Match on `err.code`, never on messages.
 */
import { defineErrorCodes } from '@remus/core';

export const BackupErrors = defineErrorCodes('backup', {
  FRAME_INVALID: 'a frame of the backup protocol is malformed (magic, type, flags, number range, payload of an ack)',
  FRAME_TOO_LARGE: 'a frame declares more payload than the per-frame cap allows',
  MEMORY_LIMIT: 'accepting the frame would take the backup over its total memory cap',
  CONNECTION_LIMIT: 'the backup already has its maximum number of connections',
  BUSY: 'the backup is bound to another primary (same or higher epoch)',
  CHECKPOINT_OUT_OF_ORDER: 'a checkpoint other than the next one (N+1) of the connection',
  ACK_UNEXPECTED: 'an acknowledgement of a checkpoint other than the one sent last (or of another epoch)',
  IDLE_TIMEOUT: 'the peer sent nothing for longer than the idle timeout',
  FRAME_TIMEOUT: 'a frame was not complete within the frame timeout',
  REFUSED: 'the backup refused the connection or a frame (its message says why)',
  LINK_BROKEN: 'the connection to the backup was closed or failed',
});

export const ProcessErrors = defineErrorCodes('process', {
  CGROUP_NOT_OURS: 'a cgroup path that is not exactly <freezer root>/remus-<operation>: refused, nothing touched',
});
