# The service the CRIU-workload lab protects (`service.type: "criu"` of
# `remus agent`): a TCP counter whose only state is its memory. For each
# request line on any connection it adds 1 and answers {"id", "n"}. It has
# no state file and learns nothing at restore: after a failover it is the
# same process (same pid, same counter), restored by CRIU on the other host.
# Usage: python3 criu_service.py PORT
import json, selectors, socket, sys

sel = selectors.DefaultSelector()
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('0.0.0.0', int(sys.argv[1])))
srv.listen(16)
srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ, None)
counter = 0
bufs = {}
while True:
    for key, _ in sel.select():
        if key.data is None:
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            bufs[conn] = b''
            sel.register(conn, selectors.EVENT_READ, 'c')
            continue
        conn = key.fileobj
        try:
            data = conn.recv(4096)
        except OSError:
            data = b''
        if not data:
            sel.unregister(conn)
            bufs.pop(conn, None)
            conn.close()
            continue
        buf = bufs[conn] + data
        out = b''
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            counter += 1
            out += json.dumps({'id': line.decode('utf-8', 'replace')[:64], 'n': counter}).encode() + b'\n'
        bufs[conn] = buf[-65536:]
        if out:
            try:
                conn.sendall(out)
            except OSError:
                pass
