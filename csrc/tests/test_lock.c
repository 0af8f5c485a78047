/* et_lock, the core's internal lock (src/lock.h): exclusion under contention, the owner's tid
 * in the word, hand-off to sleepers, the shared futex across processes, and the dead-owner
 * hook.  Internal, but the runner links the core as one object, so its symbols are here. */
#include "support.h"

#include "../src/lock.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

ET_TEST(lock_word_holds_owner_tid) {
    et_lock l = {0};
    const uint32_t me = (uint32_t)syscall(SYS_gettid);
    ET_CHECK_EQ_U(et__tid(), me);
    ET_CHECK_EQ_U(et__lock_owner(&l), 0);
    et__lock(&l);
    ET_CHECK_EQ_U(atomic_load(&l.word), me); /* uncontended: the tid and nothing else */
    ET_CHECK_EQ_U(et__lock_owner(&l), me);
    et__unlock(&l);
    ET_CHECK_EQ_U(atomic_load(&l.word), 0);
    ET_CHECK(!et__lock_or_steal(&l, 1000000)); /* free: an ordinary acquisition */
    ET_CHECK_EQ_U(et__lock_owner(&l), me);
    et__unlock(&l);
    et__lock(&l);
    et__lock_reset(&l); /* what a fork child does */
    ET_CHECK_EQ_U(atomic_load(&l.word), 0);
}

typedef struct contended {
    et_lock lock;
    uint64_t counter; /* plain: only the lock orders the increments (TSan checks it) */
    uint64_t per_thread;
    _Atomic uint32_t inside;
} contended;

static void *hammer(void *arg) {
    contended *c = arg;
    for (uint64_t i = 0; i < c->per_thread; i++) {
        et__lock(&c->lock);
        ET_CHECK_EQ_U(atomic_fetch_add(&c->inside, 1), 0);
        c->counter++;
        if (i % 1024 == 0) { /* now and then a long section, so that waiters go to sleep */
            for (volatile int k = 0; k < 20000; k++) {
            }
        }
        atomic_fetch_sub(&c->inside, 1);
        et__unlock(&c->lock);
    }
    return NULL;
}

ET_TEST_FLAGS(lock_excludes_under_contention, ET_CONCURRENT) {
    contended *c = calloc(1, sizeof *c);
    ET_REQUIRE(c);
    c->per_thread = TEST_SANITIZED ? 20000 : 200000;
    pthread_t th[4];
    for (int t = 0; t < 4; t++) ET_REQUIRE(pthread_create(&th[t], NULL, hammer, c) == 0);
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    ET_CHECK_EQ_U(c->counter, 4 * c->per_thread);
    ET_CHECK_EQ_U(atomic_load(&c->lock.word), 0); /* free, no stale bits */
    free(c);
}

/* One thread releases and retakes the lock in a tight loop, as a batch does between its
 * chunks; another must still get it, again and again: the release hands it to the sleeper. */
typedef struct greedy {
    et_lock lock;
    _Atomic bool stop;
    _Atomic uint64_t greedy_rounds;
} greedy;

static void *greedy_main(void *arg) {
    greedy *g = arg;
    while (!atomic_load_explicit(&g->stop, memory_order_relaxed)) {
        et__lock(&g->lock);
        for (volatile int k = 0; k < 2000; k++) {
        }
        et__unlock(&g->lock);
        atomic_fetch_add_explicit(&g->greedy_rounds, 1, memory_order_relaxed);
    }
    return NULL;
}

ET_TEST_FLAGS(lock_hands_off_to_sleepers, ET_CONCURRENT) {
    greedy *g = calloc(1, sizeof *g);
    ET_REQUIRE(g);
    pthread_t th;
    ET_REQUIRE(pthread_create(&th, NULL, greedy_main, g) == 0);
    while (atomic_load(&g->greedy_rounds) < 100) sched_yield();
    int64_t worst = 0;
    const int rounds = TEST_SANITIZED ? 200 : 2000;
    for (int i = 0; i < rounds; i++) {
        const int64_t t0 = test_now_ns();
        et__lock(&g->lock);
        const int64_t waited = test_now_ns() - t0;
        et__unlock(&g->lock);
        if (waited > worst) worst = waited;
    }
    atomic_store(&g->stop, true);
    pthread_join(th, NULL);
    /* reported, not asserted (times): the test is that every round got the lock at all */
    printf("     worst wait against a greedy re-locker: %.1f us\n", (double)worst / 1e3);
    ET_CHECK_EQ_U(atomic_load(&g->lock.word), 0);
    free(g);
}

/* The word works across processes (shared futex) and the dead-owner hook takes a lock whose
 * owner died inside its section, but never one whose owner lives. */
ET_TEST_FLAGS(lock_across_processes_and_dead_owner, ET_CONCURRENT) {
    et_lock *l = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ET_REQUIRE(l != MAP_FAILED);
    atomic_store(&l->word, 0);
    volatile uint32_t *child_has_it = (volatile uint32_t *)((char *)l + 64);
    *child_has_it = 0;

    /* a live owner in another process: the waiter sleeps, is woken by its unlock, steals
     * nothing */
    fflush(stdout);
    pid_t pid = fork();
    ET_REQUIRE(pid >= 0);
    if (pid == 0) {
        et__tid_refresh();
        et__lock(l);
        __atomic_store_n(child_has_it, 1, __ATOMIC_RELEASE);
        test_sleep_us(300000); /* longer than the waiter's timeout: it must check, not steal */
        et__unlock(l);
        _exit(0);
    }
    while (__atomic_load_n(child_has_it, __ATOMIC_ACQUIRE) == 0) test_sleep_us(100);
    ET_CHECK_EQ_U(et__lock_owner(l), (uint32_t)pid);
    ET_CHECK(!et__lock_or_steal(l, 20000000)); /* 20 ms timeouts, the owner lives */
    ET_CHECK_EQ_U(et__lock_owner(l), et__tid());
    et__unlock(l);
    int status = 0;
    ET_CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* an owner that dies holding it */
    *child_has_it = 0;
    fflush(stdout);
    pid = fork();
    ET_REQUIRE(pid >= 0);
    if (pid == 0) {
        et__tid_refresh();
        et__lock(l);
        _exit(0);
    }
    ET_CHECK(waitpid(pid, &status, 0) == pid); /* reaped: its tid no longer exists */
    ET_CHECK_EQ_U(et__lock_owner(l), (uint32_t)pid);
    ET_CHECK(et__lock_or_steal(l, 10000000)); /* stolen: the caller must repair */
    ET_CHECK_EQ_U(et__lock_owner(l), et__tid());
    et__unlock(l);
    ET_CHECK_EQ_U(atomic_load(&l->word), 0);
    munmap(l, 4096);
}
