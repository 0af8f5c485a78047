/* fork(): the child forgets what the parent recorded, keeps the forking thread's ring, has no
 * collector thread (and can start one), and never deadlocks; the parent loses nothing.
 * Children report through their exit status; the parent waits with a deadline. */
#include "support.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* Wait for a child for up to seconds; a child still running is killed and reported. */
static int wait_child(pid_t pid, unsigned seconds) {
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
            return 254; /* hung */
        }
        test_sleep_us(1000);
    }
}

static const char *child_status(int rc) {
    switch (rc) {
    case 0: return "ok";
    case 1: return "checks failed in the child";
    case 3: return "the child timed out (deadlock?)";
    case 254: return "the child hung and was killed";
    default: return "the child crashed or could not be waited for";
    }
}

/* A recording thread in the parent, running until told to stop. */
typedef struct busy {
    pthread_t thread;
    et_recorder *rec;
    uint32_t series;
    _Atomic bool stop;
    _Atomic uint64_t ok, full;
    double sum;
} busy;

static void *busy_main(void *arg) {
    busy *b = arg;
    uint64_t i = 0;
    while (!atomic_load_explicit(&b->stop, memory_order_relaxed)) {
        const double v = (double)(1 + i++ % 13);
        const int rc = et_record(b->rec, b->series, v);
        if (rc == ET_OK) {
            atomic_fetch_add_explicit(&b->ok, 1, memory_order_relaxed);
            b->sum += v;
        } else if (rc == ET_ERINGFULL) {
            atomic_fetch_add_explicit(&b->full, 1, memory_order_relaxed);
        } else {
            et_test_fail(__FILE__, __LINE__, "et_record: %s", et_strerror(rc));
        }
        if (i % 256 == 0) sched_yield();
    }
    return NULL;
}

/* A window closer in the parent, so fork() can land while it holds the collector lock. */
typedef struct closer {
    pthread_t thread;
    et_recorder *rec;
    _Atomic bool stop;
    _Atomic uint64_t closes;
    test_totals totals[4];
} closer;

/* gcc 12's and clang 14's ASan runtimes do not take their allocator's locks around fork()
 * (newer runtimes do): a child forked while another thread is inside malloc/free hangs in its
 * own first malloc.  glibc's malloc is fork-safe, so only the ASan build keeps the closer's
 * allocations (et_window_close, et_window_free) and fork() apart; the race between fork and
 * the core's own locks is still exercised there, and fully in the other builds.  A thread's
 * start-up allocates too (ASan's thread start frees pthread_getattr_np's buffer): the parent
 * forks only once every helper thread has done some work (wait_started). */
#if defined(__SANITIZE_ADDRESS__)
#define ASAN_FORK_GUARD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_FORK_GUARD 1
#endif
#endif
#ifndef ASAN_FORK_GUARD
#define ASAN_FORK_GUARD 0
#endif
static pthread_mutex_t asan_fork_guard = PTHREAD_MUTEX_INITIALIZER;

static void *closer_main(void *arg) {
    closer *c = arg;
    while (!atomic_load(&c->stop)) {
        if (ASAN_FORK_GUARD) pthread_mutex_lock(&asan_fork_guard);
        test_close_into(c->rec, c->totals, 4);
        if (ASAN_FORK_GUARD) pthread_mutex_unlock(&asan_fork_guard);
        atomic_fetch_add(&c->closes, 1);
        test_sleep_us(100);
    }
    return NULL;
}

static void *child_thread_records(void *arg) {
    et_recorder *rec = arg;
    for (int i = 0; i < 10; i++) ET_CHECK_RC(et_record(rec, 0, 100.0), ET_OK);
    return NULL;
}

/* Everything the child checks; returns its exit status. */
static int child_body(et_recorder *rec, uint32_t mine, uint32_t theirs, bool collector_was_on) {
    alarm(20);
    const uint64_t failures = et_test_failure_count(); /* the parent's, copied */
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.collector_period_ns, 0); /* no collector thread in the child */
    ET_CHECK_EQ_U(info.window_seq, 0);
    ET_CHECK(info.threads_active <= 1); /* only the forking thread's ring */
    (void)collector_was_on;
    for (int i = 0; i < 25; i++) ET_CHECK_RC(et_record(rec, mine, 2.0), ET_OK);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.threads_active, 1);
    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    if (w) {
        ET_CHECK_EQ_U(et_window_seq(w), 0);
        et_series_stats st;
        ET_CHECK(test_stats_of(w, mine, &st));
        ET_CHECK_EQ_U(st.count, 25);
        ET_CHECK_EQ_D(st.sum, 50.0);
        for (int r = 0; r < ET_DROP_REASONS; r++) ET_CHECK_EQ_U(st.dropped[r], 0);
        /* the parent's records stay the parent's: not even listed */
        ET_CHECK(!test_stats_of(w, theirs, &st));
        ET_CHECK_EQ_U(et_window_series_count(w), 1);
        et_window_free(w);
    }
    if (TEST_TSAN) { /* no threads in the child under TSan: free, which must not hang */
        et_recorder_free(rec);
        return et_test_failure_count() != failures ? 1 : 0;
    }
    /* a new thread in the child gets a ring (the parent's threads' rings were freed) */
    pthread_t th;
    ET_CHECK(pthread_create(&th, NULL, child_thread_records, rec) == 0);
    pthread_join(th, NULL);
    /* the collector can be started and stopped in the child */
    ET_CHECK_RC(et_collector_start(rec, 80000), ET_OK);
    for (int i = 0; i < 5; i++) ET_CHECK_RC(et_record(rec, mine, 3.0), ET_OK);
    const int64_t deadline = test_now_ns() + 5000000000ll;
    do {
        test_sleep_us(500);
        ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    } while (info.records_drained < 25 + 10 + 5 && test_now_ns() < deadline);
    ET_CHECK_EQ_U(info.records_drained, 25 + 10 + 5);
    ET_CHECK_RC(et_collector_stop(rec), ET_OK);
    test_totals t[4];
    test_totals_init(t, 4);
    ET_CHECK_EQ_U(test_close_into(rec, t, 4), 1);
    ET_CHECK_EQ_U(t[0].count, 10);
    ET_CHECK_EQ_U(t[mine].count, 5);
    /* a new recorder works in the child, and everything can be freed */
    et_recorder *other = test_recorder(64, 1, 1);
    if (other) {
        ET_CHECK_RC(et_record(other, 0, 1.0), ET_OK);
        et_recorder_free(other);
    }
    et_recorder_free(rec);
    return et_test_failure_count() != failures ? 1 : 0;
}

/* Until the collector thread has drained and the closer closed: both are past their start-up
 * (see ASAN_FORK_GUARD). */
static void wait_started(et_recorder *rec, bool collector_thread, const closer *c,
                         bool closer_thread) {
    const int64_t deadline = test_now_ns() + 10000000000ll;
    et_info info;
    for (;;) {
        ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
        const bool collector_up = !collector_thread || info.collector_passes > 0;
        const bool closer_up = !closer_thread || atomic_load(&c->closes) > 0;
        if (collector_up && closer_up) return;
        ET_REQUIRE(test_now_ns() < deadline);
        test_sleep_us(200);
    }
}

static void fork_while_busy(bool collector_thread, bool closer_thread, int forks) {
    et_recorder *rec = test_recorder(256, 4, 4);
    ET_REQUIRE(rec);
    test_series(rec, "child-thread");
    const uint32_t theirs = test_series(rec, "parent-thread");
    const uint32_t mine = test_series(rec, "forking-thread");
    if (collector_thread) ET_CHECK_RC(et_collector_start(rec, 100000), ET_OK);
    busy *b = calloc(1, sizeof *b);
    closer *c = calloc(1, sizeof *c);
    ET_REQUIRE(b && c);
    b->rec = rec;
    b->series = theirs;
    c->rec = rec;
    test_totals_init(c->totals, 4);
    ET_REQUIRE(pthread_create(&b->thread, NULL, busy_main, b) == 0);
    if (closer_thread) ET_REQUIRE(pthread_create(&c->thread, NULL, closer_main, c) == 0);
    wait_started(rec, collector_thread, c, closer_thread);

    uint64_t mine_ok = 0;
    for (int f = 0; f < forks; f++) {
        /* the forking thread has a ring with the parent's records in it */
        for (int i = 0; i < 7; i++) {
            ET_CHECK_RC(et_record(rec, mine, 1.0), ET_OK);
            mine_ok++;
        }
        while (atomic_load(&b->ok) < (uint64_t)(f + 1) * 50) sched_yield(); /* it is busy */
        fflush(stdout);
        if (ASAN_FORK_GUARD) pthread_mutex_lock(&asan_fork_guard);
        const pid_t pid = fork();
        if (ASAN_FORK_GUARD) pthread_mutex_unlock(&asan_fork_guard);
        ET_REQUIRE(pid >= 0);
        if (pid == 0) _exit(child_body(rec, mine, theirs, collector_thread));
        const int rc = wait_child(pid, 30);
        ET_CHECKF(rc == 0, "fork %d: %s (status %d)", f, child_status(rc), rc);
        /* the parent keeps recording in its own ring after the fork */
        for (int i = 0; i < 3; i++) {
            ET_CHECK_RC(et_record(rec, mine, 1.0), ET_OK);
            mine_ok++;
        }
        if (!closer_thread) test_close_into(rec, c->totals, 4);
    }
    atomic_store(&b->stop, true);
    pthread_join(b->thread, NULL);
    if (closer_thread) {
        atomic_store(&c->stop, true);
        pthread_join(c->thread, NULL);
    }
    if (collector_thread) ET_CHECK_RC(et_collector_stop(rec), ET_OK);
    test_close_into(rec, c->totals, 4);
    /* the parent lost nothing to the children */
    ET_CHECK_EQ_U(c->totals[mine].count, mine_ok);
    ET_CHECK_EQ_D(c->totals[mine].sum, (double)mine_ok);
    ET_CHECK_EQ_U(c->totals[theirs].count, atomic_load(&b->ok));
    ET_CHECK_EQ_D(c->totals[theirs].sum, b->sum);
    ET_CHECK_EQ_U(c->totals[theirs].dropped[ET_DROP_RING_FULL], atomic_load(&b->full));
    ET_CHECK_EQ_U(c->totals[0].count, 0);
    free(b);
    free(c);
    et_recorder_free(rec);
}

ET_TEST_FLAGS(fork_child_sees_only_its_records, ET_CONCURRENT) {
    fork_while_busy(false, false, 3);
}

ET_TEST_FLAGS(fork_with_collector_thread_running, ET_CONCURRENT) {
    fork_while_busy(true, false, 5);
}

ET_TEST_FLAGS(fork_while_windows_close, ET_CONCURRENT) { fork_while_busy(true, true, 20); }

/* A thread that never recorded forks: the child has no ring until it records. */
ET_TEST_FLAGS(fork_from_thread_without_ring, ET_CONCURRENT) {
    et_recorder *rec = test_recorder(64, 2, 2);
    ET_REQUIRE(rec);
    test_series(rec, "x");
    fflush(stdout);
    const pid_t pid = fork();
    ET_REQUIRE(pid >= 0);
    if (pid == 0) {
        alarm(20);
        const uint64_t failures = et_test_failure_count();
        et_info info;
        ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
        ET_CHECK_EQ_U(info.threads_active, 0);
        ET_CHECK_RC(et_record(rec, 0, 4.0), ET_OK);
        test_totals t;
        test_totals_init(&t, 1);
        test_close_into(rec, &t, 1);
        ET_CHECK_EQ_U(t.count, 1);
        et_recorder_free(rec);
        _exit(et_test_failure_count() != failures ? 1 : 0);
    }
    const int rc = wait_child(pid, 30);
    ET_CHECKF(rc == 0, "%s (status %d)", child_status(rc), rc);
    ET_CHECK_RC(et_record(rec, 0, 4.0), ET_OK);
    test_totals t;
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, 1);
    et_recorder_free(rec);
}
