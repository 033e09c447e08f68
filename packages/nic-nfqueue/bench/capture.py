#!/usr/bin/env python3
"""Wire capture for the nic-nfqueue bench (started once per bench run, never per checkpoint).

Usage: capture.py IFNAME SRC_IPV4 [GAP_US]

An AF_PACKET socket on IFNAME (the receiving end of a veth pair), kernel
receive timestamps (SO_TIMESTAMPNS, CLOCK_REALTIME) turned into
CLOCK_MONOTONIC (the clock of Node's process.hrtime.bigint()) with the
realtime-monotonic offset sampled around each packet. For IPv4 packets from
SRC_IPV4 it prints one line per event:
  B <mono_ns>                     first packet after a gap of GAP_US (default 1000) µs: the start of a release burst
  M <mono_ns> <seq> <sent_ns>     a marker packet (UDP payload "RMNFQ <seq> <sent_ns>")
Prints "ready" once bound.
"""
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
ifname, src = sys.argv[1], socket.inet_aton(sys.argv[2])
gap_ns = int(sys.argv[3] if len(sys.argv) > 3 else 1000) * 1000

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.bind((ifname, 0))


def offset():
    a = time.clock_gettime_ns(time.CLOCK_REALTIME)
    m = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return a - m


off = offset()
last = 0
n = 0
out = sys.stdout
out.write("ready\n")
out.flush()
while True:
    data, anc, _flags, addr = s.recvmsg(96, 64)
    if addr[2] == PACKET_OUTGOING or len(data) < 34 or data[26:30] != src:
        continue
    rt = None
    for level, kind, val in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", val[:16])
            rt = sec * 1_000_000_000 + nsec
    if rt is None:
        continue
    n += 1
    if n % 256 == 0:
        off = offset()
    mono = rt - off
    ip = data[14:]
    line = None
    if mono - last >= gap_ns:
        line = f"B {mono}\n"
    last = mono
    ihl = (ip[0] & 15) * 4
    if ip[9] == 17 and ip[ihl + 8 : ihl + 13] == b"RMNFQ":
        parts = ip[ihl + 14 :].split(b" ")
        if len(parts) >= 2:
            sent = int(parts[1].strip(b"\0 \n") or 0)
            line = (line or "") + f"M {mono} {int(parts[0])} {sent}\n"
    if line:
        out.write(line)
        out.flush()
