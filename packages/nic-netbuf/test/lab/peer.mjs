// A UDP peer for the kernel-lab plug test, driven over stdin/stdout lines.
//   node peer.mjs recv <addr> <port>  -> "ready"; stdin "count" -> one JSON line {tag: n}
//   node peer.mjs send <addr> <port>  -> "ready"; stdin "send <tag> <n>" -> sends n datagrams "<tag>:<i>", then "sent <tag> <n>"
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const [mode, addr, port] = process.argv.slice(2);
const family = addr.includes(':') ? 'udp6' : 'udp4';
const socket = createSocket(family);
const lines = createInterface({ input: process.stdin });
lines.on('close', () => process.exit(0));

if (mode === 'recv') {
  const counts = {};
  socket.on('message', (msg) => {
    const tag = msg.toString().split(':')[0];
    counts[tag] = (counts[tag] ?? 0) + 1;
  });
  socket.bind(Number(port), addr, () => console.log('ready'));
  lines.on('line', (l) => {
    if (l === 'count') console.log(JSON.stringify(counts));
  });
} else if (mode === 'send') {
  socket.connect(Number(port), addr, () => console.log('ready'));
  lines.on('line', async (l) => {
    const [cmd, tag, n] = l.split(' ');
    if (cmd !== 'send') return;
    for (let i = 0; i < Number(n); i++) {
      await new Promise((resolve, reject) => socket.send(`${tag}:${i}`, (e) => (e ? reject(e) : resolve())));
    }
    console.log(`sent ${tag} ${n}`);
  });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
