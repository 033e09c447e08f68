/**
 * The one id scheme of @remus/colo: the QEMU ids (chardevs, objects, NBD
 * exports, block nodes) that the subkinds give what they add, for one
 * operation and one device. The subkinds name things only through
 * {@link coloIds}; drivers (failover, liveness checks, QUORUM_REPORT_BAD
 * matching) and reapers find them the same way, never by pattern.
 */
import { createHash } from 'node:crypto';

/** Ids of the COLO proxy on the primary (`colo-primary-nic`), in set-up order. */
export interface ColoPrimaryNicIds {
  /** Server chardev: filter-mirror's output; the secondary's tx redirector connects (COLO-FT.txt `mirror0`). */
  readonly mirror: string;
  /** Server chardev: colo-compare's secondary input; the secondary's rx redirector connects (`compare1`). */
  readonly compare: string;
  /** Server chardev of the local loop into colo-compare (`compare0`). */
  readonly pri: string;
  /** Client chardev of that loop, colo-compare's primary input (`compare0-0`). */
  readonly priIn: string;
  /** Server chardev of the local loop out of colo-compare (`compare_out`). */
  readonly out: string;
  /** Client chardev of that loop, colo-compare's output (`compare_out0`). */
  readonly outIn: string;
  /** The filter-mirror object (tx to the secondary). */
  readonly filterMirror: string;
  /** filter-redirector: colo-compare's released packets back out to the client (rx, indev `out`). */
  readonly redirectOut: string;
  /** filter-redirector: the primary's packets into colo-compare (rx, outdev `pri`). */
  readonly redirectIn: string;
  /** The iothread colo-compare runs in. */
  readonly iothread: string;
  /** The colo-compare object. */
  readonly compareObj: string;
}

/** Ids of the COLO proxy on the secondary (`colo-secondary-nic`), in set-up order. */
export interface ColoSecondaryNicIds {
  /** Client chardev to the primary's `mirror`. */
  readonly red0: string;
  /** Client chardev to the primary's `compare`. */
  readonly red1: string;
  /** filter-redirector: tx in from `red0`. */
  readonly f1: string;
  /** filter-redirector: rx out to `red1`. */
  readonly f2: string;
  /** filter-rewriter (TCP sequence numbers). Stays after failover: see {@link coloFailoverOnSecondary}. */
  readonly rew: string;
}

/** Everything one device of one operation may add to a QEMU. */
export interface ColoIds {
  /** `colo.<operation>.<device>.`: the prefix of every chardev, object and export id below. */
  readonly prefix: string;
  readonly primaryNic: ColoPrimaryNicIds;
  readonly secondaryNic: ColoSecondaryNicIds;
  readonly primaryDisk: {
    /** Node name of the `replication,mode=primary` node added to the quorum (at most 31 characters: a hash). */
    readonly node: string;
    /** Node name of the NBD client a resync (reprotect) mirrors the disk into; deleted before replication starts (a hash, like `node`). */
    readonly resyncNode: string;
    /** Id of the resync's mirror block job. */
    readonly resyncJob: string;
  };
  readonly secondaryDisk: {
    /** Id of the NBD block export. */
    readonly export: string;
  };
}

/**
 * The QEMU ids that `operation`'s subkinds give for `device`: chardevs,
 * objects and exports are `colo.<operation>.<device>.<role>` (QEMU ids start
 * with a letter; `.` is never in an operation id, so the prefix selects one
 * operation); block node names are limited to 31 characters in QEMU, so the
 * replication node is `colo-<16 hex of sha256(operation, device)>-rep`
 * (the resync's NBD node `...-rsy`).
 * Pure: the same arguments always give the same ids.
 */
export function coloIds(operation: string, device: string): ColoIds {
  const p = `colo.${operation}.${device}.`;
  const hash = createHash('sha256').update(`${operation}\0${device}`).digest('hex').slice(0, 16);
  return {
    prefix: p,
    primaryNic: {
      mirror: `${p}mirror`,
      compare: `${p}compare`,
      pri: `${p}pri`,
      priIn: `${p}pri-in`,
      out: `${p}out`,
      outIn: `${p}out-in`,
      filterMirror: `${p}m0`,
      redirectOut: `${p}redire0`,
      redirectIn: `${p}redire1`,
      iothread: `${p}iothread`,
      compareObj: `${p}comp0`,
    },
    secondaryNic: { red0: `${p}red0`, red1: `${p}red1`, f1: `${p}f1`, f2: `${p}f2`, rew: `${p}rew0` },
    primaryDisk: { node: `colo-${hash}-rep`, resyncNode: `colo-${hash}-rsy`, resyncJob: `${p}resync` },
    secondaryDisk: { export: `${p}nbd` },
  };
}
