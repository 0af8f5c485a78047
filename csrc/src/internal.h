/* Internal structures shared by the core's translation units.  Nothing here is public.
 *
 * A recorder is two parts:
 *   - the REGION: one contiguous, 64-byte aligned block holding everything producers and the
 *     collector read or write (header, locks, rings and their entries, the registry and its
 *     names, both aggregate sets with their page pools, shared counters).  Nothing inside it
 *     is a pointer: parts are found at offsets computed from the configuration (et_layout),
 *     so the same bytes could be mapped at another address by another process.
 *   - the HANDLE (struct et_recorder): process-local pointers derived from the layout, the
 *     lookup tables derived from the configuration, the collector thread's state.
 * Every index read from the region (ring head/tail, entry series ids, page-table entries,
 * touched lists, counts) is checked against the handle's own copy of the configuration
 * before it is used to address memory: the region is data, never trusted. */
#ifndef ET_INTERNAL_H
#define ET_INTERNAL_H

#include "edgetelemetry.h"
#include "lock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define ET_CACHE_LINE 64
#define ET_LIKELY(x) __builtin_expect(!!(x), 1)
#define ET_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define ET_REGION_MAGIC 0x4e4f494745525445ull /* "ETREGION" in memory order */
#define ET_LAYOUT_VERSION 1u

/* ---- rings ---- */

/* A ring is FREE or OWNED by a live thread.  An exiting thread frees its ring at once: any
 * records it left are drained like everyone's, whoever owns the ring next. */
enum { RING_FREE = 0, RING_OWNED = 1 };

typedef struct et_entry {
    uint32_t series;
    uint32_t reserved;
    double value;
} et_entry;

/* One producer's single-producer / single-consumer ring; its capacity entries follow it.  The
 * consumer is whoever holds the aggregate lock: the collector, or the owner itself when it
 * finds its ring full.  The producer's and the consumer's lines are apart so that neither
 * side's writes evict the other's. */
typedef struct et_ring {
    /* producer line: written only by the owning thread */
    _Alignas(ET_CACHE_LINE) _Atomic uint64_t head;
    uint64_t cached_limit; /* producer's last look at tail, plus capacity: head may advance
                            * to it without looking again (one compare) */
    /* consumer line: written under the aggregate lock */
    _Alignas(ET_CACHE_LINE) _Atomic uint64_t tail;
    /* ownership line: changes when a thread claims the ring or exits */
    _Alignas(ET_CACHE_LINE) _Atomic uint32_t state;
    _Atomic uint32_t owner; /* kernel tid of the owner, 0 when none */
} et_ring;

static inline et_entry *et__ring_entries(et_ring *ring) { return (et_entry *)(ring + 1); }

/* ---- the registry ---- */

/* A series' names live in the arena as "model\0version\0metric\0dimension\0unit\0". */
typedef struct et_series_rec {
    uint32_t name_off, name_len; /* the five strings: arena offset, bytes with the NULs */
    uint32_t hash;               /* of model, version, metric, dimension (not the unit) */
    uint32_t next;               /* next series id + 1 in the hash chain, 0 at the end */
} et_series_rec;

/* Counters any thread may bump without the aggregate lock (atomic adds): the binding's
 * type rejections and drops, and a record made re-entrantly (a signal handler that records
 * while its thread is inside a drain).  The next holder of the aggregate lock folds them
 * into the active set (et__fold_pending), so windows take them from the sets like the rest. */
typedef struct et_shared_counters {
    _Atomic uint64_t rejected_type;
    _Atomic uint64_t dropped[ET_DROP_REASONS];
} et_shared_counters;

/* ---- aggregate sets ---- */

/* One series' aggregate in one set, followed by its page table: one entry per (sign, octave)
 * slot plus one for the values that have no octave (zero, out of range, NaN, Inf).
 * A page-table entry is
 *   ET_NO_PAGE         no page yet (all ones: what a reset writes)
 *   a word offset      of the slot's page in the set's pool
 *   ET_COARSE | n      the pool was empty when the slot was first needed: n values with
 *                      only octave precision
 * so that "entry < page_limit" is the one check the drain loop makes per value: no page, a
 * coarse slot, the outlier slot and a corrupt entry all fail it and take the slow path. */
#define ET_NO_PAGE UINT64_MAX
#define ET_COARSE (1ull << 63)

typedef struct et_aggregate {
    /* what every value updates */
    _Alignas(ET_CACHE_LINE) uint64_t count;
    double sum, min, max;
    int64_t last_mono_ns;
    uint64_t zero;
    uint64_t rejected_nan, rejected_inf;
    /* the rest: written rarely */
    int64_t first_mono_ns;
    uint64_t coarse;   /* values counted with octave precision only */
    uint64_t rejected_type;
    uint64_t dropped[ET_DROP_REASONS];
    uint32_t touched;  /* listed in the set's touched list */
    uint32_t reserved;
    uint64_t pages[];  /* the page table: et_recorder.slots entries */
} et_aggregate;

_Static_assert(sizeof(et_aggregate) == 2 * ET_CACHE_LINE, "et_aggregate: two cache lines");

/* A set's header; its touched list, aggregates and page pool follow at layout offsets. */
typedef struct et_set {
    _Alignas(ET_CACHE_LINE) uint32_t pages_used; /* bump allocator over the pool */
    uint32_t touched_count;  /* series in the touched list */
    uint32_t coarse_slots;   /* page-table entries that went coarse (one bucket each) */
    uint32_t reserved;
    uint64_t fill;           /* values aggregated: while fill stays below 2^32 - 1, no
                              * bucket can overflow, and the drain needs no check */
    uint64_t names_bytes;    /* names of the touched series: what a window copies */
} et_set;

/* ---- the region's header ---- */

typedef struct et_region {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_bytes;
    uint64_t region_bytes;
    et_config config; /* as resolved at creation */

    /* the aggregate lock: whoever aggregates (collector, a producer draining its own ring or
     * aggregating a batch or an overflow record, a window flip) holds it */
    _Alignas(ET_CACHE_LINE) et_lock agg_lock;
    /* guarded by agg_lock */
    uint32_t active;             /* the set being written: 0 or 1 */
    uint32_t ring_high_water;
    uint64_t records_drained;
    uint64_t unknown_series;
    uint64_t full_drains;        /* a producer found its ring full and drained it */
    uint64_t direct_values;      /* values aggregated by their producer, past the rings */
    uint64_t pool_exhausted;     /* slots that went coarse: the page pool was empty */
    uint64_t integrity_errors;   /* indexes in the region found out of bounds, refused */
    uint32_t pages_high_water;
    uint32_t reserved0;

    _Alignas(ET_CACHE_LINE) et_lock registry_lock;
    _Atomic uint32_t series_count; /* published with release once a series is complete */
    uint32_t arena_used;           /* guarded by registry_lock */

    _Alignas(ET_CACHE_LINE) et_lock close_lock; /* serialises window closes */
    _Atomic uint64_t window_seq;
    int64_t window_start_mono_ns, window_start_wall_ns; /* guarded by close_lock */
    _Atomic uint64_t passes;

    /* lock-free counters: set pending after bumping one, folded under agg_lock */
    _Alignas(ET_CACHE_LINE) _Atomic uint32_t pending;
    _Atomic uint64_t unknown_pending; /* lock-free counts for ids no series has */
} et_region;

/* Where each part of the region starts, and the sizes that address it.  A pure function of
 * the configuration (et__layout): issue 14's attaching processes recompute it. */
typedef struct et_layout {
    uint64_t rings, ring_stride;
    uint64_t series, hash, arena, shared, dirty;
    uint64_t sets[2];
    uint64_t touched, aggregates, pool; /* offsets within a set */
    uint64_t agg_stride;
    uint64_t total;
    uint32_t hash_mask, slots, page_words, pages;
} et_layout;

struct et_recorder {
    uint64_t id;                 /* first: the hot path compares it with the thread's cache */
    et_region *region;
    et_config config;            /* the collector's own copy: bounds every index */
    et_layout layout;
    uint64_t memory_bytes;

    /* derived pointers into the region */
    char *rings;
    et_series_rec *series;
    uint32_t *hash;
    char *arena;
    et_shared_counters *shared;
    _Atomic uint64_t *dirty;     /* bitmap: series whose shared counters moved */
    et_set *sets[2];
    uint32_t *touched[2];
    char *aggregates[2];
    uint32_t *pools[2];
    uint64_t page_limit;         /* a page offset is valid below this */

    /* histogram layout */
    uint32_t buckets_per_sign;
    uint32_t exponent_lo;        /* biased exponent of 2^min_exponent */
    uint32_t outlier_slot;       /* the page-table slot with no octave: always 0 */
    uint32_t edges[256];
    uint8_t sub_bucket_of[1u << ET_MANTISSA_BITS];
    /* by a double's top 12 bits (sign and exponent): its (sign, octave) slot, or
     * outlier_slot for zero/subnormal, out-of-range, NaN and Inf */
    uint16_t slot_of[1u << 12];
    double relative_error;

    /* background collector thread; lifecycle_lock serialises et_collector_start/stop (held
     * across pthread_create and pthread_join, never taken by the collector thread) */
    pthread_mutex_t lifecycle_lock;
    pthread_mutex_t thread_lock;
    pthread_cond_t thread_wake;
    pthread_t thread;
    bool thread_running;
    bool thread_stop;
    uint64_t period_max_ns;
    _Atomic uint64_t period_now_ns;

    /* process-wide list of live recorders (thread exit and fork walk it) */
    struct et_recorder *next_live;
};

static inline et_ring *et__ring(const et_recorder *rec, uint32_t i) {
    return (et_ring *)(rec->rings + (uint64_t)i * rec->layout.ring_stride);
}

static inline et_aggregate *et__agg(const et_recorder *rec, uint32_t set, uint32_t series) {
    return (et_aggregate *)(rec->aggregates[set] + (uint64_t)series * rec->layout.agg_stride);
}

/* An empty aggregate: no values, no pages. */
static inline void et__agg_clear(const et_recorder *rec, et_aggregate *agg) {
    memset(agg, 0, sizeof *agg);
    agg->min = __builtin_inf();
    agg->max = -__builtin_inf();
    memset(agg->pages, 0xff, (size_t)rec->layout.slots * sizeof(uint64_t)); /* ET_NO_PAGE */
}

/* The registered series count, never more than the configuration allows. */
static inline uint32_t et__series_count(const et_recorder *rec) {
    const uint32_t n = atomic_load_explicit(&rec->region->series_count, memory_order_acquire);
    return n <= rec->config.max_series ? n : rec->config.max_series;
}

/* record.c */
void et__thread_cache_forget(void);

/* recorder.c */
void et__live_lock(void);
void et__live_unlock(void);
int et__register_thread_exit(void);
int64_t et__now_ns(int clock_id);

/* aggregate.c: everything below runs under the aggregate lock (et__agg_enter) */
/* Take the aggregate lock, and mark this thread as holding it for this recorder, so that a
 * signal handler recording meanwhile drops (counted) instead of deadlocking. */
uint64_t et__agg_enter(et_recorder *rec);
void et__agg_leave(et_recorder *rec, uint64_t previous); /* what et__agg_enter returned */
/* This thread holds (or is taking) rec's aggregate lock. */
bool et__agg_held(const et_recorder *rec);
/* Drain one ring into the active set; returns the records it held. */
uint64_t et__drain_ring(et_recorder *rec, et_ring *ring, int64_t now);
/* Aggregate n values of one series straight into the active set (a batch past the ring). */
void et__aggregate_batch(et_recorder *rec, uint32_t series, const double *values, size_t n,
                         int64_t now);
/* Aggregate values[i] into series_ids[i] straight into the active set (a group, or one
 * record of a thread without a ring). */
void et__aggregate_group(et_recorder *rec, const uint32_t *series_ids, const double *values,
                         size_t n, int64_t now);
/* Move the lock-free counters into the active set. */
void et__fold_pending(et_recorder *rec);
/* Count without the lock: a drop or type rejection of n values of one series. */
void et__count_lock_free(et_recorder *rec, uint32_t series, int what, uint64_t n);
#define ET_COUNT_REJECT_TYPE (-1) /* `what` for et__count_lock_free; else a drop reason */
/* Reset a set to empty (only what its touched list names, and the bump allocator). */
void et__reset_set(et_recorder *rec, uint32_t set);

/* collect.c */
void et__thread_forget_after_fork(et_recorder *rec, uint32_t parent_tid);

#endif
