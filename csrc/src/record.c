/* The producer side: the hot path, and the slow paths that give a thread its ring and keep
 * every value when the ring cannot take it (drain it ourselves, or aggregate directly). */
#include "internal.h"

#include <string.h>
#include <time.h>

/* Each thread remembers its ring for the recorder it used last, where the ring's entries
 * are and their index mask: both come from this process's configuration, not from the
 * region, so a record can never land outside the ring whatever the region holds.
 * initial-exec TLS keeps the lookup to one segment-relative load even when the core lives in
 * a dlopen()ed module. */
typedef struct et_thread_cache {
    uint64_t recorder_id;
    et_ring *ring;
    et_entry *entries;
    uint64_t mask;
} et_thread_cache;

static _Thread_local et_thread_cache thread_cache __attribute__((tls_model("initial-exec")));

/* The thread's rings were given back (it is exiting): a later record, from a destructor that
 * runs after ours, must claim a ring again rather than write into one another thread may
 * own by now. */
void et__thread_cache_forget(void) {
    thread_cache.recorder_id = 0; /* recorder ids start at 1 */
    thread_cache.ring = NULL;
    thread_cache.entries = NULL;
}

void et__thread_cache_forget_for(const et_recorder *rec) {
    if (thread_cache.recorder_id == rec->id) et__thread_cache_forget();
}

/* The ring this thread owns in rec, or a free one claimed for it.  Ownership is one word,
 * the process's slot tag (shared segments) and the thread's tid, so that a ring is only
 * ever this process's thread's, whatever tid another process's dead thread had. */
static et_ring *claim_ring(et_recorder *rec) {
    const uint32_t me = et__tid();
    uint64_t tag = 0;
    if (rec->shared) {
        tag = et__shared_slot_tag(rec);
        if (tag == 0) return NULL; /* no process slot: aggregate through the lock */
    }
    const uint64_t mine = tag | me;
    const uint32_t n = rec->config.max_threads;
    for (uint32_t i = 0; i < n; i++) { /* a thread that alternates between recorders */
        et_ring *ring = et__ring(rec, i);
        if (atomic_load_explicit(&ring->own, memory_order_acquire) == mine) return ring;
    }
    if (et__register_thread_exit() != ET_OK) return NULL; /* could not learn of our exit */
    for (uint32_t i = 0; i < n; i++) {
        et_ring *ring = et__ring(rec, i);
        uint64_t expected = 0;
        if (atomic_compare_exchange_strong_explicit(&ring->own, &expected, mine,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            /* the previous owner's records may still be pending: look where tail is */
            ring->cached_limit = atomic_load_explicit(&ring->tail, memory_order_acquire) +
                                 rec->config.ring_capacity;
            return ring;
        }
    }
    return NULL;
}

/* This thread's ring in rec, claimed if need be; NULL when max_threads others own them all. */
static et_ring *ring_slow(et_recorder *rec) {
    et_ring *ring = claim_ring(rec);
    if (ring != NULL) {
        thread_cache.recorder_id = rec->id;
        thread_cache.ring = ring;
        thread_cache.entries = et__ring_entries(ring);
        thread_cache.mask = rec->config.ring_capacity - 1;
    }
    return ring;
}

static inline void push(et_ring *ring, uint64_t head, uint32_t series_id, double value) {
    et_entry *e = thread_cache.entries + (head & thread_cache.mask);
    e->series = series_id;
    e->value = value;
    atomic_store_explicit(&ring->head, head + 1, memory_order_release);
}

/* ---- the full-ring path ----
 * A thread that finds its ring full drains it into the aggregates itself, under the
 * aggregate lock: one section of at most ring_capacity records.  Waiting for the lock means
 * waiting for the section of whoever holds it (the collector draining one ring, another
 * producer draining its own, a batch chunk, a window flip), each also at most one ring's
 * worth: docs/core.md states the bound and bench/bench.c measures it. */

/* The thread holds (or is taking) this recorder's aggregate lock: a signal handler recording
 * while its thread drains.  Waiting would deadlock, so the records are dropped and counted. */
static void drop_reentrant(et_recorder *rec, uint32_t series_id, uint64_t n) {
    et__count_lock_free(rec, series_id, ET_DROP_RING_FULL, n);
}

/* Drain this thread's own ring under the lock it holds; tail == head afterwards. */
static void drain_own(et_recorder *rec, et_ring *ring, int64_t now) {
    if (et__drain_ring(rec, ring, now)) rec->region->full_drains++;
}

/* Full as far as the producer's cached view of tail goes: look at tail again, and if the
 * ring is really full, drain it and record. */
static __attribute__((noinline)) int record_full(et_recorder *rec, et_ring *ring,
                                                 uint32_t series_id, double value,
                                                 uint64_t head) {
    const uint64_t capacity = thread_cache.mask + 1;
    ring->cached_limit = atomic_load_explicit(&ring->tail, memory_order_acquire) + capacity;
    if (head >= ring->cached_limit) {
        if (et__agg_held(rec)) {
            drop_reentrant(rec, series_id, 1);
            return ET_ERINGFULL;
        }
        const uint64_t previous = et__agg_enter(rec);
        drain_own(rec, ring, et__now_ns(CLOCK_MONOTONIC));
        et__agg_leave(rec, previous);
        ring->cached_limit = atomic_load_explicit(&ring->tail, memory_order_acquire) + capacity;
    }
    push(ring, head, series_id, value);
    return ET_OK;
}

/* No ring for this thread (max_threads others own them all, or its exit cannot be
 * observed): aggregate directly, a group in one hold of the lock, a batch in chunks of
 * ring_capacity values.  Slower than a ring, never lost. */
static int64_t record_ringless(et_recorder *rec, const uint32_t *series_ids, uint32_t one_id,
                               const double *values, size_t n) {
    if (et__agg_held(rec)) {
        for (size_t i = 0; i < n; i++) drop_reentrant(rec, series_ids ? series_ids[i] : one_id, 1);
        return series_ids ? ET_ERINGFULL : 0;
    }
    const size_t most = series_ids ? n : rec->config.ring_capacity;
    for (size_t done = 0; done < n;) {
        const size_t chunk = n - done < most ? n - done : most;
        const uint64_t previous = et__agg_enter(rec);
        const int64_t now = et__now_ns(CLOCK_MONOTONIC);
        if (series_ids != NULL)
            et__aggregate_group(rec, series_ids, values, n, now);
        else
            et__aggregate_batch(rec, one_id, values + done, chunk, now);
        et__agg_leave(rec, previous);
        done += chunk;
    }
    return (int64_t)n;
}

/* The slow paths are separate functions that et_record tail-calls, so that its fast path
 * needs no stack frame (bench/callgrind_gate.sh counts its instructions). */

/* This thread's cached ring is for another recorder, or it has none yet. */
static __attribute__((noinline)) int record_claim(et_recorder *rec, uint32_t series_id,
                                                  double value) {
    et_ring *ring = ring_slow(rec);
    if (ring == NULL)
        return record_ringless(rec, NULL, series_id, &value, 1) == 1 ? ET_OK : ET_ERINGFULL;
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    if (head >= ring->cached_limit) return record_full(rec, ring, series_id, value, head);
    push(ring, head, series_id, value);
    return ET_OK;
}

int et_record(et_recorder *rec, uint32_t series_id, double value) {
    et_ring *ring = thread_cache.ring;
    if (ET_UNLIKELY(thread_cache.recorder_id != rec->id))
        return record_claim(rec, series_id, value);
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    if (ET_UNLIKELY(head >= ring->cached_limit))
        return record_full(rec, ring, series_id, value, head);
    push(ring, head, series_id, value);
    return ET_OK;
}

/* n values of one series into the ring at head; the caller made sure they fit. */
static void push_many(et_ring *ring, uint64_t head, uint32_t series_id, const double *values,
                      uint64_t n) {
    /* two straight runs instead of a mask per value: the ring may wrap once */
    const uint64_t capacity = thread_cache.mask + 1;
    const uint64_t start = head & thread_cache.mask;
    const uint64_t first = n < capacity - start ? n : capacity - start;
    et_entry *e = thread_cache.entries + start;
    for (uint64_t i = 0; i < first; i++) {
        e[i].series = series_id;
        e[i].value = values[i];
    }
    e = thread_cache.entries;
    for (uint64_t i = first; i < n; i++) {
        e[i - first].series = series_id;
        e[i - first].value = values[i];
    }
    atomic_store_explicit(&ring->head, head + n, memory_order_release);
}

/* A batch that does not fit in the ring's free room: drain the ring first (its records are
 * older, and the sum follows record order), then aggregate the batch here, a ring's worth
 * per hold of the lock, releasing it between chunks so that other threads' waits stay one
 * chunk long. */
static __attribute__((noinline)) int64_t record_many_direct(et_recorder *rec, et_ring *ring,
                                                            uint32_t series_id,
                                                            const double *values, size_t n) {
    const uint64_t capacity = thread_cache.mask + 1;
    if (et__agg_held(rec)) { /* re-entrant: what fits goes in, the rest is counted */
        const uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
        const uint64_t room = ring->cached_limit - head;
        const uint64_t take = n < room ? n : room;
        push_many(ring, head, series_id, values, take);
        if (take < n) drop_reentrant(rec, series_id, n - take);
        return (int64_t)take;
    }
    for (size_t done = 0; done < n;) {
        const size_t chunk = n - done < capacity ? n - done : (size_t)capacity;
        const uint64_t previous = et__agg_enter(rec);
        const int64_t now = et__now_ns(CLOCK_MONOTONIC);
        if (done == 0) drain_own(rec, ring, now);
        et__aggregate_batch(rec, series_id, values + done, chunk, now);
        et__agg_leave(rec, previous);
        done += chunk;
    }
    ring->cached_limit = atomic_load_explicit(&ring->tail, memory_order_acquire) + capacity;
    return (int64_t)n;
}

int64_t et_record_many(et_recorder *rec, uint32_t series_id, const double *values, size_t n) {
    if (n == 0) return 0;
    if (values == NULL) return ET_EINVAL;
    et_ring *ring = thread_cache.ring;
    if (ET_UNLIKELY(thread_cache.recorder_id != rec->id)) {
        ring = ring_slow(rec);
        if (ring == NULL) return record_ringless(rec, NULL, series_id, values, n);
    }
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    uint64_t room = ring->cached_limit - head;
    if (room < n) {
        ring->cached_limit =
            atomic_load_explicit(&ring->tail, memory_order_acquire) + thread_cache.mask + 1;
        room = ring->cached_limit - head;
        if (room < n) return record_many_direct(rec, ring, series_id, values, n);
    }
    push_many(ring, head, series_id, values, n);
    return (int64_t)n;
}

static inline void push_group(et_ring *ring, uint64_t head, const uint32_t *series_ids,
                              const double *values, size_t n) {
    /* locals: the entries' stores could alias the ring's own fields as far as C knows */
    et_entry *const entries = thread_cache.entries;
    const uint64_t mask = thread_cache.mask;
    const uint64_t start = head & mask;
    /* a straight run, no mask per value (n == 0 takes the other loop, zero times) */
    if (ET_LIKELY(start + n - 1 <= mask)) {
        et_entry *e = entries + start;
        for (size_t i = 0; i < n; i++) {
            e[i].series = series_ids[i];
            e[i].value = values[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            et_entry *e = &entries[(head + i) & mask];
            e->series = series_ids[i];
            e->value = values[i];
        }
    }
    /* one release: the collector sees the whole group or none of it */
    atomic_store_explicit(&ring->head, head + n, memory_order_release);
}

/* No ring for this recorder yet, or full as far as the cached view of tail goes.  All or
 * none, in one window: a group that does not fit is either pushed after draining the ring,
 * or (larger than the ring) aggregated in one hold of the lock. */
static __attribute__((noinline)) int64_t record_group_slow(et_recorder *rec,
                                                           const uint32_t *series_ids,
                                                           const double *values, size_t n) {
    et_ring *ring = thread_cache.ring;
    if (thread_cache.recorder_id != rec->id) {
        ring = ring_slow(rec);
        if (ring == NULL) return record_ringless(rec, series_ids, 0, values, n);
    }
    const uint64_t capacity = thread_cache.mask + 1;
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    if (ring->cached_limit - head < n) {
        ring->cached_limit = atomic_load_explicit(&ring->tail, memory_order_acquire) + capacity;
        if (ring->cached_limit - head < n) {
            if (et__agg_held(rec)) {
                for (size_t i = 0; i < n; i++) drop_reentrant(rec, series_ids[i], 1);
                return ET_ERINGFULL;
            }
            const uint64_t previous = et__agg_enter(rec);
            const int64_t now = et__now_ns(CLOCK_MONOTONIC);
            drain_own(rec, ring, now);
            if (n > capacity) et__aggregate_group(rec, series_ids, values, n, now);
            et__agg_leave(rec, previous);
            ring->cached_limit =
                atomic_load_explicit(&ring->tail, memory_order_acquire) + capacity;
            if (n > capacity) return (int64_t)n;
        }
    }
    push_group(ring, head, series_ids, values, n);
    return (int64_t)n;
}

int64_t et_record_group(et_recorder *rec, const uint32_t *series_ids, const double *values,
                        size_t n) {
    if (ET_UNLIKELY(series_ids == NULL || values == NULL)) return n == 0 ? 0 : ET_EINVAL;
    et_ring *ring = thread_cache.ring;
    if (ET_UNLIKELY(thread_cache.recorder_id != rec->id))
        return record_group_slow(rec, series_ids, values, n);
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    if (ET_UNLIKELY(ring->cached_limit - head < n))
        return record_group_slow(rec, series_ids, values, n);
    push_group(ring, head, series_ids, values, n);
    return (int64_t)n;
}

int et_count_reject(et_recorder *rec, uint32_t series_id, int reason) {
    if (rec == NULL || series_id >= et__series_count(rec)) return ET_ENOSERIES;
    if (reason != ET_REJECT_TYPE) return ET_EINVAL; /* NaN and Inf are counted when aggregated */
    et__count_lock_free(rec, series_id, ET_COUNT_REJECT_TYPE, 1);
    return ET_OK;
}

int et_count_drop(et_recorder *rec, uint32_t series_id, int reason) {
    if (rec == NULL || series_id >= et__series_count(rec)) return ET_ENOSERIES;
    /* ring-full drops are the core's own (re-entrant records) */
    if (reason != ET_DROP_CLOSED && reason != ET_DROP_NO_RING) return ET_EINVAL;
    et__count_lock_free(rec, series_id, reason, 1);
    return ET_OK;
}
