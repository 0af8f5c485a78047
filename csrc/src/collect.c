/* The consumer side: drain rings into aggregates, close windows, the background collector. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct et_window {
    uint64_t seq;
    int64_t start_mono_ns, end_mono_ns, start_wall_ns, end_wall_ns;
    uint32_t series_count;
    et_series_names *names;
    char *name_bytes;   /* the names, copied: a window outlives its recorder if need be */
    et_series_stats *stats;
    uint32_t **indexes; /* per series, stats[i].buckets long */
    uint64_t **counts;
};

/* ---- aggregation ---- */

static void reset_aggregate(et_aggregate *agg, size_t bucket_bytes) {
    uint32_t *own = agg->own_buckets;
    if (agg->count) memset(own, 0, bucket_bytes);
    memset(agg, 0, sizeof *agg);
    agg->own_buckets = own;
    agg->buckets = own;
    agg->min = __builtin_inf();
    agg->max = -__builtin_inf();
}

void et__reset_window_locked(et_recorder *rec) {
    const size_t bucket_bytes = (size_t)2 * rec->buckets_per_sign * sizeof(uint32_t);
    for (uint32_t i = 0; i < rec->config.max_series; i++)
        reset_aggregate(&rec->aggregates[i], bucket_bytes);
    rec->window_start_mono_ns = et__now_ns(CLOCK_MONOTONIC);
    rec->window_start_wall_ns = et__now_ns(CLOCK_REALTIME);
}

/* Everything but the common case: zero and subnormal magnitudes, values above the tracked
 * range (the sign's top bucket; min/max stay exact), NaN and Inf (rejected). */
static __attribute__((noinline)) void aggregate_outlier(const et_recorder *rec,
                                                        et_aggregate *agg, double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    const uint32_t exponent = (uint32_t)(bits >> 52) & 0x7ff;
    if (exponent == 0x7ff) {
        if (bits & 0xfffffffffffffull)
            agg->rejected_nan++;
        else
            agg->rejected_inf++;
        return;
    }
    if (exponent < rec->exponent_lo) {
        agg->zero++;
    } else {
        const uint32_t sign_offset = (uint32_t)(bits >> 63) * rec->buckets_per_sign;
        agg->buckets[sign_offset + rec->buckets_per_sign - 1]++;
    }
    agg->count++;
    agg->sum += value;
    if (value < agg->min) agg->min = value;
    if (value > agg->max) agg->max = value;
}

/* The per-record work.  The top 12 bits (sign, exponent) find the octave's first bucket and
 * the next ET_MANTISSA_BITS the bucket within it, by two table lookups: no log(), no branch
 * on the sign.  Anything the first table does not map goes to aggregate_outlier. */
static inline void aggregate_value(const et_recorder *rec, const uint32_t *octave_base,
                                   const uint8_t *sub_bucket_of, et_aggregate *agg,
                                   double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    const uint32_t base = octave_base[bits >> 52];
    if (ET_UNLIKELY(base == ET_OUTLIER)) {
        aggregate_outlier(rec, agg, value);
        return;
    }
    const size_t sub = sub_bucket_of[(bits >> (52 - ET_MANTISSA_BITS)) &
                                     ((1u << ET_MANTISSA_BITS) - 1)];
    agg->buckets[(size_t)base + sub]++;
    agg->count++;
    /* New extremes are rare: two predictable branches beat two min/max stores.  Written as
     * !(>=) since value is never NaN here, which lets the compare take min from memory.
     * The sum comes last so the addition may consume value. */
    if (!(value >= agg->min)) agg->min = value;
    if (value > agg->max) agg->max = value;
    agg->sum += value;
}

/* Records pending in all rings bound what one pass can add to one series. */
static void guard_bucket_overflow(et_recorder *rec, uint32_t series, uint64_t pending) {
    for (uint32_t i = 0; i < series; i++) {
        et_aggregate *agg = &rec->aggregates[i];
        if (agg->buckets != rec->sink_buckets && agg->count + pending >= UINT32_MAX)
            agg->buckets = rec->sink_buckets; /* quantiles degrade, exact stats go on */
    }
}

/* Aggregate n consecutive entries.  *series_io is the registered series count, refreshed
 * when an entry names a series past it: the series may have been registered after this pass
 * loaded the count but before the record was made, and the acquire on the ring's head makes
 * the newer count visible. */
static void drain_run(et_recorder *rec, const et_entry *e, uint64_t n, uint32_t *series_io) {
    /* the tables and the aggregates' base in locals: stores into aggregates cannot force
     * reloads of them */
    const uint32_t *const octave_base = rec->octave_base;
    const uint8_t *const sub_bucket_of = rec->sub_bucket_of;
    et_aggregate *const aggregates = rec->aggregates;
    uint32_t series = *series_io;
    for (const et_entry *end = e + n; e != end; e++) {
        const uint32_t id = e->series;
        if (ET_UNLIKELY(id >= series)) {
            series = atomic_load_explicit(&rec->series_count, memory_order_acquire);
            *series_io = series;
            if (id >= series) {
                rec->unknown_series++;
                continue;
            }
        }
        aggregate_value(rec, octave_base, sub_bucket_of, &aggregates[id], e->value);
    }
}

/* Free rings are drained too: an exited thread's last records wait there for us. */
static void drain_ring(et_recorder *rec, et_ring *ring, uint32_t *series_io) {
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
    const uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
    const uint64_t pending = head - tail;
    if (pending == 0) return;
    if (pending > rec->ring_high_water) rec->ring_high_water = (uint32_t)pending;
    if (pending > rec->last_pass_fill_max) rec->last_pass_fill_max = (uint32_t)pending;
    /* two straight runs instead of a mask per entry: the pending records wrap at most once */
    const uint64_t start = tail & ring->mask;
    const uint64_t first = pending < ring->capacity - start ? pending : ring->capacity - start;
    drain_run(rec, ring->entries + start, first, series_io);
    drain_run(rec, ring->entries, pending - first, series_io);
    rec->records_drained += pending;
    atomic_store_explicit(&ring->tail, head, memory_order_release);
}

void et__drain_locked(et_recorder *rec) {
    uint32_t series = atomic_load_explicit(&rec->series_count, memory_order_acquire);
    ++rec->pass;
    /* every record drained now was made before this instant: attribute it here */
    const int64_t mono = et__now_ns(CLOCK_MONOTONIC);
    const int64_t wall = et__now_ns(CLOCK_REALTIME);
    uint64_t pending = 0;
    for (uint32_t r = 0; r < rec->config.max_threads; r++) {
        et_ring *ring = &rec->rings[r];
        pending += atomic_load_explicit(&ring->head, memory_order_relaxed) -
                   atomic_load_explicit(&ring->tail, memory_order_relaxed);
    }
    guard_bucket_overflow(rec, series, pending);
    rec->last_pass_fill_max = 0;
    for (uint32_t r = 0; r < rec->config.max_threads; r++)
        drain_ring(rec, &rec->rings[r], &series);
    /* a series whose counts moved in this pass had records in it */
    for (uint32_t i = 0; i < series; i++) {
        et_aggregate *agg = &rec->aggregates[i];
        const uint64_t seen = agg->count + agg->rejected_nan + agg->rejected_inf;
        if (seen == agg->seen) continue;
        agg->seen = seen;
        if (agg->first_mono_ns == 0) {
            agg->first_mono_ns = mono;
            agg->first_wall_ns = wall;
        }
        agg->last_mono_ns = mono;
        agg->last_wall_ns = wall;
    }
}

int et_collect(et_recorder *rec) {
    if (rec == NULL) return ET_EINVAL;
    pthread_mutex_lock(&rec->collector_lock);
    et__drain_locked(rec);
    pthread_mutex_unlock(&rec->collector_lock);
    return ET_OK;
}

/* ---- windows ---- */

static uint64_t take_ring_full_drops(et_recorder *rec, uint32_t series_id) {
    uint64_t total = 0;
    for (uint32_t r = 0; r < rec->config.max_threads; r++) {
        et_ring *ring = &rec->rings[r];
        const uint64_t now =
            atomic_load_explicit(&ring->full_drops[series_id], memory_order_relaxed);
        total += now - ring->full_drops_seen[series_id];
        ring->full_drops_seen[series_id] = now;
    }
    return total;
}

static uint32_t count_buckets(const uint32_t *b, uint32_t n) {
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) k += b[i] != 0;
    return k;
}

void et_window_free(et_window *w) {
    if (w == NULL) return;
    for (uint32_t i = 0; i < w->series_count; i++) {
        free(w->indexes[i]);
        free(w->counts[i]);
    }
    free(w->indexes);
    free(w->counts);
    free(w->stats);
    free(w->names);
    free(w->name_bytes);
    free(w);
}

static et_window *window_alloc(const et_recorder *rec, uint32_t series) {
    /* et_series_add may be appending to the arena right now, under the registry lock this
     * thread does not hold: name_arena_used is not ours to read.  The first `series` entries
     * were published (release/acquire on series_count) and never change, and the arena is
     * filled in order, so the bytes we may copy end with the last published dimension. */
    size_t used = 0;
    if (series > 0) {
        const char *last = rec->names[series - 1].dimension;
        used = (size_t)(last - rec->name_arena) + strlen(last) + 1;
    }
    et_window *w = calloc(1, sizeof *w);
    if (w == NULL) return NULL;
    w->series_count = series;
    w->name_bytes = malloc(used ? used : 1);
    w->names = calloc(series ? series : 1, sizeof *w->names);
    w->stats = calloc(series ? series : 1, sizeof *w->stats);
    w->indexes = calloc(series ? series : 1, sizeof *w->indexes);
    w->counts = calloc(series ? series : 1, sizeof *w->counts);
    if (!w->name_bytes || !w->names || !w->stats || !w->indexes || !w->counts) {
        w->series_count = 0;
        et_window_free(w);
        return NULL;
    }
    /* series names are immutable once registered and the arena only grows: copy it whole and
     * rebase the pointers */
    memcpy(w->name_bytes, rec->name_arena, used);
    for (uint32_t i = 0; i < series; i++) {
        const et_series_names *src = &rec->names[i];
        et_series_names *dst = &w->names[i];
        dst->model = w->name_bytes + (src->model - rec->name_arena);
        dst->version = w->name_bytes + (src->version - rec->name_arena);
        dst->metric = w->name_bytes + (src->metric - rec->name_arena);
        dst->dimension = w->name_bytes + (src->dimension - rec->name_arena);
    }
    return w;
}

int et_window_close(et_recorder *rec, et_window **out) {
    if (rec == NULL || out == NULL) return ET_EINVAL;
    *out = NULL;
    pthread_mutex_lock(&rec->collector_lock);
    et__drain_locked(rec);
    const uint32_t series = atomic_load_explicit(&rec->series_count, memory_order_acquire);
    const uint32_t nb = 2 * rec->buckets_per_sign;
    et_window *w = window_alloc(rec, series);
    /* allocate every bucket array before changing anything: ENOMEM leaves the window open */
    for (uint32_t i = 0; w != NULL && i < series; i++) {
        const et_aggregate *agg = &rec->aggregates[i];
        const uint32_t k = agg->count ? count_buckets(agg->own_buckets, nb) : 0;
        w->stats[i].buckets = k;
        w->indexes[i] = malloc((k ? k : 1) * sizeof(uint32_t));
        w->counts[i] = malloc((k ? k : 1) * sizeof(uint64_t));
        if (w->indexes[i] == NULL || w->counts[i] == NULL) {
            et_window_free(w);
            w = NULL;
        }
    }
    if (w == NULL) {
        pthread_mutex_unlock(&rec->collector_lock);
        return ET_ENOMEM;
    }
    w->seq = rec->window_seq++;
    w->start_mono_ns = rec->window_start_mono_ns;
    w->start_wall_ns = rec->window_start_wall_ns;
    w->end_mono_ns = et__now_ns(CLOCK_MONOTONIC);
    w->end_wall_ns = et__now_ns(CLOCK_REALTIME);
    for (uint32_t i = 0; i < series; i++) {
        const et_aggregate *agg = &rec->aggregates[i];
        et_series_stats *st = &w->stats[i];
        st->count = agg->count;
        st->sum = agg->sum;
        st->min = agg->count ? agg->min : 0.0;
        st->max = agg->count ? agg->max : 0.0;
        st->zero = agg->zero;
        st->rejected[ET_REJECT_NAN] = agg->rejected_nan;
        st->rejected[ET_REJECT_INF] = agg->rejected_inf;
        st->rejected[ET_REJECT_TYPE] =
            atomic_exchange_explicit(&rec->shared[i].rejected_type, 0, memory_order_relaxed);
        st->dropped[ET_DROP_RING_FULL] = take_ring_full_drops(rec, i);
        st->dropped[ET_DROP_NO_RING] =
            atomic_exchange_explicit(&rec->shared[i].dropped_no_ring, 0, memory_order_relaxed);
        st->dropped[ET_DROP_CLOSED] =
            atomic_exchange_explicit(&rec->shared[i].dropped_closed, 0, memory_order_relaxed);
        st->first_mono_ns = agg->first_mono_ns;
        st->last_mono_ns = agg->last_mono_ns;
        st->first_wall_ns = agg->first_wall_ns;
        st->last_wall_ns = agg->last_wall_ns;
        uint32_t k = 0;
        for (uint32_t b = 0; b < nb && k < st->buckets; b++) {
            const uint32_t c = agg->own_buckets[b];
            if (c == 0) continue;
            w->indexes[i][k] = b;
            w->counts[i][k] = c;
            k++;
        }
    }
    et__reset_window_locked(rec);
    /* windows tile time: the next one starts exactly where this one ended */
    rec->window_start_mono_ns = w->end_mono_ns;
    rec->window_start_wall_ns = w->end_wall_ns;
    pthread_mutex_unlock(&rec->collector_lock);
    *out = w;
    return ET_OK;
}

uint64_t et_window_seq(const et_window *w) { return w ? w->seq : 0; }

void et_window_bounds(const et_window *w, int64_t *start_mono_ns, int64_t *end_mono_ns,
                      int64_t *start_wall_ns, int64_t *end_wall_ns) {
    if (w == NULL) return;
    if (start_mono_ns) *start_mono_ns = w->start_mono_ns;
    if (end_mono_ns) *end_mono_ns = w->end_mono_ns;
    if (start_wall_ns) *start_wall_ns = w->start_wall_ns;
    if (end_wall_ns) *end_wall_ns = w->end_wall_ns;
}

uint32_t et_window_series_count(const et_window *w) { return w ? w->series_count : 0; }

int et_window_series_names(const et_window *w, uint32_t i, const char **model,
                           const char **version, const char **metric, const char **dimension) {
    if (w == NULL || i >= w->series_count) return ET_ENOSERIES;
    if (model) *model = w->names[i].model;
    if (version) *version = w->names[i].version;
    if (metric) *metric = w->names[i].metric;
    if (dimension) *dimension = w->names[i].dimension;
    return ET_OK;
}

int et_window_series_stats(const et_window *w, uint32_t i, et_series_stats *out) {
    if (w == NULL || out == NULL) return ET_EINVAL;
    if (i >= w->series_count) return ET_ENOSERIES;
    *out = w->stats[i];
    return ET_OK;
}

int et_window_buckets(const et_window *w, uint32_t i, uint32_t *indexes, uint64_t *counts,
                      uint32_t capacity) {
    if (w == NULL || indexes == NULL || counts == NULL) return ET_EINVAL;
    if (i >= w->series_count) return ET_ENOSERIES;
    const uint32_t k = w->stats[i].buckets;
    if (capacity < k) return ET_EINVAL;
    memcpy(indexes, w->indexes[i], k * sizeof *indexes);
    memcpy(counts, w->counts[i], k * sizeof *counts);
    return (int)k;
}

/* ---- background collector ---- */

static void *collector_main(void *arg) {
    et_recorder *rec = arg;
    const uint64_t slowest = rec->period_max_ns, fastest = rec->period_max_ns / 8;
    uint64_t period = fastest;
    pthread_mutex_lock(&rec->thread_lock);
    while (!rec->thread_stop) {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += (time_t)(period / 1000000000u);
        deadline.tv_nsec += (long)(period % 1000000000u);
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        while (!rec->thread_stop &&
               pthread_cond_timedwait(&rec->thread_wake, &rec->thread_lock, &deadline) !=
                   ETIMEDOUT) {
        }
        if (rec->thread_stop) break;
        pthread_mutex_unlock(&rec->thread_lock);

        pthread_mutex_lock(&rec->collector_lock);
        et__drain_locked(rec);
        const uint64_t fill = rec->last_pass_fill_max;
        pthread_mutex_unlock(&rec->collector_lock);
        /* a ring an eighth full at a pass: come back sooner (the producer may be bursting,
         * and a scheduling delay must not overflow it); nearly empty: sleep longer */
        const uint64_t cap = rec->config.ring_capacity;
        if (fill * 8 > cap && period > fastest)
            period /= 2;
        else if (fill * 64 < cap && period < slowest)
            period *= 2;
        if (period < fastest) period = fastest;
        if (period > slowest) period = slowest;
        atomic_store_explicit(&rec->period_now_ns, period, memory_order_relaxed);

        pthread_mutex_lock(&rec->thread_lock);
    }
    pthread_mutex_unlock(&rec->thread_lock);
    return NULL;
}

/* Start and stop are serialised by lifecycle_lock, held across create and join: otherwise
 * two stops join one thread twice, or a start clears thread_stop before the thread being
 * stopped has seen it, and that thread (and its joiner) runs forever. */
int et_collector_start(et_recorder *rec, uint64_t period_ns) {
    if (rec == NULL || period_ns < 80000 || period_ns > 60ull * 1000000000ull) return ET_EINVAL;
    pthread_mutex_lock(&rec->lifecycle_lock);
    pthread_mutex_lock(&rec->thread_lock);
    if (rec->thread_running) {
        pthread_mutex_unlock(&rec->thread_lock);
        pthread_mutex_unlock(&rec->lifecycle_lock);
        return ET_OK;
    }
    rec->thread_stop = false;
    rec->period_max_ns = period_ns;
    atomic_store_explicit(&rec->period_now_ns, period_ns / 8, memory_order_relaxed);
    int rc = pthread_create(&rec->thread, NULL, collector_main, rec);
    rec->thread_running = rc == 0;
    if (rc != 0) atomic_store_explicit(&rec->period_now_ns, 0, memory_order_relaxed);
    pthread_mutex_unlock(&rec->thread_lock);
    pthread_mutex_unlock(&rec->lifecycle_lock);
    return rc == 0 ? ET_OK : ET_ETHREAD;
}

int et_collector_stop(et_recorder *rec) {
    if (rec == NULL) return ET_EINVAL;
    pthread_mutex_lock(&rec->lifecycle_lock);
    pthread_mutex_lock(&rec->thread_lock);
    if (!rec->thread_running) {
        pthread_mutex_unlock(&rec->thread_lock);
        pthread_mutex_unlock(&rec->lifecycle_lock);
        return ET_OK;
    }
    rec->thread_stop = true;
    pthread_cond_signal(&rec->thread_wake);
    pthread_mutex_unlock(&rec->thread_lock);
    int rc = pthread_join(rec->thread, NULL);
    pthread_mutex_lock(&rec->thread_lock);
    rec->thread_running = false;
    pthread_mutex_unlock(&rec->thread_lock);
    atomic_store_explicit(&rec->period_now_ns, 0, memory_order_relaxed);
    pthread_mutex_unlock(&rec->lifecycle_lock);
    return rc == 0 ? ET_OK : ET_ETHREAD;
}

/* In a fork child (all locks held by the forking thread): what is in the rings and the
 * aggregates was recorded by the parent, which reports it; only the forking thread exists. */
void et__thread_forget_after_fork(et_recorder *rec) {
    const uintptr_t me = et__this_thread_token();
    for (uint32_t r = 0; r < rec->config.max_threads; r++) {
        et_ring *ring = &rec->rings[r];
        atomic_store_explicit(&ring->tail, atomic_load(&ring->head), memory_order_relaxed);
        for (uint32_t s = 0; s < rec->config.max_series; s++)
            ring->full_drops_seen[s] = atomic_load(&ring->full_drops[s]);
        if (atomic_load(&ring->owner) != me) {
            atomic_store(&ring->owner, 0);
            atomic_store(&ring->state, RING_FREE);
        }
    }
    for (uint32_t s = 0; s < rec->config.max_series; s++) {
        atomic_store(&rec->shared[s].rejected_type, 0);
        atomic_store(&rec->shared[s].dropped_no_ring, 0);
        atomic_store(&rec->shared[s].dropped_closed, 0);
    }
    et__reset_window_locked(rec);
    rec->window_seq = 0;
    rec->records_drained = 0;
    rec->unknown_series = 0;
    atomic_store(&rec->unknown_dropped, 0);
    rec->ring_high_water = 0;
    rec->thread_running = false; /* the thread was not copied; its handle means nothing here */
    rec->thread_stop = false;
    atomic_store(&rec->period_now_ns, 0);
}
