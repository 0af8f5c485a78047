/* Helpers for the shared-recorder tests: a directory of this run's segments, child processes
 * with a deadline, pages shared with children, and the torture size switch.
 *
 * Children are forked from a single-threaded test (every thread of the test joined first):
 * that is what qemu-user can fork, and what TSan can follow.  A child reports through its
 * exit status: 0 when its checks passed. */
#ifndef ET_SHARED_SUPPORT_H
#define ET_SHARED_SUPPORT_H

#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* This run's directory for segments: on tmpfs (/dev/shm) when there is one, as on a device
 * (/run), else under TMPDIR.  Mode 0755 so that a test running as another uid can reach the
 * files in it; removed with what is left in it when the runner exits. */
static char test_dir_path[256];
static pid_t test_dir_owner;

static void test_dir_remove(void) {
    if (getpid() != test_dir_owner || test_dir_path[0] == '\0') return;
    DIR *d = opendir(test_dir_path);
    if (d != NULL) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            snprintf(p, sizeof p, "%s/%s", test_dir_path, e->d_name);
            if (unlink(p) != 0) { /* a directory a test made */
                DIR *sub = opendir(p);
                if (sub != NULL) {
                    struct dirent *f;
                    char q[800];
                    while ((f = readdir(sub)) != NULL) {
                        if (f->d_name[0] == '.') continue;
                        snprintf(q, sizeof q, "%s/%s", p, f->d_name);
                        unlink(q);
                    }
                    closedir(sub);
                }
                rmdir(p);
            }
        }
        closedir(d);
    }
    rmdir(test_dir_path);
}

static inline const char *test_dir(void) {
    if (test_dir_path[0] != '\0') return test_dir_path;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (base == NULL) base = "/tmp";
    snprintf(test_dir_path, sizeof test_dir_path, "%s/et-test-XXXXXX", base);
    if (mkdtemp(test_dir_path) == NULL) {
        fprintf(stderr, "cannot make a directory under %s: %s\n", base, strerror(errno));
        abort();
    }
    chmod(test_dir_path, 0755);
    test_dir_owner = getpid();
    atexit(test_dir_remove);
    return test_dir_path;
}

/* A fresh segment path in this run's directory (nothing there yet). */
static inline void test_seg_path(char *buf, size_t n, const char *name) {
    static unsigned counter;
    snprintf(buf, n, "%s/%s-%u", test_dir(), name, counter++);
    unlink(buf);
}

/* The defaults with a small configuration; steal and timeouts short, so that tests which
 * kill lock holders do not wait long. */
static inline et_shared_options test_shared_options(uint32_t max_processes) {
    et_shared_options o;
    et_shared_options_default(&o);
    o.max_processes = max_processes;
    o.steal_after_ns = 2000000;   /* 2 ms */
    o.lock_timeout_ns = 50000000; /* 50 ms */
    o.reap_period_ns = 5000000;   /* 5 ms */
    return o;
}

static inline et_recorder *test_create_shared(const char *path, uint32_t ring, uint32_t threads,
                                             uint32_t series, uint32_t max_processes) {
    et_config c = test_config(ring, threads, series);
    et_shared_options o = test_shared_options(max_processes);
    et_recorder *rec = NULL;
    const int rc = et_recorder_create_shared(path, &c, &o, &rec);
    ET_CHECKF(rc == ET_OK && rec != NULL, "et_recorder_create_shared(%s): %s", path,
              et_strerror(rc));
    return rc == ET_OK ? rec : NULL;
}

static inline et_recorder *test_attach(const char *path) {
    et_recorder *rec = NULL;
    const int rc = et_recorder_attach(path, &rec);
    ET_CHECKF(rc == ET_OK && rec != NULL, "et_recorder_attach(%s): %s", path, et_strerror(rc));
    return rc == ET_OK ? rec : NULL;
}

static inline et_shared_info test_shared_info(et_recorder *rec) {
    et_shared_info si;
    memset(&si, 0, sizeof si);
    ET_CHECK_RC(et_recorder_shared_info(rec, &si), ET_OK);
    return si;
}

/* An agent call that may give up on a lock a live producer holds (ET_ETIMEDOUT: under
 * contention on a loaded machine, nothing changed), retried as the daemon would. */
#define TEST_RETRY_TIMEOUT(call)                                                               \
    ({                                                                                         \
        int rc_;                                                                               \
        for (int try_ = 0; (rc_ = (call)) == ET_ETIMEDOUT && try_ < 100; try_++) {            \
        }                                                                                      \
        rc_;                                                                                   \
    })

/* Close the agent's window into totals and acknowledge it; its seq, UINT64_MAX on failure. */
static inline uint64_t test_close_ack(et_recorder *agent, test_totals *t, size_t n) {
    et_window *w = NULL;
    const int rc = TEST_RETRY_TIMEOUT(et_window_close(agent, &w));
    ET_CHECKF(rc == ET_OK && w != NULL, "et_window_close: %s", et_strerror(rc));
    if (rc != ET_OK || w == NULL) return UINT64_MAX;
    test_totals_add(t, n, w);
    const uint64_t seq = et_window_seq(w);
    et_window_free(w);
    ET_CHECK_RC(et_window_ack(agent, seq), ET_OK);
    return seq;
}

/* Wait for a child for up to seconds; a child still running is killed.  Its exit status,
 * 128 + signal when killed by one, 254 when it hung, 255 when it could not be waited for. */
static inline int test_wait_child(pid_t pid, unsigned seconds) {
    const int64_t deadline = test_now_ns() + (int64_t)seconds * 1000000000;
    for (;;) {
        int status = 0;
        const pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        }
        if (r < 0) return 255;
        if (test_now_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 254;
        }
        test_sleep_us(500);
    }
}

/* Run body(arg) in a child process; the child exits 0 when no check failed in it. */
static inline pid_t test_spawn(void (*body)(void *), void *arg) {
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        alarm(et_test_timeout());
        const uint64_t before = et_test_failure_count();
        body(arg);
        fflush(stdout);
        _exit(et_test_failure_count() != before ? 1 : 0);
    }
    ET_CHECKF(pid > 0, "fork: %s", strerror(errno));
    return pid;
}

/* Zeroed memory shared with the children forked after this call. */
static inline void *test_shared_page(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ET_CHECKF(p != MAP_FAILED, "mmap: %s", strerror(errno));
    return p == MAP_FAILED ? NULL : p;
}

/* ET_TORTURE=full: the long runs; otherwise sizes bounded for CI on a shared 2-core box. */
static inline bool test_torture_full(void) {
    const char *s = getenv("ET_TORTURE");
    return s != NULL && strcmp(s, "full") == 0;
}

/* Running under qemu-user?  It cannot fork a multi-threaded guest (tests that need to are
 * named fork_* and skipped there); it can fork a single-threaded one. */
static inline bool test_as_root(void) { return geteuid() == 0; }

#endif
