/**
 * The package's stable error codes (namespaced `criu/...`, see core's
 * `defineErrorCodes`). Match on `err.code`, never on messages. A second
 * failover is core's `STATE`; bad arguments are core's `INVALID_ARGUMENT`.
 */
import { defineErrorCodes } from '@remus/core';

export const CriuErrors = defineErrorCodes('criu', {
  CRIU_MISSING: 'the criu program was not found (install it: Debian `apt-get install criu`)',
  CRIU_TOO_OLD: 'criu cannot run on this kernel (`criu check` fails on the vDSO: CRIU 4.1 or later is needed on kernel 6.13+)',
  CRIU_UNUSABLE: '`criu check` failed for another reason (its output is in the message)',
  NOT_ROOT: 'CRIU dumps and restores need root',
  DUMP_FAILED: '`criu dump` of a checkpoint failed; the checkpoint failed, the restore point on the backup is unchanged',
  RESTORE_FAILED: '`criu restore` failed; nothing it started is left running',
  NO_RESTORE_POINT: 'the backup holds no complete checkpoint',
  CHECKSUM_MISMATCH: 'a checkpoint\'s images do not match their checksum (damaged in transit or on disk); never restored',
  TRANSFER_REFUSED: 'the backup refused a checkpoint (its message says why: order, limits, disk full, checksum)',
  FRAME_INVALID: 'a frame of the image transfer protocol is malformed',
  FRAME_TOO_LARGE: 'a frame declares more payload than the per-frame cap',
  LINK_BROKEN: 'the connection to the backup closed or failed',
});
