/*
 * droidoom-helper: times writes to /proc/<pid>/oom_score_adj (the way lmkd makes them)
 * while a controlled population of extra processes is alive.
 *
 * Mechanism only. The host decides populations, targets, adj values, order and pacing
 * and hands them over as a plan file; this program spawns processes, applies the plan,
 * times each write and tears everything down. The contract is device_scripts/PROTOCOL.md
 * (protocol version 1). Built static (musl via zig cc) so one file runs on any Android
 * device of the right ABI; the build embeds the SHA-256 of this file so the host can
 * tell which source a binary came from.
 *
 * A kill plan (`victim` and `k` lines) times lmkd's kill path instead: pidfd_open,
 * pidfd_send_signal(SIGKILL) and process_mrelease on a fresh victim per kill.
 *
 * Safety first: the helper only signals processes it forked itself and still holds
 * unreaped (kill_own() is the only kill() call, kill_victim() the only
 * pidfd_send_signal() call, both behind the same check), every process it creates dies
 * with its parent (PR_SET_PDEATHSIG), and it only writes oom_score_adj of its own children.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef DROIDOOM_SOURCE_SHA256
#define DROIDOOM_SOURCE_SHA256 "unknown" /* dev build without build_helpers.py */
#endif

#if defined(__aarch64__)
#define ARCH "aarch64"
#elif defined(__arm__)
#define ARCH "arm"
#elif defined(__x86_64__)
#define ARCH "x86_64"
#elif defined(__i386__)
#define ARCH "x86"
#else
#define ARCH "unknown"
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the records file is little-endian and written as raw structs"
#endif

#define PROTO 1
enum { EXIT_OK = 0, EXIT_USAGE = 2, EXIT_REFUSED = 3, EXIT_RUNTIME = 4, EXIT_INTR = 130 };
enum { MAX_TARGETS = 256, MAX_POINTS = 65536, MAX_WRITES = 50000000, MAX_POP = 32768,
       MAX_TPP = 64, MAX_TTHREADS = 256, REC_BUF = 4096 };
#define TICK_NS 100000000LL          /* progress / stdin-watch period */
#define STALL_NS 30000000000LL       /* no sign of life from spawned children for this long */
#define THREAD_STACK 16384           /* sleeping threads need almost no stack */
#define VM_CHILD_STACK 65536
/* Kernel memory a sleeping population costs, measured on Linux 6.18 x86_64 (1000
 * processes x 8 threads took 279 MB of MemAvailable: kernel stack 16 KiB + slab ~9 KiB
 * per task, page tables ~48 KiB per process). arm64 uses 16 KiB kernel stacks too. */
#define MEM_TASK_KB 30
#define MEM_PROC_KB 64
/* The kill path's syscalls, where old libc headers lack them. Syscalls added since 5.0
 * share one number on every architecture (alpha aside). */
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_mrelease
#define SYS_process_mrelease 448
#endif
#define MAX_VICTIM_RSS_KB (1 << 20) /* 1 GiB: a typo must not eat the phone's memory */

enum { KIND_SINGLE, KIND_THREADED, KIND_MULTIPROCESS };
static const char *const kind_names[] = {"single", "threaded", "multiprocess"};
enum { MODE_REOPEN, MODE_PERSISTENT };
static const char *const mode_names[] = {"reopen", "persistent"};

/* ------------------------------------------------------------------ stop flags --- */

enum { STOP_NONE, STOP_SIGNAL, STOP_STDOUT, STOP_STDIN };
static const char *const stop_names[] = {"none", "signal", "stdout", "stdin"};
static volatile sig_atomic_t g_signal; /* set by SIGINT/SIGTERM/SIGHUP, polled by loops */
static int g_stop;                     /* why we stop; STOP_NONE while running */
static int g_watch_stdin;              /* stdin is a pipe/socket held open by the host */

static void on_signal(int sig) { (void)sig; g_signal = 1; }

static int stopping(void)
{
    if (g_signal && g_stop == STOP_NONE)
        g_stop = STOP_SIGNAL;
    return g_stop;
}

/* ------------------------------------------------------------------ output ------- */

/* One line per call, written with write(2) so nothing sits in a buffer: the host uses
 * the lines as a liveness check, and a failed write means the reader is gone. */
static void out(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || g_stop == STOP_STDOUT)
        return;
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    for (int off = 0; off < n;) {
        ssize_t w = write(1, buf + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) { /* EPIPE (SIGPIPE is ignored) or any other failure: reader gone */
            g_stop = STOP_STDOUT;
            return;
        }
        off += (int)w;
    }
}

/* `error code=... msg="..."`; the message is sanitised so it stays one quoted field. */
static void out_error(const char *code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\n' || *p == '\r' || *p == '\\')
            *p = *p == '"' ? '\'' : ' ';
    out("error code=%s msg=\"%s\"", code, msg);
}

/* ------------------------------------------------------------------ small utils -- */

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000LL), (long)(t % 1000000000LL)};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL); /* EINTR: caller re-checks */
}

/* Reads a small text file into buf (NUL-terminated); returns length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len < size - 1) {
        ssize_t r = read(fd, buf + len, size - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

static long long read_ll(const char *path, long long dflt)
{
    char buf[64];
    if (read_small(path, buf, sizeof buf) <= 0)
        return dflt;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    return (errno || end == buf) ? dflt : v;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes the decimal string s to /proc/<pid>/oom_score_adj; 0 or errno. */
static int write_adj_path(const char *path, const char *s, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t r = write(fd, s, len);
    int err = r == (ssize_t)len ? 0 : (r < 0 ? errno : EIO);
    if (close(fd) != 0 && !err)
        err = errno;
    return err;
}

/* ------------------------------------------------------------------ own children - */

/* Every process the helper forks is recorded here the moment fork() returns. Slots:
 * targets 0..255, the probe child 256, the kill plan's victim (one at a time) 257,
 * population processes 258... Population slot i is the i-th oldest, so shrinking kills
 * from the top. */
enum { K_FREE, K_ALIVE, K_KILLED };
struct kid { pid_t pid; int state; };
#define SLOT_TARGET(i) (i)
#define SLOT_PROBE MAX_TARGETS
#define SLOT_VICTIM (MAX_TARGETS + 1)
#define SLOT_POP(i) (MAX_TARGETS + 2 + (i))
#define NKIDS (MAX_TARGETS + 2 + MAX_POP)
static struct kid g_kids[NKIDS];

/* The only kill() in this program. It refuses anything that is not a live, unreaped
 * child in our own table, so it can never hit pid 0/-1 (process groups, everyone) or a
 * recycled pid: an unreaped child's pid cannot be reused. */
static void kill_own(int slot)
{
    if (slot < 0 || slot >= NKIDS)
        return;
    struct kid *k = &g_kids[slot];
    if (k->state != K_ALIVE || k->pid <= 0)
        return;
    kill(k->pid, SIGKILL);
    k->state = K_KILLED;
}

/* lmkd's kill: pidfd_send_signal(SIGKILL) on `pidfd`, which the caller opened for the
 * victim slot's pid. The same check as kill_own (a live, unreaped child of ours), so the
 * pidfd cannot refer to anyone else. 0 or errno (the slot is then still alive). */
static int kill_victim(int pidfd)
{
    struct kid *k = &g_kids[SLOT_VICTIM];
    if (k->state != K_ALIVE || k->pid <= 0 || pidfd < 0)
        return ESRCH;
    if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) != 0)
        return errno ? errno : EIO;
    k->state = K_KILLED;
    return 0;
}

/* Kill (if not yet) and then reap: kill always happens before waitpid. */
static void reap_own(int slot)
{
    struct kid *k = &g_kids[slot];
    if (k->state == K_FREE || k->pid <= 0)
        return;
    kill_own(slot);
    while (waitpid(k->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    k->pid = 0;
    k->state = K_FREE;
}

static void record_kid(int slot, pid_t pid)
{
    g_kids[slot].pid = pid;
    g_kids[slot].state = K_ALIVE;
}

/* CLONE_VM children are not forked by the helper: when their parent (a target, or the
 * clone probe) dies they die by PDEATHSIG and, because the helper is a child subreaper,
 * become its zombies. Reap them (wait only, never signal), so nothing is left for init.
 * Only called when every child in the table has been reaped already, so waitpid(-1)
 * cannot take a pid the table still refers to. */
static void reap_orphans(void)
{
    for (int i = 0; i < 5000; i++) { /* give up after ~5 s (a task stuck in D state) */
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r < 0 && errno != EINTR)
            return; /* ECHILD: none left */
        if (r == 0) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
}

/* --- code that runs inside the children --- */

static int g_ready_r = -1, g_ready_w = -1;   /* population: one byte per ready child */
static int g_status_r = -1, g_status_w = -1; /* targets: {idx, errno} per target */
static int g_rec_fd = -1;
static cpu_set_t g_all_cpus; /* the helper's CPU mask before the writer was pinned */
static int g_pinned;

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause(); /* every signal is blocked: sleeps until SIGKILL */
    return NULL;
}

/* First thing every forked child does: die with the parent (PDEATHSIG), and if the
 * parent already died before prctl took effect, exit now. Then block every signal so a
 * terminal's Ctrl-C to the group does not run the inherited handler; only SIGKILL
 * (ours or PDEATHSIG) ends the child. Close the fds the host is watching so they hit
 * EOF as soon as the helper itself is gone. */
static void child_setup(pid_t parent, int keep_fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    if (g_pinned) /* SCHED_RESET_ON_FORK undid SCHED_FIFO; undo the writer's pin too */
        sched_setaffinity(0, sizeof g_all_cpus, &g_all_cpus);
    int fds[] = {0, 1, 2, g_rec_fd, g_ready_r, g_ready_w, g_status_r, g_status_w};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0 && fds[i] != keep_fd)
            close(fds[i]);
}

/* n extra threads (the main thread counts as one), small stacks; 0 or errno. */
static int spawn_threads(int n)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    size_t stack = THREAD_STACK;
    if (stack < (size_t)PTHREAD_STACK_MIN)
        stack = (size_t)PTHREAD_STACK_MIN;
    pthread_attr_setstacksize(&a, stack);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        int e = pthread_create(&t, &a, sleeper, NULL);
        if (e)
            return e;
    }
    return 0;
}

/* Child of a multiprocess target, sharing its mm. Runs on a bare stack with the
 * target's thread pointer, so it only makes plain syscalls. */
static int vm_child_main(void *arg)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)(intptr_t)arg)
        _exit(0);
    for (;;)
        pause();
    return 0;
}

/* clone(CLONE_VM|SIGCHLD) without CLONE_THREAD: a second process on this mm, which
 * sets MMF_MULTIPROCESS. Returns the child's pid or -errno (qemu-user: -EINVAL). */
static pid_t spawn_vm_child(void)
{
    void *stack = mmap(NULL, VM_CHILD_STACK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return -errno;
    pid_t pid = clone(vm_child_main, (char *)stack + VM_CHILD_STACK, CLONE_VM | SIGCHLD,
                      (void *)(intptr_t)getpid());
    return pid < 0 ? -errno : pid;
}

static _Noreturn void population_child(pid_t parent, int threads)
{
    child_setup(parent, g_ready_w);
    /* The population is real memory pressure: make it lmkd's and the OOM killer's first
     * choice (raising one's own adj never needs a capability) instead of the user's apps,
     * which would otherwise rank below our inherited adj (-950 under adb shell). */
    write_adj_path("/proc/self/oom_score_adj", "1000", 4);
    int e = spawn_threads(threads - 1);
    unsigned char b = (unsigned char)(e > 255 ? 255 : e); /* 0 = ready */
    while (write(g_ready_w, &b, 1) < 0 && errno == EINTR)
        ;
    if (e)
        _exit(1);
    sleeper(NULL);
    _exit(0);
}

static _Noreturn void target_child(pid_t parent, int idx, int kind, int threads)
{
    child_setup(parent, g_status_w);
    int msg[2] = {idx, spawn_threads(threads - 1)};
    if (!msg[1] && kind == KIND_MULTIPROCESS) {
        pid_t r = spawn_vm_child();
        if (r < 0)
            msg[1] = (int)-r;
    }
    while (write(g_status_w, msg, sizeof msg) < 0 && errno == EINTR)
        ;
    sleeper(NULL);
    _exit(0);
}

/* A kill plan's victim: pinned to the killer's CPU at SCHED_IDLE before it creates its
 * threads (which inherit both), so once the killer (SCHED_FIFO, or at least not idle, on
 * that CPU) has sent SIGKILL, no victim thread can run and exit before process_mrelease:
 * the mm is still shared when the call runs, and the race cannot decide the answer. It
 * touches rss_kb of anonymous memory (what process_mrelease reaps), then reports
 * {vm child pid or 0, errno, flags} on the status pipe and sleeps until killed. */
enum { VF_IDLE = 2, VF_PINNED = 4 }; /* record flags the victim reports (bit 0: shared) */
static _Noreturn void victim_child(pid_t parent, int cpu, int kind, int threads, int rss_kb)
{
    child_setup(parent, g_status_w);
    int msg[3] = {0, 0, 0};
    if (cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof one, &one) == 0)
            msg[2] |= VF_PINNED;
    }
    struct sched_param sp = {.sched_priority = 0};
    if (syscall(SYS_sched_setscheduler, 0, SCHED_IDLE, &sp) == 0) /* musl's is a stub */
        msg[2] |= VF_IDLE;
    size_t bytes = (size_t)rss_kb * 1024;
    if (bytes) {
        char *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            msg[1] = errno;
        else
            for (size_t off = 0; off < bytes; off += 4096)
                mem[off] = 1; /* resident, private: what the reaper frees */
    }
    if (!msg[1])
        msg[1] = spawn_threads(threads - 1);
    if (!msg[1] && kind == KIND_MULTIPROCESS) {
        pid_t r = spawn_vm_child();
        if (r < 0)
            msg[1] = (int)-r;
        else
            msg[0] = r;
    }
    while (write(g_status_w, msg, sizeof msg) < 0 && errno == EINTR)
        ;
    sleeper(NULL);
    _exit(0);
}

/* ------------------------------------------------------------------ probe --------- */

struct facts {
    long long uid, euid, adj, adj_min, pid_max, threads_max, tasks, nproc_limit, cpus;
    long long uid_tasks, mem_available_kb;
    int cap_sys_resource, cap_sys_admin, clone_vm;
};

static unsigned long long cap_eff(void)
{
    char buf[8192];
    if (read_small("/proc/self/status", buf, sizeof buf) <= 0)
        return 0;
    char *p = strstr(buf, "\nCapEff:");
    return p ? strtoull(p + 8, NULL, 16) : 0;
}

/* The kernel does not expose oom_score_adj_min, so find it: fork a child (it inherits
 * our adj and adj_min) and binary-search the lowest value we may write to it. Returns
 * 1001 if even our own current adj cannot be written (no write permission at all). */
static long long probe_adj_min(long long adj)
{
    pid_t self = getpid(), pid = fork();
    if (pid < 0)
        return adj; /* cannot tell: assume only raising works */
    if (pid == 0) {
        child_setup(self, -1);
        sleeper(NULL);
    }
    record_kid(SLOT_PROBE, pid);
    char path[64], s[16];
    snprintf(path, sizeof path, "/proc/%d/oom_score_adj", (int)pid);
#define TRY(v) (snprintf(s, sizeof s, "%d", (int)(v)), write_adj_path(path, s, strlen(s)) == 0)
    long long result;
    if (TRY(-1000)) {
        result = -1000;
    } else if (!TRY(adj)) {
        result = 1001;
    } else { /* invariant: lo fails, hi works */
        long long lo = -1000, hi = adj;
        while (hi - lo > 1) {
            long long mid = lo + (hi - lo) / 2;
            if (TRY(mid))
                hi = mid;
            else
                lo = mid;
        }
        result = hi;
    }
#undef TRY
    reap_own(SLOT_PROBE);
    return result;
}

/* Does clone(CLONE_VM) without CLONE_THREAD work here? Tried in a throwaway child so
 * the helper's own mm never gets MMF_MULTIPROCESS; the child's clone child dies by
 * PDEATHSIG when the child exits. */
static int probe_clone_vm(void)
{
    pid_t self = getpid(), pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        child_setup(self, -1);
        _exit(spawn_vm_child() > 0 ? 0 : 1);
    }
    record_kid(SLOT_PROBE, pid);
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    g_kids[SLOT_PROBE].pid = 0; /* reaped (it exited by itself) */
    g_kids[SLOT_PROBE].state = K_FREE;
    reap_orphans(); /* the clone child, dying by PDEATHSIG */
    return r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Tasks (threads) of processes owned by our uid: what RLIMIT_NPROC counts (per real
 * uid), not every task on the system. /proc entries we may not stat are not ours. */
static long long count_uid_tasks(uid_t uid)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    long long n = 0;
    struct dirent *e;
    char path[64], buf[1024];
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s", e->d_name);
        if (stat(path, &st) != 0 || st.st_uid != uid)
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        long threads = 1;
        if (read_small(path, buf, sizeof buf) > 0) {
            char *p = strrchr(buf, ')'); /* comm may contain spaces: fields follow ')' */
            for (int field = 2; p && field < 20; field++)
                p = strchr(p + 1, ' ');
            if (p)
                threads = strtol(p + 1, NULL, 10);
        }
        n += threads > 0 ? threads : 1;
    }
    closedir(d);
    return n;
}

static long long mem_available_kb(void)
{
    char buf[4096];
    if (read_small("/proc/meminfo", buf, sizeof buf) <= 0)
        return -1;
    char *p = strstr(buf, "MemAvailable:");
    return p ? strtoll(p + 13, NULL, 10) : -1;
}

static void gather_facts(struct facts *f)
{
    char buf[256];
    f->uid = getuid();
    f->euid = geteuid();
    f->adj = read_ll("/proc/self/oom_score_adj", 0);
    unsigned long long caps = cap_eff();
    f->cap_sys_resource = (int)((caps >> 24) & 1);
    f->cap_sys_admin = (int)((caps >> 21) & 1);
    f->pid_max = read_ll("/proc/sys/kernel/pid_max", -1);
    f->threads_max = read_ll("/proc/sys/kernel/threads-max", -1);
    f->tasks = -1;
    if (read_small("/proc/loadavg", buf, sizeof buf) > 0) {
        char *slash = strchr(buf, '/');
        if (slash)
            f->tasks = strtoll(slash + 1, NULL, 10);
    }
    struct rlimit rl;
    f->nproc_limit = -1;
    if (getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        f->nproc_limit = (long long)rl.rlim_cur;
    f->cpus = sysconf(_SC_NPROCESSORS_ONLN);
    f->uid_tasks = count_uid_tasks(getuid());
    f->mem_available_kb = mem_available_kb();
    f->adj_min = probe_adj_min(f->adj);
    f->clone_vm = probe_clone_vm();
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void print_facts_calib(const struct facts *f)
{
    out("facts uid=%lld euid=%lld adj=%lld adj_min=%lld cap_sys_resource=%d pid_max=%lld "
        "threads_max=%lld tasks=%lld nproc_limit=%lld cpus=%lld clone_vm=%d uid_tasks=%lld "
        "mem_available_kb=%lld mem_task_kb=%d mem_proc_kb=%d",
        f->uid, f->euid, f->adj, f->adj_min, f->cap_sys_resource, f->pid_max, f->threads_max,
        f->tasks, f->nproc_limit, f->cpus, f->clone_vm, f->uid_tasks, f->mem_available_kb,
        MEM_TASK_KB, MEM_PROC_KB);
    /* Timer resolution/overhead, so the host can tell what a latency near it means. */
    enum { N = 10001 };
    static int64_t d[N];
    for (int i = 0; i < N; i++) {
        int64_t a = now_ns();
        d[i] = now_ns() - a;
    }
    qsort(d, N, sizeof d[0], cmp_i64);
    out("calib timer_ns=%lld timer_min_ns=%lld", (long long)d[N / 2], (long long)d[0]);
}

/* ------------------------------------------------------------------ plan ---------- */

/* one `w` line, 8 bytes; gap_us: optional pause before it (trace replay) */
struct wr { int16_t adj; uint8_t tidx; uint8_t role; uint32_t gap_us; };
struct point {
    int idx, population, threads, mode, warmup;
    double rate_hz;
    uint32_t first, count; /* its writes: g_writes[first .. first+count) */
};
struct target {
    int kind, threads, ok;
    int rss_kb;    /* kill plans' victims: anonymous memory each victim touches */
    pid_t pid;
    int fd;        /* persistent-mode fd, or -errno if open failed, or -1 */
    int cur_adj;   /* what the target holds now (for adj_from) */
    char path[40]; /* "/proc/<pid>/oom_score_adj", built once */
};

static struct target g_targets[MAX_TARGETS];
static int g_ntargets;
/* A kill plan declares `victim`s (templates: one fresh process per `k` line) instead of
 * targets; its `k` lines are stored in g_writes with adj 0 and tidx = the victim. */
static struct target g_victims[MAX_TARGETS];
static int g_nvictims;
static int g_kill_plan;
static struct point g_points[MAX_POINTS];
static int g_npoints;
static struct wr *g_writes; /* mmap'd, MADV_DONTFORK: children never need it */
static uint32_t g_nwrites;
static char g_errmsg[512];
static long g_errline; /* plan line of a parse error, 0 if none */
static int g_writer_cpu = -1; /* `writer` directive: -1 unpinned, -2 the CPU we start on */
static int g_writer_fifo;     /* 1: SCHED_FIFO like lmkd, when permitted */
static int g_writer_cpu_eff = -1; /* the CPU the writer (killer) was pinned to */

static int parse_long(const char *s, long lo, long hi, long *v)
{
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi)
        return -1;
    *v = x;
    return 0;
}

#define PLAN_FAIL(...) do { snprintf(g_errmsg, sizeof g_errmsg, __VA_ARGS__); return -1; } while (0)

/* One directive (tokens already split). Checks every limit of PROTOCOL.md. */
static int parse_directive(char **tok, int n, int *seen_header)
{
    long a, b, c, d;
    if (!*seen_header) {
        if (n != 2 || strcmp(tok[0], "droidoom-plan") != 0)
            PLAN_FAIL("expected header 'droidoom-plan %d'", PROTO);
        if (parse_long(tok[1], 0, 1000000, &a) || a != PROTO)
            PLAN_FAIL("plan version '%s' but this helper speaks %d; reinstall droidoom", tok[1],
                      PROTO);
        *seen_header = 1;
        return 0;
    }
    if (strcmp(tok[0], "k") == 0) {
        if (n != 3 && n != 4)
            PLAN_FAIL("'k' takes 2 or 3 fields: <vidx> <role> [<gap_us>]");
        if (!g_npoints)
            PLAN_FAIL("'k' before any 'point'");
        if (parse_long(tok[1], 0, g_nvictims - 1, &a))
            PLAN_FAIL("'k' victim '%s' is not a declared victim", tok[1]);
        if (parse_long(tok[2], 0, 255, &c))
            PLAN_FAIL("role '%s' is not in 0..255", tok[2]);
        if (n == 4 && parse_long(tok[3], 0, INT32_MAX, &d))
            PLAN_FAIL("gap_us '%s' is not in 0..%d", tok[3], INT32_MAX);
        if (g_nwrites >= MAX_WRITES)
            PLAN_FAIL("more than %d kills", MAX_WRITES);
        g_writes[g_nwrites++] = (struct wr){0, (uint8_t)a, (uint8_t)c, n == 4 ? (uint32_t)d : 0};
        g_points[g_npoints - 1].count++;
        return 0;
    }
    if (strcmp(tok[0], "victim") == 0) {
        if (n != 5)
            PLAN_FAIL("'victim' takes 4 fields: <vidx> <kind> <threads> <rss_kb>");
        if (g_npoints)
            PLAN_FAIL("'victim' after a 'point'; declare all victims first");
        if (g_ntargets)
            PLAN_FAIL("a plan has 'target's (writes) or 'victim's (kills), not both");
        if (g_nvictims >= MAX_TARGETS)
            PLAN_FAIL("more than %d victims", MAX_TARGETS);
        if (parse_long(tok[1], 0, MAX_TARGETS - 1, &a) || a != g_nvictims)
            PLAN_FAIL("victim index '%s' should be %d (consecutive from 0)", tok[1], g_nvictims);
        int kind = -1;
        for (int k = 0; k < 3; k++)
            if (strcmp(tok[2], kind_names[k]) == 0)
                kind = k;
        if (kind < 0)
            PLAN_FAIL("unknown victim kind '%s' (single, threaded, multiprocess)", tok[2]);
        if (parse_long(tok[3], 1, MAX_TTHREADS, &b))
            PLAN_FAIL("victim threads '%s' is not in 1..%d", tok[3], MAX_TTHREADS);
        if (kind == KIND_SINGLE && b != 1)
            PLAN_FAIL("a single victim has exactly 1 thread, not %ld", b);
        if (kind == KIND_THREADED && b < 2)
            PLAN_FAIL("a threaded victim needs >= 2 threads, not %ld", b);
        if (parse_long(tok[4], 0, MAX_VICTIM_RSS_KB, &c))
            PLAN_FAIL("victim rss_kb '%s' is not in 0..%d", tok[4], MAX_VICTIM_RSS_KB);
        g_victims[g_nvictims++] = (struct target){.kind = kind, .threads = (int)b,
                                                  .rss_kb = (int)c, .fd = -1};
        g_kill_plan = 1;
        return 0;
    }
    if (strcmp(tok[0], "w") == 0) {
        if (n != 4 && n != 5)
            PLAN_FAIL("'w' takes 3 or 4 fields: <tidx> <adj> <role> [<gap_us>]");
        if (g_kill_plan)
            PLAN_FAIL("'w' in a kill plan (it has 'victim's); use 'k' lines");
        if (!g_npoints)
            PLAN_FAIL("'w' before any 'point'");
        if (parse_long(tok[1], 0, g_ntargets - 1, &a))
            PLAN_FAIL("'w' target '%s' is not a declared target", tok[1]);
        if (parse_long(tok[2], -1000, 1000, &b))
            PLAN_FAIL("adj '%s' is not in -1000..1000", tok[2]);
        if (parse_long(tok[3], 0, 255, &c))
            PLAN_FAIL("role '%s' is not in 0..255", tok[3]);
        if (n == 5 && parse_long(tok[4], 0, INT32_MAX, &d)) /* long is 32-bit on arm */
            PLAN_FAIL("gap_us '%s' is not in 0..%d", tok[4], INT32_MAX);
        if (g_nwrites >= MAX_WRITES)
            PLAN_FAIL("more than %d writes", MAX_WRITES);
        g_writes[g_nwrites++] = (struct wr){(int16_t)b, (uint8_t)a, (uint8_t)c,
                                            n == 5 ? (uint32_t)d : 0};
        g_points[g_npoints - 1].count++;
        return 0;
    }
    if (strcmp(tok[0], "writer") == 0) {
        if (n != 3)
            PLAN_FAIL("'writer' takes 2 fields: <cpu|-1|-2> <fifo 0|1>");
        if (g_npoints)
            PLAN_FAIL("'writer' after a 'point'; put it before the first point");
        if (parse_long(tok[1], -2, CPU_SETSIZE - 1, &a))
            PLAN_FAIL("writer cpu '%s' is not -2 (current), -1 (any) or a CPU number", tok[1]);
        if (parse_long(tok[2], 0, 1, &b))
            PLAN_FAIL("writer fifo '%s' is not 0 or 1", tok[2]);
        g_writer_cpu = (int)a, g_writer_fifo = (int)b;
        return 0;
    }
    if (strcmp(tok[0], "target") == 0) {
        if (n != 4)
            PLAN_FAIL("'target' takes 3 fields: <tidx> <kind> <threads>");
        if (g_npoints)
            PLAN_FAIL("'target' after a 'point'; declare all targets first");
        if (g_kill_plan)
            PLAN_FAIL("a plan has 'target's (writes) or 'victim's (kills), not both");
        if (g_ntargets >= MAX_TARGETS)
            PLAN_FAIL("more than %d targets", MAX_TARGETS);
        if (parse_long(tok[1], 0, MAX_TARGETS - 1, &a) || a != g_ntargets)
            PLAN_FAIL("target index '%s' should be %d (consecutive from 0)", tok[1], g_ntargets);
        int kind = -1;
        for (int k = 0; k < 3; k++)
            if (strcmp(tok[2], kind_names[k]) == 0)
                kind = k;
        if (kind < 0)
            PLAN_FAIL("unknown target kind '%s' (single, threaded, multiprocess)", tok[2]);
        if (parse_long(tok[3], 1, MAX_TTHREADS, &b))
            PLAN_FAIL("target threads '%s' is not in 1..%d", tok[3], MAX_TTHREADS);
        if (kind == KIND_SINGLE && b != 1)
            PLAN_FAIL("a single target has exactly 1 thread, not %ld", b);
        if (kind == KIND_THREADED && b < 2)
            PLAN_FAIL("a threaded target needs >= 2 threads, not %ld", b);
        g_targets[g_ntargets++] = (struct target){.kind = kind, .threads = (int)b, .fd = -1};
        return 0;
    }
    if (strcmp(tok[0], "point") == 0) {
        if (n != 7)
            PLAN_FAIL("'point' takes 6 fields: <pidx> <population> <threads> <mode> <rate_hz> "
                      "<warmup>");
        if (g_npoints >= MAX_POINTS)
            PLAN_FAIL("more than %d points", MAX_POINTS);
        if (parse_long(tok[1], 0, MAX_POINTS - 1, &a) || a != g_npoints)
            PLAN_FAIL("point index '%s' should be %d (consecutive from 0)", tok[1], g_npoints);
        if (parse_long(tok[2], 0, MAX_POP, &b))
            PLAN_FAIL("population '%s' is not in 0..%d", tok[2], MAX_POP);
        if (parse_long(tok[3], 1, MAX_TPP, &c))
            PLAN_FAIL("threads per process '%s' is not in 1..%d", tok[3], MAX_TPP);
        if (g_npoints && c != g_points[0].threads)
            PLAN_FAIL("threads per process %ld differs from the first point's %d; one run uses "
                      "one thread count", c, g_points[0].threads);
        int mode = strcmp(tok[4], "reopen") == 0 ? MODE_REOPEN
                 : strcmp(tok[4], "persistent") == 0 ? MODE_PERSISTENT : -1;
        if (mode < 0)
            PLAN_FAIL("unknown mode '%s' (reopen, persistent)", tok[4]);
        char *end;
        double rate = strtod(tok[5], &end);
        if (end == tok[5] || *end || !isfinite(rate) || rate < 0)
            PLAN_FAIL("rate_hz '%s' is not a number >= 0", tok[5]);
        if (parse_long(tok[6], 0, INT_MAX, &d))
            PLAN_FAIL("warmup '%s' is not an integer >= 0", tok[6]);
        g_points[g_npoints++] = (struct point){(int)a, (int)b, (int)c, mode, (int)d, rate,
                                               g_nwrites, 0};
        return 0;
    }
    PLAN_FAIL("unknown directive '%s'", tok[0]);
}

/* Reads the whole plan; 0, or -1 with g_errmsg set. */
static int parse_plan(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(g_errmsg, sizeof g_errmsg, "cannot read plan %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    char *text = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (!size || text == MAP_FAILED) {
        snprintf(g_errmsg, sizeof g_errmsg, "plan %s is empty or unreadable", path);
        return -1;
    }
    /* Size the writes array from an upper bound: lines starting with 'w' or 'k'. */
    size_t nw = 0;
    for (size_t i = 0; i < size; i++) {
        if (i == 0 || text[i - 1] == '\n') {
            while (i < size && (text[i] == ' ' || text[i] == '\t'))
                i++;
            nw += i < size && (text[i] == 'w' || text[i] == 'k');
        }
    }
    if (nw > MAX_WRITES)
        nw = MAX_WRITES;
    size_t wbytes = (nw + 1) * sizeof(struct wr);
    g_writes = mmap(NULL, wbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_writes == MAP_FAILED) {
        munmap(text, size);
        snprintf(g_errmsg, sizeof g_errmsg, "cannot allocate %zu writes", nw);
        return -1;
    }
    madvise(g_writes, wbytes, MADV_DONTFORK); /* keeps fork() of the population cheap */

    int seen_header = 0, rc = 0;
    long lineno = 0;
    for (size_t pos = 0; pos < size && rc == 0;) {
        const char *nl = memchr(text + pos, '\n', size - pos);
        size_t len = (nl ? (size_t)(nl - text) : size) - pos, next = pos + len + 1;
        const char *hash = memchr(text + pos, '#', len);
        char line[256], *tok[8];
        lineno++;
        if (hash)
            len = (size_t)(hash - (text + pos)); /* comments may be long; directives not */
        if (len >= sizeof line) {
            snprintf(g_errmsg, sizeof g_errmsg, "line too long");
            rc = -1;
            break;
        }
        memcpy(line, text + pos, len);
        line[len] = 0;
        pos = next;
        int n = 0;
        for (char *p = strtok(line, " \t\r"); p; p = strtok(NULL, " \t\r"))
            if (n < 8)
                tok[n++] = p;
            else
                n = 9;
        if (n == 0)
            continue;
        if (n > 8) {
            snprintf(g_errmsg, sizeof g_errmsg, "too many fields");
            rc = -1;
        } else {
            rc = parse_directive(tok, n, &seen_header);
        }
    }
    munmap(text, size);
    if (rc == 0 && !seen_header) {
        snprintf(g_errmsg, sizeof g_errmsg, "no 'droidoom-plan %d' header", PROTO);
        return -1;
    }
    if (rc != 0)
        g_errline = lineno;
    return rc;
}

/* Refusal rules of PROTOCOL.md ("Safety checks before spawning"); 0 or -1 + g_errmsg. */
static int safety_check(const struct facts *f)
{
    long long maxpop = 0, tpp = g_npoints ? g_points[0].threads : 1, tthreads = 0, nmp = 0;
    for (int i = 0; i < g_npoints; i++)
        if (g_points[i].population > maxpop)
            maxpop = g_points[i].population;
    for (int i = 0; i < g_ntargets; i++) {
        tthreads += g_targets[i].threads;
        nmp += g_targets[i].kind == KIND_MULTIPROCESS;
    }
    /* A kill plan has one victim alive at a time: count the largest (threads, its
     * CLONE_VM child, the memory it touches) as if it were a target. */
    long long vthreads = 0, vmp = 0, vrss_kb = 0;
    for (int i = 0; i < g_nvictims; i++) {
        const struct target *v = &g_victims[i];
        if (v->threads > vthreads)
            vthreads = v->threads;
        if (v->kind == KIND_MULTIPROCESS)
            vmp = 1;
        if (v->rss_kb > vrss_kb)
            vrss_kb = v->rss_kb;
    }
    tthreads += vthreads;
    nmp += vmp;
    long long need = maxpop * tpp + tthreads + 2 * nmp, tasks = f->tasks > 0 ? f->tasks : 0;
    long long cap = -1;
    if (f->pid_max > 0)
        cap = f->pid_max;
    if (f->threads_max > 0 && (cap < 0 || f->threads_max < cap))
        cap = f->threads_max;
    if (cap > 0 && tasks + need > cap * 8 / 10) {
        snprintf(g_errmsg, sizeof g_errmsg,
                 "population %lld x %lld threads plus targets needs %lld tasks; with %lld already "
                 "running that exceeds 80%% of min(pid_max %lld, threads-max %lld) = %lld; use a "
                 "smaller --population or --threads",
                 maxpop, tpp, need, tasks, f->pid_max, f->threads_max, cap * 8 / 10);
        return -1;
    }
    long long mine = f->uid_tasks >= 0 ? f->uid_tasks : tasks; /* what RLIMIT_NPROC counts */
    if (f->nproc_limit >= 0 && !f->cap_sys_resource && !f->cap_sys_admin &&
        mine + need > f->nproc_limit / 10 * 9) {
        snprintf(g_errmsg, sizeof g_errmsg,
                 "population %lld x %lld threads plus targets needs %lld tasks; with %lld of this "
                 "uid's already running that exceeds 90%% of RLIMIT_NPROC %lld = %lld (no "
                 "CAP_SYS_RESOURCE); use a smaller --population or --threads, or raise ulimit -u",
                 maxpop, tpp, need, mine, f->nproc_limit, f->nproc_limit / 10 * 9);
        return -1;
    }
    long long procs = maxpop + g_ntargets + (g_nvictims ? 1 : 0) + nmp;
    long long need_kb = need * MEM_TASK_KB + procs * MEM_PROC_KB + vrss_kb;
    if (f->mem_available_kb > 0 && need_kb > f->mem_available_kb / 2) {
        snprintf(g_errmsg, sizeof g_errmsg,
                 "population %lld x %lld threads needs ~%lld MB of kernel memory (stacks, task "
                 "structs, page tables) but only %lld MB is available and the sweep may use at "
                 "most half of it (more would make lmkd kill apps); use a smaller --population "
                 "or --threads, or close apps",
                 maxpop, tpp, need_kb / 1024, f->mem_available_kb / 1024);
        return -1;
    }
    int lowest = 1001;
    for (uint32_t i = 0; i < g_nwrites; i++)
        if (g_writes[i].adj < lowest)
            lowest = g_writes[i].adj;
    if (lowest < f->adj_min) {
        if (f->adj_min > 1000)
            snprintf(g_errmsg, sizeof g_errmsg,
                     "this helper cannot write oom_score_adj of its own children at all "
                     "(adj_min=%lld); check permissions/SELinux or run as root", f->adj_min);
        else
            snprintf(g_errmsg, sizeof g_errmsg,
                     "plan writes oom_score_adj %d but without CAP_SYS_RESOURCE this helper can "
                     "only set values >= adj_min=%lld (its inherited minimum); run as root or "
                     "use adj values >= %lld",
                     lowest, f->adj_min, f->adj_min);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ records ------- */

struct rec {
    int64_t t_ns;
    uint32_t latency_ns, seq;
    int16_t adj_from, adj_to;
    uint16_t point;
    uint8_t target, role;
    int16_t cpu, err;
    uint32_t reserved;
};
_Static_assert(sizeof(struct rec) == 32, "record layout is part of the protocol");

/* One kill of a kill plan (records file version 2). */
enum { STAGE_OK, STAGE_SPAWN, STAGE_OPEN, STAGE_SIGNAL, STAGE_MRELEASE };
enum { KF_SHARED = 1 }; /* | VF_IDLE | VF_PINNED, as the victim reported them */
struct krec {
    int64_t t_ns;               /* CLOCK_MONOTONIC just before pidfd_open */
    uint32_t mrelease_ns, seq;  /* process_mrelease duration; index of the `k` line */
    uint32_t open_ns, kill_ns;  /* pidfd_open, pidfd_send_signal durations */
    uint32_t reap_ns, spawn_ns; /* waitpid after process_mrelease; fork..victim ready */
    uint16_t point;
    uint8_t victim, role;
    int16_t cpu, err;           /* killer's CPU after process_mrelease; errno of `stage` */
    uint8_t stage, flags;       /* first stage that failed (STAGE_OK: none); KF_ and VF_ bits */
    uint16_t threads;           /* Threads: of the victim just before process_mrelease */
    uint32_t reserved;
};
_Static_assert(sizeof(struct krec) == 48, "record layout is part of the protocol");

static struct rec *g_recbuf; /* REC_BUF records, mmap'd, MADV_DONTFORK */
static struct krec *g_krecbuf; /* the same buffer, as kill records (kill plans) */
static int g_nbuf;
static uint64_t g_recorded, g_done, g_total;
static char g_adjstr[2001][8]; /* "-1000".."1000", formatted once, before any timing */
static uint8_t g_adjlen[2001];

static int flush_records(void)
{
    size_t size = g_kill_plan ? sizeof(struct krec) : sizeof(struct rec);
    int err = write_all(g_rec_fd, g_recbuf, (size_t)g_nbuf * size);
    g_nbuf = 0;
    if (err)
        out_error("runtime", "cannot write records file: %s", strerror(err));
    return err ? -1 : 0;
}

static void poll_stdin(void)
{
    if (!g_watch_stdin || g_stop)
        return;
    struct pollfd p = {0, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0)
        return;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
        g_stop = STOP_STDIN;
        return;
    }
    char junk[256];
    if (read(0, junk, sizeof junk) == 0) /* EOF: the host is gone */
        g_stop = STOP_STDIN;
}

/* Progress tick: records to disk, a liveness line, and a look at stdin. */
static int tick(int64_t *next_tick)
{
    if (flush_records() != 0)
        return -1;
    out("progress done=%llu total=%llu", (unsigned long long)g_done,
        (unsigned long long)g_total);
    poll_stdin();
    stopping();
    *next_tick = now_ns() + TICK_NS;
    return 0;
}

/* ------------------------------------------------------------------ spawning ------ */

static int g_npop; /* population slots 0..g_npop-1 are alive */

/* Grow (fork, oldest first) or shrink (kill the newest) the population to `want`
 * processes of `threads` tasks each. 0, 1 if interrupted, -1 on failure (printed). */
static int set_population(int want, int threads)
{
    if (want < g_npop) {
        for (int i = g_npop - 1; i >= want; i--)
            kill_own(SLOT_POP(i)); /* all kills first, so they die in parallel */
        for (int i = g_npop - 1; i >= want; i--)
            reap_own(SLOT_POP(i));
        g_npop = want;
        return 0;
    }
    pid_t self = getpid();
    int pending = 0, failed = 0;
    int64_t last_sign = now_ns(), next_poll = last_sign + TICK_NS;
    while ((g_npop < want || pending > 0) && !stopping()) {
        if (g_npop < want) {
            pid_t pid = fork();
            if (pid < 0) {
                out_error("runtime", "fork failed after %d population processes: %s; use a "
                          "smaller --population or raise the process limit", g_npop,
                          strerror(errno));
                return -1;
            }
            if (pid == 0)
                population_child(self, threads);
            record_kid(SLOT_POP(g_npop), pid);
            g_npop++;
            pending++;
            if (g_npop % 64 && g_npop < want)
                continue; /* drain the ready pipe every 64 forks */
        }
        unsigned char buf[4096];
        struct pollfd p = {g_ready_r, POLLIN, 0};
        int timeout = g_npop < want ? 0 : (int)(TICK_NS / 1000000);
        if (poll(&p, 1, timeout) > 0) {
            ssize_t r = read(g_ready_r, buf, sizeof buf);
            for (ssize_t i = 0; i < r; i++)
                if (buf[i] && !failed)
                    failed = buf[i];
            if (r > 0) {
                pending -= (int)r;
                last_sign = now_ns();
            }
        }
        int64_t now = now_ns();
        if (failed) {
            out_error("runtime", "a population process could not create its %d threads: %s; "
                      "use a smaller --threads or --population", threads - 1, strerror(failed));
            return -1;
        }
        if (now - last_sign > STALL_NS) {
            out_error("runtime", "%d population processes did not report ready within %lld s",
                      pending, STALL_NS / 1000000000LL);
            return -1;
        }
        if (now >= next_poll) {
            poll_stdin();
            next_poll = now + TICK_NS;
        }
    }
    return stopping() ? 1 : 0;
}

/* Forks every target once; a target that fails is reported and skipped. */
static int spawn_targets(int adj)
{
    pid_t self = getpid();
    for (int i = 0; i < g_ntargets && !stopping(); i++) {
        struct target *t = &g_targets[i];
        int err = 0;
        pid_t pid = fork();
        if (pid == 0)
            target_child(self, i, t->kind, t->threads);
        if (pid < 0) {
            err = errno;
        } else {
            record_kid(SLOT_TARGET(i), pid);
            int msg[2] = {-1, 0};
            int64_t deadline = now_ns() + STALL_NS;
            for (;;) {
                struct pollfd p = {g_status_r, POLLIN, 0};
                if (poll(&p, 1, (int)(TICK_NS / 1000000)) > 0 &&
                    read(g_status_r, msg, sizeof msg) == (ssize_t)sizeof msg && msg[0] == i)
                    break; /* (a late message of an earlier, timed-out target is dropped) */
                poll_stdin();
                if (stopping())
                    return 1;
                if (now_ns() > deadline) {
                    msg[1] = ETIMEDOUT;
                    break;
                }
            }
            err = msg[1];
        }
        if (err) {
            if (pid > 0)
                reap_own(SLOT_TARGET(i));
            out("target idx=%d kind=%s pid=0 threads=%d status=error errno=%d msg=\"%s%s\"", i,
                kind_names[t->kind], t->threads, err, strerror(err),
                err == EINVAL && t->kind == KIND_MULTIPROCESS
                    ? " (clone(CLONE_VM) without CLONE_THREAD; qemu-user rejects it)" : "");
            continue;
        }
        t->ok = 1;
        t->pid = pid;
        t->cur_adj = adj;
        snprintf(t->path, sizeof t->path, "/proc/%d/oom_score_adj", (int)pid);
        out("target idx=%d kind=%s pid=%d threads=%d status=ok", i, kind_names[t->kind],
            (int)pid, t->threads);
    }
    return stopping() ? 1 : 0;
}

/* ------------------------------------------------------------------ writing ------- */

/* Sleeps until `due`, still ticking every TICK_NS. 0, or -1 on failure. */
static int pace(int64_t due, int64_t *next_tick)
{
    for (;;) {
        int64_t now = now_ns();
        if (now >= due || stopping())
            return 0;
        if (now >= *next_tick) {
            if (tick(next_tick) != 0)
                return -1;
            continue;
        }
        sleep_until(due < *next_tick ? due : *next_tick);
    }
}

/* openat as bionic (and so lmkd) issues it: one syscall. musl's open() follows an
 * O_CLOEXEC open with an fcntl(F_SETFD) for pre-2.6.23 kernels, a second syscall that
 * would add ~0.25 us to every timed write. */
static inline int open_wronly(const char *path)
{
    long fd = syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 && errno == 0)
        errno = EIO;
    return (int)fd;
}

/* One update, as lmkd does it (reopen: open+write+close) or on the point's fd
 * (persistent). oom_score_adj ignores the file offset, so plain write() is fine.
 * Returns 0 or the errno of the failed call. */
static inline int do_write(const struct target *t, int persistent, const char *s, size_t len)
{
    int fd = persistent ? t->fd : open_wronly(t->path);
    if (fd < 0)
        return persistent ? -fd : errno; /* persistent: fd holds -errno of its open() */
    ssize_t r = write(fd, s, len);
    int err = r == (ssize_t)len ? 0 : (r < 0 ? errno : EIO);
    if (!persistent && close(fd) != 0 && !err)
        err = errno;
    return err;
}

/* Runs the writes of one point. 0 (check stopping()) or -1 on failure (printed). */
static int run_point(const struct point *p, int64_t *next_tick)
{
    const int persistent = p->mode == MODE_PERSISTENT;
    int rc = 0;
    for (int i = 0; i < g_ntargets; i++) {
        struct target *t = &g_targets[i];
        t->fd = -1;
        if (t->ok && persistent) {
            t->fd = open(t->path, O_WRONLY | O_CLOEXEC);
            if (t->fd < 0)
                t->fd = -errno;
        }
    }
    /* Warmup: untimed writes of each target's first adj in this point (caches hot). */
    for (int i = 0; i < g_ntargets && p->warmup > 0; i++) {
        struct target *t = &g_targets[i];
        uint32_t k = 0;
        while (k < p->count && g_writes[p->first + k].tidx != i)
            k++;
        if (!t->ok || k == p->count)
            continue;
        int adj = g_writes[p->first + k].adj;
        const char *s = g_adjstr[adj + 1000];
        size_t len = g_adjlen[adj + 1000];
        for (int j = 0; j < p->warmup && !stopping(); j++) {
            if (!do_write(t, persistent, s, len))
                t->cur_adj = adj;
            if ((j & 255) == 255 && now_ns() >= *next_tick && tick(next_tick) != 0) {
                rc = -1;
                goto out;
            }
        }
    }
    /* The timed loop. Only the write's own syscalls, two vDSO clock reads and getcpu
     * happen per iteration; stdout and stdin are touched only on ticks. */
    double ns_per_write = p->rate_hz > 0 ? 1e9 / p->rate_hz : 0;
    if (ns_per_write > 1e15) /* absurdly slow rates: keep the arithmetic finite */
        ns_per_write = 1e15;
    const int64_t start = now_ns();
    int64_t gaps = 0; /* sum of the `w` lines' gap_us so far, ns */
    for (uint32_t i = 0; i < p->count; i++) {
        if (g_signal || g_stop)
            break;
        const uint32_t seq = p->first + i;
        const struct wr w = g_writes[seq];
        struct target *t = &g_targets[w.tidx];
        gaps += (int64_t)w.gap_us * 1000;
        if (!t->ok) {
            g_done++; /* target could not be spawned: counted, not recorded */
            continue;
        }
        if (ns_per_write > 0 || gaps > 0) {
            double offset = (double)i * ns_per_write + (double)gaps;
            if (pace(start + (int64_t)(offset < 4e18 ? offset : 4e18), next_tick) != 0) {
                rc = -1;
                break;
            }
            if (g_stop)
                break;
        }
        const char *s = g_adjstr[w.adj + 1000];
        const size_t len = g_adjlen[w.adj + 1000];
        const int64_t t0 = now_ns();
        const int err = do_write(t, persistent, s, len);
        const int64_t t1 = now_ns();
        const int cpu = sched_getcpu();
        const int64_t lat = t1 - t0;
        g_recbuf[g_nbuf++] = (struct rec){
            .t_ns = t0,
            .latency_ns = lat > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)lat,
            .seq = seq,
            .adj_from = (int16_t)t->cur_adj,
            .adj_to = w.adj,
            .point = (uint16_t)p->idx,
            .target = w.tidx,
            .role = w.role,
            .cpu = (int16_t)(cpu < 0 ? -1 : cpu),
            .err = (int16_t)err,
        };
        if (!err)
            t->cur_adj = w.adj;
        g_recorded++;
        g_done++;
        if (g_nbuf == REC_BUF && flush_records() != 0) {
            rc = -1;
            break;
        }
        if (t1 >= *next_tick && tick(next_tick) != 0) {
            rc = -1;
            break;
        }
    }
out:
    for (int i = 0; i < g_ntargets; i++) {
        if (g_targets[i].fd >= 0)
            close(g_targets[i].fd);
        g_targets[i].fd = -1;
    }
    if (rc == 0 && tick(next_tick) != 0) /* end-of-point progress line */
        rc = -1;
    return rc;
}


/* ------------------------------------------------------------------ killing ------- */

/* Forks one victim of `v` pinned to `cpu` and waits until it is ready (threads made,
 * memory touched). 0 or errno (ETIMEDOUT if it never reported), -1 if stopping; on
 * success *vm_pid is its CLONE_VM child (multiprocess) or 0 and *flags its VF_ bits. */
static int spawn_victim(const struct target *v, int cpu, pid_t *vm_pid, int *flags)
{
    pid_t self = getpid(), pid = fork();
    if (pid < 0)
        return errno;
    if (pid == 0)
        victim_child(self, cpu, v->kind, v->threads, v->rss_kb);
    record_kid(SLOT_VICTIM, pid);
    int msg[3] = {0, ETIMEDOUT, 0};
    int64_t deadline = now_ns() + STALL_NS;
    for (;;) { /* the status pipe is ours alone in a kill plan: no targets */
        struct pollfd p = {g_status_r, POLLIN, 0};
        if (poll(&p, 1, (int)(TICK_NS / 1000000)) > 0 &&
            read(g_status_r, msg, sizeof msg) == (ssize_t)sizeof msg)
            break;
        poll_stdin();
        if (stopping())
            return -1;
        if (now_ns() > deadline) {
            msg[1] = ETIMEDOUT;
            break;
        }
    }
    *vm_pid = msg[0];
    *flags = msg[2];
    return msg[1];
}

/* Threads: of /proc/<pid>/status, 0 if unreadable. Read between the kill and
 * process_mrelease (untimed): the victim's threads have not run since (see
 * victim_child), so more than one means mm_users > 1 when the call runs. */
static int victim_threads(pid_t pid)
{
    char path[48], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (read_small(path, buf, sizeof buf) <= 0)
        return 0;
    char *p = strstr(buf, "\nThreads:");
    return p ? (int)strtol(p + 9, NULL, 10) : 0;
}

/* Is the CLONE_VM child of a multiprocess victim still alive (so the mm is shared)? */
static int vm_child_alive(pid_t pid)
{
    char path[48], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (pid <= 0 || read_small(path, buf, sizeof buf) <= 0)
        return 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static uint32_t sat_u32(int64_t ns) { return ns < 0 ? 0 : ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns; }

/* One kill as lmkd makes it, on a victim spawned before the clock starts: pidfd_open,
 * pidfd_send_signal(SIGKILL), process_mrelease(pidfd, 0), each timed; then the reap
 * (waitpid) timed apart. Fills `r`; 0, or -1 if stopping before the victim existed. */
static int kill_one(const struct target *v, int cpu, struct krec *r)
{
    pid_t vm_pid = 0;
    int vflags = 0;
    int64_t s0 = now_ns();
    int err = spawn_victim(v, cpu, &vm_pid, &vflags);
    r->spawn_ns = sat_u32(now_ns() - s0);
    if (err) {
        reap_own(SLOT_VICTIM); /* kill (if alive) and reap; never a stranger */
        if (vm_pid > 0)
            while (waitpid(vm_pid, NULL, 0) < 0 && errno == EINTR)
                ;
        if (err < 0)
            return -1;
        r->stage = STAGE_SPAWN, r->err = (int16_t)err;
        return 0;
    }
    const pid_t pid = g_kids[SLOT_VICTIM].pid;
    r->flags = (uint8_t)vflags;
    const int64_t t0 = now_ns();
    const int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    const int open_err = fd < 0 ? errno : 0;
    const int64_t t1 = now_ns();
    const int kill_err = fd < 0 ? 0 : kill_victim(fd);
    const int64_t t2 = now_ns();
    r->t_ns = t0, r->open_ns = sat_u32(t1 - t0), r->kill_ns = sat_u32(t2 - t1);
    if (open_err || kill_err) {
        r->stage = open_err ? STAGE_OPEN : STAGE_SIGNAL;
        r->err = (int16_t)(open_err ? open_err : kill_err);
    } else {
        const int threads = victim_threads(pid);
        r->threads = (uint16_t)(threads > 0 ? threads : 0);
        if (threads > 1 || (v->kind == KIND_MULTIPROCESS && vm_child_alive(vm_pid)))
            r->flags |= KF_SHARED;
        const int64_t t3 = now_ns();
        const long mr = syscall(SYS_process_mrelease, fd, 0);
        const int mr_err = mr != 0 ? errno : 0;
        const int64_t t4 = now_ns();
        r->mrelease_ns = sat_u32(t4 - t3);
        if (mr_err) /* ENOSYS before 5.15; EINVAL when nothing was left to reap */
            r->stage = STAGE_MRELEASE, r->err = (int16_t)mr_err;
    }
    const int cpu_now = sched_getcpu();
    r->cpu = (int16_t)(cpu_now < 0 ? -1 : cpu_now);
    if (fd >= 0)
        close(fd);
    const int64_t t5 = now_ns();
    reap_own(SLOT_VICTIM); /* kills first only if the pidfd kill failed */
    if (vm_pid > 0) /* reparented to us (subreaper) when the victim exited; dies by PDEATHSIG */
        while (waitpid(vm_pid, NULL, 0) < 0 && errno == EINTR)
            ;
    r->reap_ns = sat_u32(now_ns() - t5);
    return 0;
}

/* Runs the kills of one point: each a fresh victim, paced like writes. 0 (check
 * stopping()) or -1 on failure (printed). */
static int run_kill_point(const struct point *p, int64_t *next_tick)
{
    /* The measuring CPU: the killer's pin, else where it runs now (victims follow it). */
    const int cpu = g_pinned ? g_writer_cpu_eff : sched_getcpu();
    double ns_per_kill = p->rate_hz > 0 ? 1e9 / p->rate_hz : 0;
    if (ns_per_kill > 1e15)
        ns_per_kill = 1e15;
    const int64_t start = now_ns();
    int64_t gaps = 0;
    for (uint32_t i = 0; i < p->count; i++) {
        if (g_signal || g_stop)
            break;
        const uint32_t seq = p->first + i;
        const struct wr w = g_writes[seq];
        gaps += (int64_t)w.gap_us * 1000;
        if (ns_per_kill > 0 || gaps > 0) {
            double offset = (double)i * ns_per_kill + (double)gaps;
            if (pace(start + (int64_t)(offset < 4e18 ? offset : 4e18), next_tick) != 0)
                return -1;
            if (g_stop)
                break;
        }
        struct krec r = {.seq = seq, .point = (uint16_t)p->idx, .victim = w.tidx, .role = w.role};
        if (kill_one(&g_victims[w.tidx], cpu, &r) != 0)
            break; /* stopping */
        if (!r.t_ns)
            r.t_ns = now_ns();
        g_krecbuf[g_nbuf++] = r;
        g_recorded++;
        g_done++;
        if (g_nbuf == REC_BUF && flush_records() != 0)
            return -1;
        if (now_ns() >= *next_tick && tick(next_tick) != 0)
            return -1;
    }
    return tick(next_tick) != 0 ? -1 : 0; /* end-of-point progress line */
}

/* ------------------------------------------------------------------ commands ------ */

/* Kills and reaps everything this helper created: population newest first, then targets
 * and a kill plan's victim, then their CLONE_VM children (dead by PDEATHSIG, reparented
 * to us). */
static void teardown(void)
{
    for (int i = g_npop - 1; i >= 0; i--)
        kill_own(SLOT_POP(i));
    for (int i = 0; i < MAX_TARGETS; i++)
        kill_own(SLOT_TARGET(i));
    kill_own(SLOT_VICTIM);
    for (int i = g_npop - 1; i >= 0; i--)
        reap_own(SLOT_POP(i));
    for (int i = 0; i < MAX_TARGETS; i++)
        reap_own(SLOT_TARGET(i));
    reap_own(SLOT_VICTIM);
    g_npop = 0;
    reap_orphans(); /* the targets' CLONE_VM children */
}

static void print_hello(void)
{
    out("hello proto=%d source=%s abi=%s pid=%d", PROTO, DROIDOOM_SOURCE_SHA256, ARCH,
        (int)getpid());
}

/* Pins the writer (this thread) and makes it SCHED_FIFO as the plan asks, after the
 * targets exist; children forked later get the old mask back (child_setup) and, through
 * SCHED_RESET_ON_FORK, SCHED_OTHER. Prints a `writer` line. */
static void setup_writer(void)
{
    int cpu = g_writer_cpu == -2 ? sched_getcpu() : g_writer_cpu, pin_err = 0, fifo_err = 0;
    if (cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_getaffinity(0, sizeof g_all_cpus, &g_all_cpus) == 0 &&
            sched_setaffinity(0, sizeof one, &one) == 0)
            g_pinned = 1, g_writer_cpu_eff = cpu;
        else
            pin_err = errno;
    }
    if (g_writer_fifo) {
        struct sched_param sp = {.sched_priority = 1}; /* lmkd: SCHED_FIFO, priority 1 */
        /* the raw syscall: musl's sched_setscheduler() is a stub that returns ENOSYS */
        if (syscall(SYS_sched_setscheduler, 0, SCHED_FIFO | SCHED_RESET_ON_FORK, &sp) != 0)
            fifo_err = errno;
    }
    out("writer cpu=%d pinned=%d pin_errno=%d fifo=%d fifo_errno=%d", g_pinned ? cpu : -1,
        g_pinned, pin_err, g_writer_fifo && !fifo_err, fifo_err);
}

/* "name:value,..." of the first files matching dir/<prefix>*<file> into buf: the CPU
 * frequency of each cpufreq policy or the temperature of each thermal zone. */
static void read_states(char *buf, size_t size, const char *dir, const char *prefix,
                        const char *file, const char *name_file)
{
    size_t used = 0;
    buf[0] = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL && n < 16) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        char path[256], val[64], name[48];
        snprintf(path, sizeof path, "%s/%s/%s", dir, e->d_name, file);
        if (read_small(path, val, sizeof val) <= 0)
            continue;
        snprintf(name, sizeof name, "%s", e->d_name);
        if (name_file) {
            snprintf(path, sizeof path, "%s/%s/%s", dir, e->d_name, name_file);
            if (read_small(path, name, sizeof name) <= 0)
                snprintf(name, sizeof name, "%s", e->d_name);
        }
        for (char *c = name; *c; c++) /* values never contain spaces or separators */
            if (*c == '\n')
                *c = 0;
            else if (*c == ' ' || *c == ',' || *c == ':' || *c == '=' || *c == '"')
                *c = '_';
        int w = snprintf(buf + used, size - used, "%s%s:%lld", n ? "," : "", name,
                         strtoll(val, NULL, 10));
        if (w < 0 || (size_t)w >= size - used)
            break;
        used += (size_t)w;
        n++;
    }
    closedir(d);
}

/* Every way out of `run` after spawning starts goes through here: flush, teardown, done. */
static int finish(int rc)
{
    if (rc == EXIT_INTR && stopping() == STOP_NONE)
        g_stop = STOP_SIGNAL;
    if (g_rec_fd >= 0 && g_nbuf && flush_records() != 0)
        rc = EXIT_RUNTIME;
    teardown();
    if (rc == EXIT_OK || rc == EXIT_INTR)
        out("done writes=%llu status=%s reason=%s", (unsigned long long)g_recorded,
            rc == EXIT_OK ? "complete" : "interrupted", stop_names[rc == EXIT_OK ? 0 : g_stop]);
    if (g_rec_fd >= 0)
        close(g_rec_fd);
    return rc;
}

static int cmd_run(const char *plan_path, const char *rec_path)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: sleeps and waits return to check the flag */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    struct stat st;
    g_watch_stdin = fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));

    print_hello();
    if (parse_plan(plan_path) != 0) {
        if (g_errline)
            out_error("usage", "plan %s line %ld: %s", plan_path, g_errline, g_errmsg);
        else
            out_error("usage", "%s", g_errmsg);
        return EXIT_USAGE;
    }
    g_total = g_nwrites;
    g_rec_fd = open(rec_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (g_rec_fd < 0) {
        out_error("usage", "cannot create records file %s: %s", rec_path, strerror(errno));
        return EXIT_USAGE;
    }
    struct { char magic[8]; uint32_t version, record_size; } hdr = {
        {'D', 'D', 'O', 'O', 'M', 'R', 'E', 'C'}, PROTO, sizeof(struct rec)};
    if (g_kill_plan) /* version 2: kill records */
        hdr.version = 2, hdr.record_size = sizeof(struct krec);
    int err = write_all(g_rec_fd, &hdr, sizeof hdr);
    if (err) {
        out_error("runtime", "cannot write records file %s: %s", rec_path, strerror(err));
        close(g_rec_fd);
        return EXIT_RUNTIME;
    }

    struct facts f;
    gather_facts(&f);
    print_facts_calib(&f);
    if (stopping())
        return finish(EXIT_INTR);
    if (safety_check(&f) != 0) {
        out_error("refused", "%s", g_errmsg);
        close(g_rec_fd);
        return EXIT_REFUSED;
    }

    for (int a = -1000; a <= 1000; a++)
        g_adjlen[a + 1000] = (uint8_t)snprintf(g_adjstr[a + 1000], 8, "%d", a);
    g_recbuf = mmap(NULL, REC_BUF * sizeof(struct krec), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* room for either record */
    g_krecbuf = (struct krec *)(void *)g_recbuf;
    int pr[2], ps[2];
    if (g_recbuf == MAP_FAILED || pipe2(pr, O_CLOEXEC) != 0 || pipe2(ps, O_CLOEXEC) != 0) {
        out_error("runtime", "cannot set up: %s", strerror(errno));
        return finish(EXIT_RUNTIME);
    }
    madvise(g_recbuf, REC_BUF * sizeof(struct krec), MADV_DONTFORK);
    g_ready_r = pr[0], g_ready_w = pr[1], g_status_r = ps[0], g_status_w = ps[1];
    fcntl(g_ready_r, F_SETFL, O_NONBLOCK);
    fcntl(g_status_r, F_SETFL, O_NONBLOCK);

    int r = spawn_targets((int)f.adj); /* none in a kill plan: victims come per kill */
    if (r)
        return finish(EXIT_INTR);
    setup_writer();
    int64_t next_tick = now_ns() + TICK_NS;
    for (int i = 0; i < g_npoints; i++) {
        const struct point *p = &g_points[i];
        int64_t t0 = now_ns();
        r = set_population(p->population, p->threads);
        if (r < 0)
            return finish(EXIT_RUNTIME);
        if (r > 0)
            return finish(EXIT_INTR);
        int64_t spawn_ns = now_ns() - t0;
        static char freq[512], temp[768];
        read_states(freq, sizeof freq, "/sys/devices/system/cpu/cpufreq", "policy",
                    "scaling_cur_freq", NULL);
        read_states(temp, sizeof temp, "/sys/class/thermal", "thermal_zone", "temp", "type");
        out("point idx=%d population=%d threads=%d mode=%s spawn_ns=%lld pids=%d-%d "
            "freq_khz=%s temp_mc=%s", p->idx, g_npop, p->threads, mode_names[p->mode],
            (long long)spawn_ns, g_npop ? (int)g_kids[SLOT_POP(0)].pid : 0,
            g_npop ? (int)g_kids[SLOT_POP(g_npop - 1)].pid : 0, freq, temp);
        if ((g_kill_plan ? run_kill_point(p, &next_tick) : run_point(p, &next_tick)) != 0)
            return finish(EXIT_RUNTIME);
        if (stopping())
            return finish(EXIT_INTR);
    }
    return finish(EXIT_OK);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a closed stdout shows up as EPIPE, handled in out() */
    prctl(PR_SET_CHILD_SUBREAPER, 1); /* orphaned CLONE_VM children come back to us */
    if (argc == 2 && strcmp(argv[1], "version") == 0) {
        out("droidoom-helper proto=%d source=%s abi=%s", PROTO, DROIDOOM_SOURCE_SHA256, ARCH);
        return EXIT_OK;
    }
    if (argc == 2 && strcmp(argv[1], "probe") == 0) {
        struct facts f;
        print_hello();
        gather_facts(&f);
        print_facts_calib(&f);
        return EXIT_OK;
    }
    if (argc == 4 && strcmp(argv[1], "run") == 0)
        return cmd_run(argv[2], argv[3]);
    out_error("usage", "usage: droidoom-helper version | probe | run PLAN RECORDS");
    return EXIT_USAGE;
}
