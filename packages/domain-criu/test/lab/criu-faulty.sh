#!/bin/bash
# Fault injection for the lab test only: runs the real criu, except that a
# `dump` started while $FAIL_FLAG exists is killed mid-way (the flag is
# consumed).
if [ "$1" = dump ] && [ -n "$FAIL_FLAG" ] && [ -e "$FAIL_FLAG" ]; then
  rm -f "$FAIL_FLAG"
  /usr/sbin/criu "$@" &
  pid=$!
  sleep 0.15
  kill -9 "$pid"
  wait "$pid"
  exit 1
fi
exec /usr/sbin/criu "$@"
