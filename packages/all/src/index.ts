/**
 * @remus/all: a meta-package. Installing it installs the remus command and
 * every Remus package next to each other, so `remus` finds all of them
 * (plugins and the packages its commands load resolve next to remus). It
 * exports the list of what it brings.
 */

/** The packages @remus/all installs (its dependencies), by name. */
export const PACKAGES: readonly string[] = [
  '@remus/agent',
  '@remus/arbiter-etcd',
  '@remus/cli',
  '@remus/colo',
  '@remus/core',
  '@remus/disk-drbd',
  '@remus/domain-criu',
  '@remus/domain-process',
  '@remus/nic-netbuf',
  '@remus/nic-nfqueue',
  '@remus/qmp',
];
