// Install step of @remus/nic-netbuf: builds the native netlink channel
// (native/rtnl.c) with node-gyp. A failed build is not a failed install: the
// package then uses its event-driven channels and says so (see README).
import { spawnSync } from 'node:child_process';

const r = spawnSync('node-gyp', ['rebuild'], { stdio: ['ignore', 'inherit', 'inherit'], shell: false });
if (r.status !== 0) {
  console.warn(
    '@remus/nic-netbuf: the native netlink channel was not built (node-gyp needs python3, make and a C compiler); ' +
      'NICs will use the slower event-driven channels. Reinstall with those present to get it.',
  );
}
