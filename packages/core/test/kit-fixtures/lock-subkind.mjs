// A correct file-backed subkind whose per-device handle is a listening unix
// socket: reap removes a run's objects only when nobody listens on them any
// more (the run is dead), as a real subkind must never reap a live run. An
// in-process "crash" leaves the socket listening; a real SIGKILL closes it.
// Plain JavaScript: the kit's reap test imports it in a child `node`.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

/** Where the objects live (from REMUS_KIT_DIR, shared with the child process). */
export function lockDir() {
  const dir = process.env.REMUS_KIT_DIR;
  if (!dir) throw new Error('REMUS_KIT_DIR is not set');
  mkdirSync(dir, { recursive: true });
  return dir;
}

const alive = (sock) =>
  new Promise((resolve) => {
    const c = connect(sock);
    c.once('connect', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });

export function lockSubkind() {
  const paths = (operation, id) => ({ obj: join(lockDir(), `${operation}-${id}.obj`), sock: join(lockDir(), `${operation}-${id}.sock`) });
  return {
    name: 'lock-nic',
    kind: 'nic',
    async setup(h, ctx) {
      const p = paths(ctx.operation, h.device.id);
      h.data = { ...p };
      writeFileSync(p.obj, ctx.operation);
      const server = createServer();
      h.data.server = server;
      await new Promise((resolve, reject) => server.once('error', reject).listen(p.sock, resolve));
    },
    async teardown(h) {
      if (!h.data) return;
      const server = h.data.server;
      h.data.server = undefined;
      if (server) await new Promise((resolve) => server.close(() => resolve()));
      rmSync(h.data.obj, { force: true });
      rmSync(h.data.sock, { force: true });
    },
    postsuspend(h) {
      if (!h.data || !existsSync(h.data.obj)) throw new Error(`${h.device.id}: its object is gone`);
    },
    async reap(operation) {
      const removed = [];
      for (const f of readdirSync(lockDir())) {
        if (!f.startsWith(`${operation}-`) || !f.endsWith('.obj')) continue;
        const obj = join(lockDir(), f);
        const sock = obj.replace(/\.obj$/, '.sock');
        if (existsSync(sock) && (await alive(sock))) continue; // a live run's: never reap it
        rmSync(obj, { force: true });
        rmSync(sock, { force: true });
        removed.push(obj);
      }
      return removed;
    },
  };
}
