# A tiny TCP counter service whose only state is in memory: for each request
# line it replies "<counter> <request> <wall ms when sent>\n" with counter = 1, 2, 3, ...
# Usage: python3 counter_service.py ADDR PORT
import socket, sys, time
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
conn, _ = srv.accept()
counter = 0
buf = b''
ballast = bytearray(4 << 20)  # 4 MiB of memory that never changes: full vs incremental dumps differ by it
while True:
    data = conn.recv(4096)
    if not data:
        break
    buf += data
    while b'\n' in buf:
        line, buf = buf.split(b'\n', 1)
        counter += 1
        conn.sendall(b'%d %s %.3f\n' % (counter, line, time.time() * 1000))
