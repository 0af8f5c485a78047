/* et_lock's slow paths: spin, sleep on the futex, hand off to a sleeper (see lock.h). */
#include "lock.h"

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Sections last up to a ring's worth of records (microseconds): spinning about that long
 * catches most releases without a sleep and a wake-up, each a syscall. */
#define SPIN_ROUNDS 2000

static _Thread_local uint32_t cached_tid __attribute__((tls_model("initial-exec")));

uint32_t et__tid(void) {
    uint32_t tid = cached_tid;
    if (__builtin_expect(tid == 0, 0)) {
        tid = (uint32_t)syscall(SYS_gettid);
        cached_tid = tid;
    }
    return tid;
}

void et__tid_refresh(void) { cached_tid = (uint32_t)syscall(SYS_gettid); }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Sleep while the word still holds v.  Returns -1 with ETIMEDOUT after timeout_ns (0: no
 * timeout); spurious returns and EAGAIN (the word changed first) are the caller's loop. */
static int futex_wait(et_lock *l, uint32_t v, uint64_t timeout_ns) {
    struct timespec ts, *tp = NULL;
    if (timeout_ns) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
        ts.tv_nsec = (long)(timeout_ns % 1000000000u);
        tp = &ts;
    }
    return (int)syscall(SYS_futex, &l->word, FUTEX_WAIT, v, tp, NULL, 0);
}

static int futex_wake_one(et_lock *l) {
    return (int)syscall(SYS_futex, &l->word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static bool try_take(et_lock *l, uint32_t from, uint32_t to) {
    return atomic_compare_exchange_strong_explicit(&l->word, &from, to, memory_order_acquire,
                                                   memory_order_relaxed);
}

/* The sleeping half of both lock calls.  A free lock anyone may take; a handed-off one only
 * a thread that has waited on the futex, so that a thread that just released the lock and
 * comes straight back queues behind the sleeper it was handed to instead of overtaking it.
 * Either is taken with WAITERS set, because other sleepers may remain and only an unlock that
 * sees the bit wakes them; a thread that queues on a handed-off word sets the bit on it too
 * (see et__unlock_slow). */
static bool lock_sleep(et_lock *l, uint32_t me, uint64_t timeout_ns) {
    bool waited = false;
    for (;;) {
        uint32_t v = atomic_load_explicit(&l->word, memory_order_relaxed);
        const bool handed = (v & ~ET_LOCK_WAITERS) == ET_LOCK_HANDOFF;
        if (v == 0 || (handed && waited)) {
            if (try_take(l, v, me | ET_LOCK_WAITERS)) return false;
            continue;
        }
        if (!(v & ET_LOCK_WAITERS)) {
            if (!atomic_compare_exchange_strong_explicit(&l->word, &v, v | ET_LOCK_WAITERS,
                                                         memory_order_relaxed,
                                                         memory_order_relaxed))
                continue;
            v |= ET_LOCK_WAITERS;
        }
        const int rc = futex_wait(l, v, handed ? 0 : timeout_ns);
        const int err = errno;
        waited = true;
        if (!handed && rc == -1 && err == ETIMEDOUT) {
            /* the word has not changed for timeout_ns: is its owner still there? */
            const pid_t owner = (pid_t)(v & ET_LOCK_TID_MASK);
            if (owner != 0 && kill(owner, 0) == -1 && errno == ESRCH &&
                try_take(l, v, me | ET_LOCK_WAITERS))
                return true;
        }
    }
}

static bool lock_contended(et_lock *l, uint32_t me, uint64_t timeout_ns) {
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        if (atomic_load_explicit(&l->word, memory_order_relaxed) == 0 && try_take(l, 0, me))
            return false;
        cpu_relax();
    }
    return lock_sleep(l, me, timeout_ns);
}

void et__lock_slow(et_lock *l, uint32_t me) { (void)lock_contended(l, me, 0); }

bool et__lock_or_steal(et_lock *l, uint64_t timeout_ns) {
    const uint32_t me = et__tid();
    if (try_take(l, 0, me)) return false;
    return lock_contended(l, me, timeout_ns);
}

/* Someone sleeps (WAITERS): give the lock to a sleeper rather than to whoever comes next. */
void et__unlock_slow(et_lock *l) {
    atomic_store_explicit(&l->word, ET_LOCK_HANDOFF, memory_order_release);
    if (futex_wake_one(l) > 0) return; /* the woken sleeper takes it */
    /* Nobody was asleep: either the bit's setter is between setting it and sleeping (its
     * futex_wait will find the word changed, and it takes the lock, free or handed off), or
     * the bit was stale.  Free the lock, unless a waiter took it meanwhile; a thread that
     * queued on the handed-off word (HANDOFF | WAITERS) may be asleep on it: wake it. */
    uint32_t v = ET_LOCK_HANDOFF;
    while (!atomic_compare_exchange_weak_explicit(&l->word, &v, 0, memory_order_relaxed,
                                                  memory_order_relaxed)) {
        if ((v & ~ET_LOCK_WAITERS) != ET_LOCK_HANDOFF) return; /* taken */
    }
    if (v & ET_LOCK_WAITERS) futex_wake_one(l);
}
