/**
 * The two programs that run inside the guest: `/init` of the initramfs
 * (busybox sh) and the agent (host bash, PID 1 after switch_root).
 *
 * Boot: /init loads the virtio/9p/overlay modules, mounts the host root
 * read-only over 9p (tag `hostroot`) under a tmpfs overlay, moves the raw 9p
 * mount to /run/remus-lab/host, mounts the per-boot writable share (tag
 * `labshare`) at /run/remus-lab/share and execs the agent from that share, so
 * a new agent needs no new initramfs.
 *
 * Control line: /dev/ttyS1 (a QEMU socket chardev on the host), raw mode.
 * Guest to host: `READY`, then `DONE <id> <status>` per job. Host to guest:
 * `RUN <id>` (job files in share/jobs/<id>/) and `QUIT` (the agent writes to
 * isa-debug-exit, QEMU exits with status 33). Any other way QEMU ends is a
 * crash as far as the host is concerned.
 */

/** The value the agent writes to isa-debug-exit on QUIT; QEMU exits with (v << 1) | 1. */
export const QUIT_PORT_VALUE = 0x10;
/** QEMU's exit status after a clean QUIT. */
export const QUIT_EXIT_STATUS = (QUIT_PORT_VALUE << 1) | 1;

/**
 * `/init` of the initramfs; `/modules/order` lists the modules to insmod, one a
 * line. Reads share/boot.conf (KVER, MODULES_DIR, BUSYBOX, ROOT_CACHE).
 */
export const INIT_SCRIPT = `#!/bin/sh
export PATH=/bin
fail() { echo "remus-lab-init: $*"; echo o > /proc/sysrq-trigger; sleep 30; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || fail "mounting proc, sys, dev"
for m in $(cat /modules/order); do insmod "/modules/$m.ko" || fail "insmod $m"; done
mkdir -p /lower /share /rw /newroot
o=trans=virtio,version=9p2000.L,msize=262144
n=0
until mount -t 9p -o "$o" labshare /share; do
  n=$((n + 1)); [ "$n" -lt 100 ] || fail "mounting the lab share (9p)"; sleep 0.1
done
. /share/boot.conf || fail "reading boot.conf"
mount -t 9p -o "$o,ro,cache=$ROOT_CACHE" hostroot /lower || fail "mounting the host root (9p)"
mount -t tmpfs -o mode=0755 rw /rw && mkdir /rw/up /rw/work || fail "mounting the overlay tmpfs"
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/up,workdir=/rw/work /newroot || fail "mounting the overlay"
mount -t tmpfs -o mode=0755 run /newroot/run || fail "mounting /run"
mkdir -p /newroot/run/remus-lab/host /newroot/run/remus-lab/share
mount --move /lower /newroot/run/remus-lab/host || fail "moving the host root"
mount --move /share /newroot/run/remus-lab/share || fail "moving the lab share"
mount -t tmpfs -o mode=1777 tmp /newroot/tmp || fail "mounting /tmp"
mount --move /proc /newroot/proc && mount --move /sys /newroot/sys && mount --move /dev /newroot/dev || fail "moving proc, sys, dev"
# Everything busybox can do here costs nothing; the host's binaries come over 9p.
mkdir -p /newroot/dev/pts /newroot/dev/shm "/newroot/lib/modules/$KVER"
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts || fail "mounting devpts"
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm || fail "mounting /dev/shm"
mount --bind "/newroot/run/remus-lab/host$MODULES_DIR" "/newroot/lib/modules/$KVER" || fail "binding the modules"
for t in modprobe insmod rmmod lsmod depmod modinfo; do ln -sf "$BUSYBOX" "/newroot/usr/sbin/$t" || fail "linking $t"; done
echo /usr/sbin/modprobe > /newroot/proc/sys/kernel/modprobe
echo remus-lab > /newroot/proc/sys/kernel/hostname
ip link set lo up || fail "lo up"
insmod "/newroot/lib/modules/$KVER/kernel/drivers/block/loop.ko" || fail "insmod loop"
stty -F /newroot/dev/ttyS1 raw -echo || fail "stty on the control line"
echo "remus-lab-init: handing over to the agent"
exec switch_root /newroot /bin/bash /run/remus-lab/share/agent.sh
fail "switch_root"
`;

/**
 * The agent; /init has done the mounts, module and tty set-up. Per job
 * reads share/jobs/<id>/{binds,cwd,env,body}, appends the body's output to
 * share/jobs/<id>/output and reports its exit status.
 */
export const AGENT_SCRIPT = `#!/bin/bash
L=/run/remus-lab H=/run/remus-lab/host S=/run/remus-lab/share
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
exec </dev/null >/dev/console 2>&1
die() { echo "remus-lab-agent: $*"; echo o > /proc/sysrq-trigger; sleep 30; }
say() { printf '%s\\n' "$*" >&3; }
exec 3<>/dev/ttyS1 || die "opening the control line"

# Job control: every background job gets its own process group, so what a
# body leaves running can be killed with it (no setsid exec needed).
set -m
run_job() {
  local id="$1" J="$S/jobs/$1" p pid rc cwd
  if [ -s "$J/binds" ]; then
    while IFS= read -r p; do
      mkdir -p "$p" && mount --bind "$H$p" "$p" || echo "remus-lab: cannot make $p visible in the guest" >>"$J/output"
    done <"$J/binds"
  fi
  IFS= read -r cwd <"$J/cwd"
  ( cd "$cwd" && set -a && . "$J/env" && set +a && exec bash "$J/body" ) </dev/null >>"$J/output" 2>&1 3>&- &
  pid=$!
  wait "$pid"
  rc=$?
  kill -KILL -- "-$pid" 2>/dev/null
  say "DONE $id $rc"
}

echo "remus-lab-agent: ready"
say READY
while read -r cmd id <&3; do
  case "$cmd" in
    RUN) run_job "$id" ;;
    QUIT) sync; printf '\\x${QUIT_PORT_VALUE.toString(16)}' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null; sleep 30 ;;
  esac
done
die "control line closed"
`;
