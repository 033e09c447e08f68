# ONE TCP connection, requests sent continuously (every 20 ms, pipelined);
# prints "REPLY <wall ms> <counter> <request>" per reply. Exits when stdin
# closes or on "stop", printing "CLIENT_DONE sent=<n> replies=<n>".
# Usage: python3 client.py ADDR PORT
import socket, sys, threading, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=120)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print('CONNECTED %s' % (s.getsockname(),), flush=True)
stop = threading.Event()
sent = [0]
def sender():
    i = 0
    while not stop.is_set():
        i += 1
        try:
            s.sendall(b'r%d\n' % i)
        except OSError as e:
            if not stop.is_set():
                print('ERROR send %s' % e, flush=True)
            return
        sent[0] = i
        time.sleep(0.02)
def watch_stdin():
    for line in sys.stdin:
        if line.strip() == 'stop':
            break
    stop.set()
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
threading.Thread(target=sender, daemon=True).start()
threading.Thread(target=watch_stdin, daemon=True).start()
buf = b''
replies = 0
try:
    while not stop.is_set():
        d = s.recv(65536)
        if not d:
            if not stop.is_set():
                print('EOF', flush=True)
            break
        buf += d
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            replies += 1
            print('REPLY %d %s' % (int(time.time() * 1000), line.decode()), flush=True)
except OSError as e:
    if not stop.is_set():
        print('ERROR %s' % e, flush=True)
print('CLIENT_DONE sent=%d replies=%d' % (sent[0], replies), flush=True)
