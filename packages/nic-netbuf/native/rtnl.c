/*
 * remus_rtnl: a synchronous NETLINK_ROUTE request channel for nic-netbuf's
 * checkpoint ops, the way Xen's netbuf drives sch_plug through libnl ("netlink
 * calls are very fast"): one socket per network namespace, opened once at
 * setup; per op one sendmsg and one bounded poll+recv for the kernel's ACK,
 * on the calling thread, with no event-loop turn in between.
 *
 * A socket belongs to the namespace it was created in, so `open(path)` enters
 * the namespace at `path` (/run/netns/NAME) on this thread, creates the
 * socket, and returns to the thread's own namespace before returning: any
 * namespace gets an in-process socket, which Node alone cannot do.
 *
 * Exports (all synchronous; errors are thrown as Error with `code` = errno name):
 *   open(nsPath: string | null): number          -> socket fd (bound, SOCK_CLOEXEC)
 *   ifindex(nsPath: string | null, name): number -> interface index in that namespace (0: none)
 *   request(fd, message: Buffer, timeoutMs): number
 *        sends the message (its nlmsg_seq set by the caller, NLM_F_ACK set) and waits
 *        for the NLMSG_ERROR with that seq: returns 0 (applied), a positive errno
 *        (refused by the kernel), or -1 (no answer within timeoutMs)
 *   close(fd): undefined
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHECK(call)                                                             \
  do {                                                                          \
    if ((call) != napi_ok) {                                                    \
      napi_throw_error(env, "EINVAL", "remus_rtnl: bad arguments");           \
      return NULL;                                                              \
    }                                                                           \
  } while (0)

static napi_value throw_errno(napi_env env, int err, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  const char *name = err == ENOENT ? "ENOENT" : err == EPERM ? "EPERM" : err == EINVAL ? "EINVAL" : err == ENODEV ? "ENODEV" : "EIO";
  napi_throw_error(env, name, msg);
  return NULL;
}

/* Runs fn(arg) inside the namespace at path (or here when path is NULL); returns fn's result or -errno. */
static int in_netns(const char *path, int (*fn)(void *), void *arg) {
  if (path == NULL) return fn(arg);
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) return -errno;
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(self);
    return -e;
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int e = errno;
    close(target);
    close(self);
    return -e;
  }
  int r = fn(arg);
  if (setns(self, CLONE_NEWNET) < 0) {
    /* This thread would go on in the wrong namespace: nothing safe is left to do. */
    fprintf(stderr, "remus_rtnl: cannot return to the own network namespace: %s\n", strerror(errno));
    abort();
  }
  close(target);
  close(self);
  return r;
}

static int make_socket(void *unused) {
  (void)unused;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return -errno;
  struct sockaddr_nl addr = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

struct lookup {
  const char *name;
};

static int lookup_index(void *arg) {
  unsigned i = if_nametoindex(((struct lookup *)arg)->name);
  return i == 0 ? (errno == ENODEV || errno == ENXIO ? 0 : -errno) : (int)i;
}

/* Reads argument i as a string (NULL for null/undefined) into buf. */
static int get_path(napi_env env, napi_value v, char *buf, size_t size, const char **out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_null || t == napi_undefined) {
    *out = NULL;
    return 0;
  }
  size_t len;
  if (t != napi_string || napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok || len == 0 || len >= size - 1) return -1;
  *out = buf;
  return 0;
}

static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char buf[4096];
  const char *path;
  if (argc < 1 || get_path(env, argv[0], buf, sizeof buf, &path) < 0) {
    napi_throw_error(env, "EINVAL", "remus_rtnl.open(nsPath): nsPath must be a path or null");
    return NULL;
  }
  int fd = in_netns(path, make_socket, NULL);
  if (fd < 0) return throw_errno(env, -fd, path ? "opening a NETLINK_ROUTE socket in the namespace" : "opening a NETLINK_ROUTE socket");
  napi_value r;
  CHECK(napi_create_int32(env, fd, &r));
  return r;
}

static napi_value Ifindex(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char pbuf[4096], nbuf[IF_NAMESIZE + 1];
  const char *path;
  size_t len;
  if (argc < 2 || get_path(env, argv[0], pbuf, sizeof pbuf, &path) < 0 ||
      napi_get_value_string_utf8(env, argv[1], nbuf, sizeof nbuf, &len) != napi_ok || len == 0 || len >= IF_NAMESIZE) {
    napi_throw_error(env, "EINVAL", "remus_rtnl.ifindex(nsPath, name): bad arguments");
    return NULL;
  }
  struct lookup l = {nbuf};
  int i = in_netns(path, lookup_index, &l);
  if (i < 0) return throw_errno(env, -i, "looking up an interface");
  napi_value r;
  CHECK(napi_create_int32(env, i, &r));
  return r;
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static napi_value Request(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, timeout;
  void *data;
  size_t len;
  bool is_buffer = false;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || napi_get_value_int32(env, argv[2], &timeout) != napi_ok ||
      len < sizeof(struct nlmsghdr) || timeout < 0 || timeout > 60000) {
    napi_throw_error(env, "EINVAL", "remus_rtnl.request(fd, message, timeoutMs): bad arguments");
    return NULL;
  }
  const struct nlmsghdr *req = data;
  if (req->nlmsg_len != len || !(req->nlmsg_flags & NLM_F_ACK)) {
    napi_throw_error(env, "EINVAL", "remus_rtnl.request: the message's nlmsg_len must be its length and NLM_F_ACK must be set");
    return NULL;
  }
  ssize_t n;
  do n = send(fd, data, len, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, errno, "sending a netlink request");
  long deadline = now_ms() + timeout;
  int result = -1;
  char rbuf[8192] __attribute__((aligned(4)));
  for (;;) {
    long left = deadline - now_ms();
    if (left < 0) left = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, (int)left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return throw_errno(env, errno, "waiting for the kernel's answer");
    if (pr == 0) break; /* timed out: result -1 */
    do n = recv(fd, rbuf, sizeof rbuf, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return throw_errno(env, errno, "reading the kernel's answer");
    }
    int done = 0;
    for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
      /* Answers to earlier requests that timed out are skipped by their seq. */
      if (h->nlmsg_seq != req->nlmsg_seq || h->nlmsg_type != NLMSG_ERROR) continue;
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) continue;
      const struct nlmsgerr *e = NLMSG_DATA(h);
      result = -e->error;
      done = 1;
      break;
    }
    if (done) break;
  }
  napi_value r;
  CHECK(napi_create_int32(env, result, &r));
  return r;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_error(env, "EINVAL", "remus_rtnl.close(fd): bad fd");
    return NULL;
  }
  close(fd);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, Open, NULL, NULL, NULL, napi_default, NULL},
      {"ifindex", NULL, Ifindex, NULL, NULL, NULL, napi_default, NULL},
      {"request", NULL, Request, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
