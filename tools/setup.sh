#!/usr/bin/env bash
# One command from a fresh Debian 12 (Node.js >= 20.19 and npm present, run as root)
# to the demo or the test suite: installs only what is missing, then runs it.
#
#   tools/setup.sh demo [ARGS]   system packages for the demo, pnpm, dependencies, build; then `remus demo ARGS`
#   tools/setup.sh test [ARGS]   everything the tests need (QEMU, DRBD tools, etcd...), the kernel lab; then `pnpm test ARGS`
#   tools/setup.sh deps          the test set-up only, nothing run
#
# What it installs when missing:
#   - Debian packages (apt-get), demo: iproute2 iptables ca-certificates;
#     test adds nftables criu iputils-arping python3 qemu-system-x86 qemu-utils busybox-static drbd-utils xz-utils gcc libc6-dev etcd-server etcd-client
#     make g++ (nic-netbuf's native netlink addon, built by node-gyp at install) pkg-config libnl-route-3-dev (the libnl peer of nic-netbuf's bench)
#   - pnpm at the version pinned in package.json "packageManager" (npm install -g)
#   - the workspace's dependencies (pnpm install --frozen-lockfile) and its build (turbo)
#   - test only: the kernel lab's Debian 6.1 kernel and initramfs (pnpm lab:setup; downloaded once, cached)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1

mode="${1:-}"
case "$mode" in
  demo | test | deps) shift ;;
  *)
    echo "usage: tools/setup.sh demo|test|deps [ARGS...]" >&2
    exit 2
    ;;
esac

say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "run as root: the demo and the tests make network namespaces, iptables rules and cgroups (e.g. sudo tools/setup.sh $mode)"
  exit 2
fi

# Node.js: not installed here (use your distribution's or nodejs.org's Node 20).
if ! command -v node >/dev/null || ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  say "Node.js >= 20.19 is required (found: $(node --version 2>/dev/null || echo none))"
  exit 2
fi

# System packages, only those missing.
want=(iproute2 iptables ca-certificates)
if [ "$mode" != demo ]; then
  # QEMU for the kernel lab and COLO, DRBD tools, etcd for the arbiter, criu (+ python3, arping) for domain-criu.
  want+=(nftables criu iputils-arping python3 qemu-system-x86 qemu-utils busybox-static drbd-utils xz-utils gcc libc6-dev etcd-server etcd-client)
  # nic-netbuf's native netlink addon (node-gyp at install: python3, make, g++) and its bench's libnl-from-C peer.
  want+=(make g++ pkg-config libnl-route-3-dev)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The pinned package manager.
pnpm_want=$(node -p "require('./package.json').packageManager.split('@')[1]")
if [ "$(pnpm --version 2>/dev/null || true)" != "$pnpm_want" ]; then
  say "npm install -g pnpm@$pnpm_want"
  npm install -g --no-audit --no-fund "pnpm@$pnpm_want" >/dev/null
fi

say "pnpm install"
pnpm install --frozen-lockfile --prefer-offline
say "build"
pnpm exec turbo run build --output-logs=errors-only

if [ "$mode" = demo ]; then
  exec node packages/cli/dist/bin.js demo "$@"
fi

say "kernel lab"
pnpm lab:setup
if [ "$mode" = test ]; then
  exec pnpm test "$@"
fi
