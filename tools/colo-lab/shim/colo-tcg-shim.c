/*
 * colo-tcg-shim: a TEST-ONLY LD_PRELOAD workaround for two bugs of QEMU 7.2's
 * COLO under software emulation (TCG). Never load it in production, never
 * with KVM (it refuses). See shared/design/colo.md, "Two QEMU 7.2 bugs".
 *
 * (a) Primary deadlock: the COLO checkpoint saves RAM without the big QEMU
 *     lock (BQL); the TCG dirty-log sync then calls run_on_cpu(), which does
 *     qemu_cond_wait(&qemu_work_cond, &qemu_global_mutex) on a mutex the
 *     thread does not hold (undefined behaviour: glibc "unlocks" the BQL owned
 *     by another thread, relocks it on wake-up, and the migration thread later
 *     blocks on itself). Fix: pthread_cond_wait() on a mutex the caller does
 *     not own takes the mutex first, waits briefly, and releases it again; the
 *     caller's loop re-checks its condition. Holding it, it also kicks the
 *     vCPU (qemu_cpu_kick): run_on_cpu queued its work and kicked without the
 *     BQL, so the kick can fall between the vCPU's idle check and its sleep
 *     on halt_cond (both under the BQL) and be lost. The stopped vCPU then
 *     sleeps forever, the migration thread waits forever for the work, the VM
 *     stays paused in COLO's run state, and a failover cannot resume it (seen
 *     once in about 40 lab starts before this kick: 9296 unowned waits).
 * (b) Stale pages: under TCG, clearing the migration dirty bits does not re-arm
 *     write tracking for TLB entries already cached, so writes after a
 *     checkpoint go unrecorded (primary: pages never sent; secondary: pages
 *     never restored), and the secondary's copy into guest RAM leaves stale
 *     translated code. Fix: on the vCPU thread, whenever the VM resumes after a
 *     stop (every checkpoint stops it), flush the TLB (both sides) and queue a
 *     translation-block flush (secondary), before the guest runs again.
 *
 * It relies on: -smp 1 (one vCPU thread), -name ...,debug-threads=on (threads
 * are found by name: "CPU 0/TCG", "live_migration"), QEMU's exported symbols
 * (tlb_flush, tb_flush, cpus, runstate_is_running) and glibc's mutex layout
 * (__data.__owner holds the owner's TID). When any of these is missing it
 * refuses loudly: it prints "colo-tcg-shim: REFUSING: ..." and exits 97.
 *
 * It announces itself on stderr, and keeps counters in the file named by
 * COLO_SHIM_STATS (one line, rewritten in place) so that tests can fail when
 * the workaround stops applying (e.g. a QEMU where these paths changed).
 * COLO_SHIM_ROLE is "primary" or "secondary".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define REFUSE_EXIT 97
#define UNOWNED_WAIT_NS 2000000L /* 2 ms, then the caller re-checks */

typedef int (*cond_wait_fn)(pthread_cond_t *, pthread_mutex_t *);

enum thread_kind { TK_UNKNOWN = 0, TK_VCPU, TK_MIGRATION, TK_OTHER };

static cond_wait_fn real_cond_wait;
static void (*q_tlb_flush)(void *cpu);
static void (*q_tb_flush)(void *cpu);
static void (*q_cpu_kick)(void *cpu);
static bool (*q_runstate_is_running)(void);
/* QEMU's `CPUTailQ cpus`: a QTAILQ head whose first member is the first CPU. */
static void *const *q_cpus;

static bool is_secondary;
static int stats_fd = -1;
static atomic_ulong n_unowned_waits, n_tlb_flushes, n_tb_flushes, n_resumes, n_kicks;

static __thread int t_kind;
static __thread pid_t t_tid;
static __thread bool t_saw_stop;

static void refuse(const char *why)
{
    fprintf(stderr, "colo-tcg-shim: REFUSING: %s (the workaround does not apply to this QEMU; exit %d)\n", why,
            REFUSE_EXIT);
    fflush(stderr);
    _exit(REFUSE_EXIT);
}

static void write_stats(void)
{
    char line[256];
    int n;

    if (stats_fd < 0)
        return;
    n = snprintf(line, sizeof line,
                 "role=%s unowned_waits=%lu resumes=%lu tlb_flushes=%lu tb_flushes=%lu kicks=%lu",
                 is_secondary ? "secondary" : "primary", atomic_load(&n_unowned_waits), atomic_load(&n_resumes),
                 atomic_load(&n_tlb_flushes), atomic_load(&n_tb_flushes), atomic_load(&n_kicks));
    /* Fixed width so the line is rewritten in place without truncation. */
    memset(line + n, ' ', sizeof line - 1 - n);
    line[sizeof line - 1] = '\n';
    (void)!pwrite(stats_fd, line, sizeof line, 0);
}

/* The whole command line (NUL-separated) of this process, or NULL. */
static char *read_cmdline(size_t *len)
{
    static char buf[65536];
    int fd = open("/proc/self/cmdline", O_RDONLY);
    ssize_t n;

    if (fd < 0)
        return NULL;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

static void check_cmdline(void)
{
    size_t len, i;
    char *cl = read_cmdline(&len);
    bool debug_threads = false, smp1 = false;
    const char *prev = "";

    if (cl == NULL)
        refuse("cannot read /proc/self/cmdline");
    for (i = 0; i < len; i += strlen(cl + i) + 1) {
        const char *arg = cl + i;
        if (strstr(arg, "debug-threads=on") != NULL)
            debug_threads = true;
        if (strcmp(prev, "-smp") == 0 && (strcmp(arg, "1") == 0 || strncmp(arg, "1,", 2) == 0 ||
                                          strcmp(arg, "cpus=1") == 0 || strncmp(arg, "cpus=1,", 7) == 0))
            smp1 = true;
        if (strstr(arg, "kvm") != NULL && (strcmp(prev, "-accel") == 0 || strcmp(prev, "-machine") == 0 ||
                                           strcmp(arg, "-enable-kvm") == 0))
            refuse("KVM requested: the TCG workaround must not be loaded with KVM");
        if (strcmp(arg, "-enable-kvm") == 0)
            refuse("KVM requested: the TCG workaround must not be loaded with KVM");
        prev = arg;
    }
    if (!debug_threads)
        refuse("needs -name ...,debug-threads=on to find the vCPU and migration threads");
    if (!smp1)
        refuse("needs -smp 1 (one vCPU thread)");
}

__attribute__((constructor)) static void shim_init(void)
{
    const char *role = getenv("COLO_SHIM_ROLE");
    const char *stats = getenv("COLO_SHIM_STATS");

    /* Only QEMU itself: helper programs QEMU might exec do not inherit the shim's job. */
    if (dlsym(RTLD_DEFAULT, "qemu_init") == NULL && dlsym(RTLD_DEFAULT, "tlb_flush") == NULL)
        return;
    if (role == NULL || (strcmp(role, "primary") != 0 && strcmp(role, "secondary") != 0))
        refuse("COLO_SHIM_ROLE must be primary or secondary");
    is_secondary = strcmp(role, "secondary") == 0;
    check_cmdline();
    real_cond_wait = (cond_wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2");
    if (real_cond_wait == NULL)
        real_cond_wait = (cond_wait_fn)dlsym(RTLD_NEXT, "pthread_cond_wait");
    q_tlb_flush = (void (*)(void *))dlsym(RTLD_DEFAULT, "tlb_flush");
    q_tb_flush = (void (*)(void *))dlsym(RTLD_DEFAULT, "tb_flush");
    q_cpu_kick = (void (*)(void *))dlsym(RTLD_DEFAULT, "qemu_cpu_kick");
    q_runstate_is_running = (bool (*)(void))dlsym(RTLD_DEFAULT, "runstate_is_running");
    q_cpus = (void *const *)dlsym(RTLD_DEFAULT, "cpus");
    if (real_cond_wait == NULL)
        refuse("libc has no pthread_cond_wait");
    if (q_tlb_flush == NULL || q_tb_flush == NULL || q_cpu_kick == NULL || q_runstate_is_running == NULL || q_cpus == NULL)
        refuse("QEMU does not export tlb_flush, tb_flush, qemu_cpu_kick, runstate_is_running and cpus");
    if (stats != NULL && stats[0] != 0) {
        stats_fd = open(stats, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (stats_fd < 0)
            refuse("cannot open COLO_SHIM_STATS");
    }
    write_stats();
    fprintf(stderr,
            "colo-tcg-shim: TEST-ONLY workaround for QEMU 7.2 COLO under TCG loaded (pid %d, role %s): "
            "unowned condition waits take the mutex; TLB%s flush on the vCPU at each resume\n",
            (int)getpid(), role, is_secondary ? " and translation-block" : "");
    fflush(stderr);
}

static int thread_kind(void)
{
    char name[17] = { 0 };

    if (t_kind != TK_UNKNOWN)
        return t_kind;
    if (prctl(PR_GET_NAME, name, 0, 0, 0) != 0)
        return TK_OTHER;
    if (strncmp(name, "CPU ", 4) == 0 && strstr(name, "/TCG") != NULL) {
        if (strcmp(name, "CPU 0/TCG") != 0)
            refuse("a second vCPU thread exists: needs -smp 1");
        t_kind = TK_VCPU;
    } else if (strcmp(name, "live_migration") == 0) {
        t_kind = TK_MIGRATION;
    } else {
        t_kind = TK_OTHER;
    }
    return t_kind;
}

static pid_t my_tid(void)
{
    if (t_tid == 0)
        t_tid = (pid_t)syscall(SYS_gettid);
    return t_tid;
}

/* On the vCPU thread, holding the BQL, the VM just resumed after a stop. */
static void on_resume(void)
{
    void *cpu = q_cpus[0];

    atomic_fetch_add(&n_resumes, 1);
    if (cpu == NULL)
        return;
    q_tlb_flush(cpu); /* synchronous on the vCPU's own thread */
    atomic_fetch_add(&n_tlb_flushes, 1);
    if (is_secondary) {
        q_tb_flush(cpu); /* queued as safe work, run before the vCPU executes again */
        atomic_fetch_add(&n_tb_flushes, 1);
    }
    write_stats();
}

int pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    int kind, r;

    if (real_cond_wait == NULL)
        real_cond_wait = (cond_wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2");
    if (q_cpus == NULL)
        return real_cond_wait(cond, mutex);
    if (mutex->__data.__owner != my_tid()) {
        /* Bug (a): the caller waits on a mutex it does not hold. */
        struct timespec until;

        atomic_fetch_add(&n_unowned_waits, 1);
        pthread_mutex_lock(mutex);
        if (q_cpus[0] != NULL) {
            /* Under the mutex the vCPU is either before its idle check (it will see the work) or asleep on halt_cond. */
            q_cpu_kick(q_cpus[0]);
            atomic_fetch_add(&n_kicks, 1);
        }
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += UNOWNED_WAIT_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_clockwait(cond, mutex, CLOCK_MONOTONIC, &until);
        pthread_mutex_unlock(mutex);
        write_stats();
        return 0;
    }
    kind = thread_kind();
    if (kind != TK_VCPU)
        return real_cond_wait(cond, mutex);
    /* Bug (b): the vCPU sleeps here while the VM is stopped for a checkpoint. */
    if (!q_runstate_is_running())
        t_saw_stop = true;
    r = real_cond_wait(cond, mutex);
    if (t_saw_stop && q_runstate_is_running()) {
        t_saw_stop = false;
        on_resume();
    }
    return r;
}
