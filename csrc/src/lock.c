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

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The sleeping half of every lock call.  A free lock anyone may take; a handed-off one only
 * a thread that has waited on the futex, so that a thread that just released the lock and
 * comes straight back queues behind the sleeper it was handed to instead of overtaking it.
 * Either is taken with WAITERS set, because other sleepers may remain and only an unlock that
 * sees the bit wakes them; a thread that queues on a handed-off word sets the bit on it too
 * (see et__unlock_slow).
 * steal_ns (0: never): a word that has not changed for that long is checked for a dead owner
 * (and a hand-off nobody took for that long is taken).
 * deadline (0: none): give up once it passes, unless the lock can be taken right then.  A
 * waiter that gives up leaves at most a stale WAITERS bit, which the next unlock clears (its
 * wake finds nobody).  A sleeper woken by a hand-off returns from the wait without a timeout
 * and takes the lock on its next turn of the loop, before it looks at the deadline. */
static bool owner_gone(uint32_t owner, et_lock_dead_fn dead, void *ctx) {
    if (owner == 0) return false;
    if (dead != NULL) return dead(ctx, owner);
    return kill((pid_t)owner, 0) == -1 && errno == ESRCH;
}

static int lock_sleep(et_lock *l, uint32_t me, uint64_t steal_ns, uint64_t deadline,
                      et_lock_dead_fn dead, void *ctx) {
    bool waited = false;
    for (;;) {
        uint32_t v = atomic_load_explicit(&l->word, memory_order_relaxed);
        const bool handed = (v & ~ET_LOCK_WAITERS) == ET_LOCK_HANDOFF;
        if (v == 0 || (handed && waited)) {
            if (try_take(l, v, me | ET_LOCK_WAITERS)) return ET_LOCK_TAKEN;
            continue;
        }
        uint64_t wait_ns = steal_ns; /* 0: until woken */
        if (deadline) {
            const uint64_t now = mono_ns();
            if (now >= deadline) return ET_LOCK_GAVE_UP;
            if (wait_ns == 0 || deadline - now < wait_ns) wait_ns = deadline - now;
        }
        if (!(v & ET_LOCK_WAITERS)) {
            if (!atomic_compare_exchange_strong_explicit(&l->word, &v, v | ET_LOCK_WAITERS,
                                                         memory_order_relaxed,
                                                         memory_order_relaxed))
                continue;
            v |= ET_LOCK_WAITERS;
        }
        const int rc = futex_wait(l, v, wait_ns);
        const int err = errno;
        waited = true;
        if (steal_ns && wait_ns == steal_ns && rc == -1 && err == ETIMEDOUT) {
            /* The word has not changed for steal_ns.  Handed off and never taken: the sleeper
             * it was handed to died before its CAS (or is very late: its CAS will then fail
             * and it waits again).  The section before was complete, so the loop's top takes
             * it like any waiter that has waited. */
            if (handed) continue;
            /* Held: is its owner still there? */
            if (owner_gone(v & ET_LOCK_TID_MASK, dead, ctx) &&
                try_take(l, v, me | ET_LOCK_WAITERS))
                return ET_LOCK_STOLEN;
        }
    }
}

static int lock_contended(et_lock *l, uint32_t me, uint64_t steal_ns, uint64_t deadline,
                          et_lock_dead_fn dead, void *ctx) {
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        if (atomic_load_explicit(&l->word, memory_order_relaxed) == 0 && try_take(l, 0, me))
            return ET_LOCK_TAKEN;
        cpu_relax();
    }
    return lock_sleep(l, me, steal_ns, deadline, dead, ctx);
}

void et__lock_slow(et_lock *l, uint32_t me) { (void)lock_contended(l, me, 0, 0, NULL, NULL); }

bool et__lock_or_steal(et_lock *l, uint64_t timeout_ns) {
    const uint32_t me = et__tid();
    if (try_take(l, 0, me)) return false;
    return lock_contended(l, me, timeout_ns, 0, NULL, NULL) == ET_LOCK_STOLEN;
}

int et__lock_shared(et_lock *l, uint32_t me, uint64_t steal_after_ns, uint64_t give_up_ns,
                    et_lock_dead_fn dead, void *ctx) {
    if (try_take(l, 0, me)) return ET_LOCK_TAKEN;
    const uint64_t deadline = give_up_ns ? mono_ns() + give_up_ns : 0;
    return lock_contended(l, me, steal_after_ns, deadline, dead, ctx);
}

void et__unlock_any(et_lock *l) {
    uint32_t v = atomic_load_explicit(&l->word, memory_order_relaxed);
    if (!(v & ET_LOCK_WAITERS) &&
        atomic_compare_exchange_strong_explicit(&l->word, &v, 0, memory_order_release,
                                                memory_order_relaxed))
        return;
    et__unlock_slow(l); /* someone sleeps, or set the bit meanwhile */
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
