/* et_lock: the core's one lock type, a 32-bit word that is plain data.
 *
 * 0 is free; otherwise the low 30 bits are the owner's kernel thread id (tids stay below
 * 2^22, PID_MAX_LIMIT) and the top bits say that some thread sleeps on the word (WAITERS)
 * or that the last owner handed the lock to a sleeper (HANDOFF, no owner).  Taking it is one
 * CAS; a contended taker spins briefly, then sleeps with FUTEX_WAIT.  The futex calls are
 * the shared (not _PRIVATE) variants, so the same word works in memory that several
 * processes map.
 *
 * Why not a pthread mutex: the word lives in the recorder's region, which other processes
 * will map and may scribble over.  glibc's robust mutexes keep list pointers inside the
 * mutex that glibc writes through, so a scribbled mutex could make the reader write anywhere;
 * this word is only ever compared and exchanged.
 *
 * Fairness: an unlock that finds sleepers hands the lock to one of them (HANDOFF) instead of
 * freeing it, so a thread that releases and retakes the lock in a loop cannot starve a
 * sleeper; spinners take only a free lock.  A waiter therefore waits for the sections of the
 * threads queued before it, never for an unbounded number of barging ones. */
#ifndef ET_LOCK_H
#define ET_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct et_lock {
    _Atomic uint32_t word;
} et_lock;

#define ET_LOCK_TID_MASK 0x3fffffffu
#define ET_LOCK_HANDOFF 0x40000000u
#define ET_LOCK_WAITERS 0x80000000u

/* The calling thread's kernel tid, cached in TLS on first use. */
uint32_t et__tid(void);
/* Re-read the tid (a fork child's forking thread: its copy of the cache is the parent's). */
void et__tid_refresh(void);

void et__lock_slow(et_lock *l, uint32_t me);
void et__unlock_slow(et_lock *l);

static inline void et__lock(et_lock *l) {
    const uint32_t me = et__tid();
    uint32_t expected = 0;
    if (__builtin_expect(atomic_compare_exchange_strong_explicit(
                             &l->word, &expected, me, memory_order_acquire, memory_order_relaxed),
                         1))
        return;
    et__lock_slow(l, me);
}

static inline void et__unlock(et_lock *l) {
    uint32_t expected = et__tid(); /* held, nobody asleep */
    if (__builtin_expect(atomic_compare_exchange_strong_explicit(
                             &l->word, &expected, 0, memory_order_release, memory_order_relaxed),
                         1))
        return;
    et__unlock_slow(l);
}

/* The dead-owner hook in its simplest form, with a tid as the owner: like et__lock, but a
 * waiter that has slept timeout_ns without the word changing checks the owner with
 * kill(tid, 0); if that tid no longer exists it takes the lock and returns true, and the
 * caller must repair what the dead owner left half-done.  Returns false after an ordinary
 * acquisition; timeout_ns 0 never steals.  Shared recorders use et__lock_shared (below);
 * private ones never steal, as an owner cannot die while the process lives. */
bool et__lock_or_steal(et_lock *l, uint64_t timeout_ns);

/* The shared segments' acquisition: a lock taken as `me` (not necessarily a tid: see
 * ET_LOCK_BY_SLOT) that is stolen from an owner found dead after steal_after_ns without the
 * word changing, and given up after give_up_ns (0: never), so that an agent never waits on a
 * live but stuck holder.  dead(ctx, owner) says whether an owner is gone; NULL: kill(owner,
 * 0) == ESRCH.  Returns ET_LOCK_TAKEN, ET_LOCK_STOLEN (the caller repairs) or
 * ET_LOCK_GAVE_UP (not held).  A waiter woken for a hand-off always takes it, deadline or
 * not: nobody else would. */
enum { ET_LOCK_TAKEN = 0, ET_LOCK_STOLEN = 1, ET_LOCK_GAVE_UP = -1 };
typedef bool (*et_lock_dead_fn)(void *ctx, uint32_t owner);
int et__lock_shared(et_lock *l, uint32_t me, uint64_t steal_after_ns, uint64_t give_up_ns,
                    et_lock_dead_fn dead, void *ctx);
/* Release a lock taken with et__lock_shared, whatever value it was taken as (only its holder
 * calls this). */
void et__unlock_any(et_lock *l);

/* An owner value that is not a tid (tids stay below 2^22): bit 29 set, and in the low bits
 * which OFD lock byte of the segment's file its process holds (0: the agent's, 1 + i: slot
 * i's).  Such an owner is checked through that lock, which works across pid namespaces and
 * never confuses a reused pid. */
#define ET_LOCK_BY_SLOT 0x20000000u

/* The owner's tid (or ET_LOCK_BY_SLOT value), 0 when free or handed off (for tests and
 * diagnostics). */
static inline uint32_t et__lock_owner(const et_lock *l) {
    const uint32_t v = atomic_load_explicit(&((et_lock *)l)->word, memory_order_relaxed);
    return v == ET_LOCK_HANDOFF ? 0 : (v & ET_LOCK_TID_MASK);
}

/* A fork child: the parent's threads do not exist here, so whatever they held is free. */
static inline void et__lock_reset(et_lock *l) {
    atomic_store_explicit(&l->word, 0, memory_order_relaxed);
}

#endif
