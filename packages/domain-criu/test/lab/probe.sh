#!/bin/bash
# Kernel-lab probe (root, in the Debian 6.1 guest): can the host's criu run here?
# criu check, the soft-dirty feature, then a dump and a restore of a `sleep`.
# Prints PROBE lines; exit 0 only when the restored sleep runs.
set -u
CRIU=${CRIU:-/usr/sbin/criu}
D=$(mktemp -d /tmp/rmcriu-probe.XXXXXX)
ms() { date +%s%3N; }
echo "PROBE kernel $(uname -r)"
echo "PROBE criu $($CRIU --version | tr '\n' ' ')"
$CRIU check > "$D/check.log" 2>&1; rc=$?
echo "PROBE check rc=$rc: $(tail -n 3 "$D/check.log" | tr '\n' ' ')"
$CRIU check --feature mem_dirty_track > "$D/feat.log" 2>&1
echo "PROBE mem_dirty_track rc=$?: $(tail -n 1 "$D/feat.log")"
setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
sleep 0.5
PID=$(pgrep -n -x sleep)
mkdir -p "$D/img"
t0=$(ms); $CRIU dump -t "$PID" -D "$D/img" -o dump.log; rc=$?; t1=$(ms)
echo "PROBE dump rc=$rc ms=$((t1 - t0)) bytes=$(du -sb "$D/img" | cut -f1)"
[ $rc -eq 0 ] || { tail -n 5 "$D/img/dump.log"; exit 1; }
if kill -0 "$PID" 2>/dev/null; then echo "PROBE the dumped sleep still runs (expected killed)"; exit 1; fi
t0=$(ms); $CRIU restore -d -D "$D/img" -o restore.log; rc=$?; t1=$(ms)
echo "PROBE restore rc=$rc ms=$((t1 - t0))"
[ $rc -eq 0 ] || { tail -n 5 "$D/img/restore.log"; exit 1; }
if kill -0 "$PID" 2>/dev/null; then echo "PROBE restored sleep runs as pid $PID: $(tr '\0' ' ' < /proc/$PID/cmdline)"; kill -9 "$PID"; else echo "PROBE restored sleep not running"; exit 1; fi
rm -rf "$D"
echo PROBE_PASS
