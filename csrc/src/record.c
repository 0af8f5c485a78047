/* The producer side: the hot path and the slow path that gives a thread its ring. */
#include "internal.h"

#include <string.h>

/* Each thread remembers its ring for the recorder it used last.  initial-exec TLS keeps the
 * lookup to one segment-relative load even when the core lives in a dlopen()ed module. */
typedef struct et_thread_cache {
    uint64_t recorder_id;
    et_ring *ring;
} et_thread_cache;

static _Thread_local et_thread_cache thread_cache __attribute__((tls_model("initial-exec")));
/* Its address identifies the thread while it lives. */
static _Thread_local char thread_token __attribute__((tls_model("initial-exec")));

uintptr_t et__this_thread_token(void) { return (uintptr_t)&thread_token; }

/* The thread's rings were given back (it is exiting): a later record, from a destructor that
 * runs after ours, must claim a ring again rather than write into one another thread may
 * own by now. */
void et__thread_cache_forget(void) {
    thread_cache.recorder_id = 0; /* recorder ids start at 1 */
    thread_cache.ring = NULL;
}

static et_ring *claim_ring(et_recorder *rec) {
    const uintptr_t me = (uintptr_t)&thread_token;
    const uint32_t n = rec->config.max_threads;
    for (uint32_t i = 0; i < n; i++) { /* a thread that alternates between recorders */
        et_ring *ring = &rec->rings[i];
        if (atomic_load_explicit(&ring->owner, memory_order_relaxed) == me &&
            atomic_load_explicit(&ring->state, memory_order_acquire) == RING_OWNED)
            return ring;
    }
    if (et__register_thread_exit() != ET_OK) return NULL; /* could not learn of our exit */
    for (uint32_t i = 0; i < n; i++) {
        et_ring *ring = &rec->rings[i];
        uint32_t expected = RING_FREE;
        if (atomic_compare_exchange_strong_explicit(&ring->state, &expected, RING_OWNED,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            atomic_store_explicit(&ring->owner, me, memory_order_relaxed);
            /* the previous owner's records may still be pending: look where tail is */
            ring->cached_limit =
                atomic_load_explicit(&ring->tail, memory_order_acquire) + ring->capacity;
            return ring;
        }
    }
    return NULL;
}

static et_ring *ring_slow(et_recorder *rec) {
    et_ring *ring = claim_ring(rec);
    if (ring != NULL) {
        thread_cache.recorder_id = rec->id;
        thread_cache.ring = ring;
    }
    return ring;
}

/* A dropped record whose id no series can have is still counted, as unknown_series. */
static void drop_unknown(et_recorder *rec, uint64_t n) {
    atomic_fetch_add_explicit(&rec->unknown_dropped, n, memory_order_relaxed);
}

static int drop_no_ring(et_recorder *rec, uint32_t series_id, uint64_t n) {
    if (series_id < rec->config.max_series)
        atomic_fetch_add_explicit(&rec->shared[series_id].dropped_no_ring, n,
                                  memory_order_relaxed);
    else
        drop_unknown(rec, n);
    return ET_ENORING;
}

static void drop_ring_full(et_recorder *rec, et_ring *ring, uint32_t series_id, uint64_t n) {
    /* single writer: a plain load + store is exact and cheaper than an atomic add */
    if (series_id < rec->config.max_series) {
        uint64_t v = atomic_load_explicit(&ring->full_drops[series_id], memory_order_relaxed);
        atomic_store_explicit(&ring->full_drops[series_id], v + n, memory_order_relaxed);
    } else {
        drop_unknown(rec, n);
    }
}

static inline void push(et_ring *ring, uint64_t head, uint32_t series_id, double value) {
    et_entry *e = &ring->entries[head & ring->mask];
    e->series = series_id;
    e->value = value;
    atomic_store_explicit(&ring->head, head + 1, memory_order_release);
}

/* The slow paths are separate functions that et_record tail-calls, so that its fast path
 * needs no stack frame (bench/callgrind_gate.sh counts its instructions). */

/* Full as far as the producer's cached view of tail goes: look at tail again. */
static __attribute__((noinline)) int record_full(et_recorder *rec, et_ring *ring,
                                                 uint32_t series_id, double value,
                                                 uint64_t head) {
    ring->cached_limit = atomic_load_explicit(&ring->tail, memory_order_acquire) + ring->capacity;
    if (head >= ring->cached_limit) {
        drop_ring_full(rec, ring, series_id, 1);
        return ET_ERINGFULL;
    }
    push(ring, head, series_id, value);
    return ET_OK;
}

/* This thread's cached ring is for another recorder, or it has none yet. */
static __attribute__((noinline)) int record_claim(et_recorder *rec, uint32_t series_id,
                                                  double value) {
    et_ring *ring = ring_slow(rec);
    if (ring == NULL) return drop_no_ring(rec, series_id, 1);
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

int64_t et_record_many(et_recorder *rec, uint32_t series_id, const double *values, size_t n) {
    if (n == 0) return 0;
    if (values == NULL) return ET_EINVAL;
    et_ring *ring = thread_cache.ring;
    if (ET_UNLIKELY(thread_cache.recorder_id != rec->id)) {
        ring = ring_slow(rec);
        if (ring == NULL) return drop_no_ring(rec, series_id, n);
    }
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    uint64_t room = ring->cached_limit - head;
    if (room < n) {
        ring->cached_limit =
            atomic_load_explicit(&ring->tail, memory_order_acquire) + ring->capacity;
        room = ring->cached_limit - head;
    }
    const uint64_t take = n < room ? n : room;
    /* two straight runs instead of a mask per value: the ring may wrap once */
    const uint64_t start = head & ring->mask;
    const uint64_t first = take < ring->capacity - start ? take : ring->capacity - start;
    et_entry *e = ring->entries + start;
    for (uint64_t i = 0; i < first; i++) {
        e[i].series = series_id;
        e[i].value = values[i];
    }
    e = ring->entries;
    for (uint64_t i = first; i < take; i++) {
        e[i - first].series = series_id;
        e[i - first].value = values[i];
    }
    atomic_store_explicit(&ring->head, head + take, memory_order_release);
    if (take < n) drop_ring_full(rec, ring, series_id, n - take);
    return (int64_t)take;
}

static inline void push_group(et_ring *ring, uint64_t head, const uint32_t *series_ids,
                              const double *values, size_t n) {
    /* locals: the entries' stores could alias the ring's own fields as far as C knows */
    et_entry *const entries = ring->entries;
    const uint64_t mask = ring->mask;
    const uint64_t start = head & mask;
    if (ET_LIKELY(start + n <= ring->capacity)) { /* a straight run, no mask per value */
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

/* No ring for this recorder yet, or full as far as the cached view of tail goes. */
static __attribute__((noinline)) int64_t record_group_slow(et_recorder *rec,
                                                           const uint32_t *series_ids,
                                                           const double *values, size_t n) {
    et_ring *ring = thread_cache.ring;
    if (thread_cache.recorder_id != rec->id) {
        ring = ring_slow(rec);
        if (ring == NULL) {
            for (size_t i = 0; i < n; i++) drop_no_ring(rec, series_ids[i], 1);
            return ET_ENORING;
        }
    }
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    if (ring->cached_limit - head < n) {
        ring->cached_limit =
            atomic_load_explicit(&ring->tail, memory_order_acquire) + ring->capacity;
        /* all or none: one inference's values are never split by a drop */
        if (ring->cached_limit - head < n) {
            for (size_t i = 0; i < n; i++) drop_ring_full(rec, ring, series_ids[i], 1);
            return ET_ERINGFULL;
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
    if (rec == NULL || series_id >= rec->config.max_series) return ET_ENOSERIES;
    if (reason != ET_REJECT_TYPE) return ET_EINVAL; /* NaN and Inf are counted at drain */
    atomic_fetch_add_explicit(&rec->shared[series_id].rejected_type, 1, memory_order_relaxed);
    return ET_OK;
}

int et_count_drop(et_recorder *rec, uint32_t series_id, int reason) {
    if (rec == NULL || series_id >= rec->config.max_series) return ET_ENOSERIES;
    if (reason == ET_DROP_CLOSED)
        atomic_fetch_add_explicit(&rec->shared[series_id].dropped_closed, 1,
                                  memory_order_relaxed);
    else if (reason == ET_DROP_NO_RING)
        atomic_fetch_add_explicit(&rec->shared[series_id].dropped_no_ring, 1,
                                  memory_order_relaxed);
    else
        return ET_EINVAL; /* ring-full drops are counted by the ring's owner only */
    return ET_OK;
}
