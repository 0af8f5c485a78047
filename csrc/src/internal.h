/* Internal structures shared by the core's translation units.  Nothing here is public. */
#ifndef ET_INTERNAL_H
#define ET_INTERNAL_H

#include "edgetelemetry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define ET_CACHE_LINE 64
#define ET_LIKELY(x) __builtin_expect(!!(x), 1)
#define ET_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A ring is FREE or OWNED by a live thread.  An exiting thread frees its ring at once: any
 * records it left are drained like everyone's, whoever owns the ring next. */
enum { RING_FREE = 0, RING_OWNED = 1 };

typedef struct et_entry {
    uint32_t series;
    uint32_t reserved;
    double value;
} et_entry;

/* One producer's single-producer / single-consumer ring.  The producer's line and the
 * consumer's line are apart so that neither side's writes evict the other's. */
typedef struct et_ring {
    /* producer line: written only by the owning thread */
    _Alignas(ET_CACHE_LINE) _Atomic uint64_t head;
    uint64_t cached_limit;       /* producer's last look at tail, plus capacity: head may
                                  * advance to it without looking again (one compare) */
    et_entry *entries;
    uint64_t capacity;
    uint64_t mask;
    _Atomic uint64_t *full_drops; /* per series, single writer: load + store, no RMW */

    /* consumer line: written only by the collector */
    _Alignas(ET_CACHE_LINE) _Atomic uint64_t tail;
    uint64_t *full_drops_seen;   /* per series: what the collector has already counted */

    /* ownership line: changes when a thread claims the ring or exits */
    _Alignas(ET_CACHE_LINE) _Atomic uint32_t state;
    _Atomic uintptr_t owner;     /* thread token of the owner, 0 when none */
} et_ring;

/* One series' aggregate for the open window.  Collector-only.  Two cache lines exactly, so
 * the drain loop finds a series' aggregate with a shift. */
typedef struct et_aggregate {
    _Alignas(ET_CACHE_LINE) uint64_t count;
    double sum, min, max;
    uint64_t zero;
    uint64_t rejected_nan, rejected_inf;
    uint64_t seen;               /* count + rejections at the end of the last drain pass: a
                                  * pass that changes them stamps the series' drain times */
    int64_t first_mono_ns, last_mono_ns, first_wall_ns, last_wall_ns;
    uint32_t *buckets;           /* 2 * buckets_per_sign: positive, then negative */
    uint32_t *own_buckets;       /* the series' array; buckets points at the sink when full */
} et_aggregate;

#define ET_OUTLIER UINT32_MAX
_Static_assert(sizeof(et_aggregate) == 2 * ET_CACHE_LINE, "et_aggregate: two cache lines");

/* Counters any thread may bump (atomic read-modify-write, off the hot path). */
typedef struct et_shared_counters {
    _Atomic uint64_t rejected_type;
    _Atomic uint64_t dropped_no_ring;
    _Atomic uint64_t dropped_closed;
} et_shared_counters;

typedef struct et_series_names {
    const char *model, *version, *metric, *dimension;
} et_series_names;

struct et_recorder {
    uint64_t id;                 /* unique per recorder in the process: keys the thread cache */
    et_config config;
    uint64_t memory_bytes;

    /* histogram layout */
    uint32_t buckets_per_sign;
    uint32_t exponent_lo;        /* biased exponent of 2^min_exponent */
    uint32_t edges[256];
    uint8_t sub_bucket_of[1u << ET_MANTISSA_BITS];
    /* by a double's top 12 bits (sign and exponent): the index of its octave's first bucket,
     * or ET_OUTLIER for zero/subnormal, out-of-range, NaN and Inf (the slow path) */
    uint32_t octave_base[1u << 12];
    double relative_error;

    et_ring *rings;

    /* registry: et_series_add appends under registry_lock; readers load series_count */
    pthread_mutex_t registry_lock;
    _Atomic uint32_t series_count;
    et_series_names *names;
    char *name_arena;
    uint32_t name_arena_used;
    et_shared_counters *shared;  /* per series */
    _Atomic uint64_t unknown_dropped; /* records for ids >= max_series dropped by producers
                                       * (ring full, no ring): part of unknown_series */

    /* collector: everything below is guarded by collector_lock */
    pthread_mutex_t collector_lock;
    et_aggregate *aggregates;
    uint32_t *sink_buckets;      /* absorbs a series' buckets once a window nears 2^32 */
    uint64_t pass;
    uint64_t records_drained;
    uint64_t unknown_series;
    uint32_t ring_high_water;
    uint32_t last_pass_fill_max; /* most records pending in one ring at the last pass */
    uint64_t window_seq;
    int64_t window_start_mono_ns, window_start_wall_ns;

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

/* record.c */
uintptr_t et__this_thread_token(void);
void et__thread_cache_forget(void);

/* recorder.c */
void et__live_lock(void);
void et__live_unlock(void);
int et__register_thread_exit(void);
int64_t et__now_ns(int clock_id);

/* collect.c */
void et__drain_locked(et_recorder *rec);
void et__reset_window_locked(et_recorder *rec);
void et__thread_forget_after_fork(et_recorder *rec);

#endif
