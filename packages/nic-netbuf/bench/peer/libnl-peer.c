/*
 * The libnl-from-C peer of nic-netbuf's benchmark (issue 18): the qdisc
 * change Xen's netbuf makes per checkpoint (rtnl_qdisc_add with
 * NLM_F_REQUEST on the plug at the IFB's root), timed per op with
 * CLOCK_MONOTONIC, on one already-open NETLINK_ROUTE socket, from C.
 *
 *   libnl-peer IFNAME ITERATIONS plug     -> alternating plug buffer / release_one
 *   libnl-peer IFNAME ITERATIONS bfifo N  -> a change of the stand-in bfifo's limit to N
 *                                            (this host has no sch_plug)
 *
 * Runs in the namespace it is started in (`ip netns exec NS`). Prints one
 * JSON line: {"n":..,"medianUs":..,"p99Us":..}. Exit 1 with a message on any
 * error. Built by bench/peer.mjs with gcc against libnl-route-3.
 */
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/plug.h>
#include <netlink/route/qdisc/fifo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s IFNAME ITERATIONS plug|bfifo [LIMIT]\n", argv[0]);
    return 1;
  }
  const char *ifname = argv[1];
  long iterations = strtol(argv[2], NULL, 10);
  int plug = strcmp(argv[3], "plug") == 0;
  long limit = argc > 4 ? strtol(argv[4], NULL, 10) : 10000000;
  if (iterations <= 0 || iterations > 10000000) {
    fprintf(stderr, "ITERATIONS must be 1..10000000\n");
    return 1;
  }
  struct nl_sock *sock = nl_socket_alloc();
  if (!sock || nl_connect(sock, NETLINK_ROUTE) < 0) {
    fprintf(stderr, "cannot open a NETLINK_ROUTE socket\n");
    return 1;
  }
  struct nl_cache *links;
  if (rtnl_link_alloc_cache(sock, AF_UNSPEC, &links) < 0) {
    fprintf(stderr, "cannot read the links\n");
    return 1;
  }
  int ifindex = rtnl_link_name2i(links, ifname);
  if (ifindex == 0) {
    fprintf(stderr, "no interface %s\n", ifname);
    return 1;
  }
  struct rtnl_qdisc *q = rtnl_qdisc_alloc();
  rtnl_tc_set_ifindex(TC_CAST(q), ifindex);
  rtnl_tc_set_parent(TC_CAST(q), TC_H_ROOT);
  rtnl_tc_set_handle(TC_CAST(q), TC_HANDLE(1, 0));
  if (rtnl_tc_set_kind(TC_CAST(q), plug ? "plug" : "bfifo") < 0) {
    fprintf(stderr, "libnl does not know the qdisc kind\n");
    return 1;
  }
  double *times = malloc(sizeof(double) * iterations);
  long warmup = iterations < 50 ? iterations : 50;
  for (long k = 0; k < warmup + iterations; k++) {
    if (plug) {
      if (k % 2 == 0) rtnl_qdisc_plug_buffer(q);
      else rtnl_qdisc_plug_release_one(q);
    } else {
      rtnl_qdisc_fifo_set_limit(q, (int)limit);
    }
    double t0 = now_us();
    int err = rtnl_qdisc_add(sock, q, NLM_F_REQUEST);
    double t1 = now_us();
    if (err < 0) {
      fprintf(stderr, "qdisc change on %s failed: %s\n", ifname, nl_geterror(err));
      return 1;
    }
    if (k >= warmup) times[k - warmup] = t1 - t0;
  }
  if (plug) {
    rtnl_qdisc_plug_release_indefinite(q);
    rtnl_qdisc_add(sock, q, NLM_F_REQUEST);
  }
  qsort(times, iterations, sizeof(double), cmp);
  long p99 = (long)(iterations * 0.99);
  if (p99 >= iterations) p99 = iterations - 1;
  printf("{\"n\":%ld,\"medianUs\":%.3f,\"p99Us\":%.3f}\n", iterations, times[iterations / 2], times[p99]);
  rtnl_qdisc_put(q);
  nl_cache_free(links);
  nl_socket_free(sock);
  return 0;
}
