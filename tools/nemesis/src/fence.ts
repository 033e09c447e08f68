/**
 * A hard-fence stand-in for the nemesis (a real one would power the peer off
 * through IPMI or a PDU): appends `peer epoch cluster` from its environment
 * to FILE and exits with CODE. Usage: node fence.js FILE CODE
 */
import { appendFileSync } from 'node:fs';

const [file, code] = process.argv.slice(2);
appendFileSync(file as string, `${process.env.REMUS_FENCE_PEER} ${process.env.REMUS_EPOCH} ${process.env.REMUS_CLUSTER}\n`);
process.exit(Number(code));
