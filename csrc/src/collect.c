/* The consumer side: drain passes, closing windows (flip the aggregate sets, build the window
 * from the closed one), window accessors, the background collector. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A closed window: one allocation, sized before the flip (see et_window_close). */
struct et_window {
    uint64_t seq;
    int64_t start_mono_ns, end_mono_ns, start_wall_ns, end_wall_ns;
    uint32_t count;               /* series listed */
    uint32_t cap_series;
    uint64_t cap_buckets, cap_names, used_buckets, used_names;
    uint32_t *ids;                /* [cap_series] */
    et_series_stats *stats;       /* [cap_series] */
    uint32_t (*name_at)[5];       /* [cap_series]: model, version, metric, dimension, unit */
    uint64_t *bucket_at;          /* [cap_series]: first of the series' buckets */
    uint32_t *indexes;            /* [cap_buckets] */
    uint64_t *counts;             /* [cap_buckets] */
    char *names;                  /* [cap_names] */
};

/* ---- drain passes ---- */

/* Drain every ring with something in it, one hold of the aggregate lock per ring, so that a
 * producer waiting to drain its own full ring waits for one ring's drain at most.  Returns
 * the most records one ring held.  The owner of a shared segment waits a bounded time for
 * the lock: when a live process holds it longer (stuck, stopped, malicious) the pass ends
 * there, counted in lock_timeouts, and *ok says so. */
static uint64_t drain_pass(et_recorder *rec, bool *ok) {
    uint64_t most = 0;
    bool folded = false;
    *ok = true;
    const bool timed = rec->owner;
    for (uint32_t i = 0; i < rec->config.max_threads; i++) {
        et_ring *ring = et__ring(rec, i);
        if (atomic_load_explicit(&ring->head, memory_order_relaxed) ==
            atomic_load_explicit(&ring->tail, memory_order_relaxed))
            continue;
        uint64_t previous;
        if (timed) {
            if (!et__agg_enter_timed(rec, &previous)) {
                *ok = false;
                return most;
            }
        } else {
            previous = et__agg_enter(rec);
        }
        /* every record drained now was made before this instant: attribute it here */
        const int64_t now = et__now_ns(CLOCK_MONOTONIC);
        if (!folded) et__fold_pending(rec);
        folded = true;
        const uint64_t n = et__drain_ring(rec, ring, now);
        et__agg_leave(rec, previous);
        if (n > most) most = n;
    }
    if (!folded && atomic_load_explicit(&rec->region->pending, memory_order_relaxed)) {
        uint64_t previous;
        if (timed) {
            if (!et__agg_enter_timed(rec, &previous)) {
                *ok = false;
                return most;
            }
        } else {
            previous = et__agg_enter(rec);
        }
        et__fold_pending(rec);
        et__agg_leave(rec, previous);
    }
    atomic_fetch_add_explicit(&rec->region->passes, 1, memory_order_relaxed);
    return most;
}

/* What only the agent of a shared segment may do, and only while its segment is whole. */
static int owner_check(et_recorder *rec) {
    if (!rec->shared) return ET_OK;
    if (!rec->owner) return ET_ENOTOWNER;
    if (atomic_load_explicit(&rec->dead, memory_order_acquire)) return ET_ETRUNCATED;
    if (!et__shared_size_ok(rec)) return ET_ETRUNCATED;
    return ET_OK;
}

int et_collect(et_recorder *rec) {
    if (rec == NULL) return ET_EINVAL;
    int rc = owner_check(rec);
    if (rc != ET_OK) return rc;
    volatile int result = ET_OK;
    ET_GUARDED(rec, result = ET_ETRUNCATED, {
        bool ok;
        drain_pass(rec, &ok);
        if (!ok) result = ET_ETIMEDOUT;
        et__shared_maybe_reap(rec);
    });
    return result;
}

/* ---- windows ---- */

void et_window_free(et_window *w) { free(w); }

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

/* Room for `series` listed series, `buckets` buckets and `names` bytes of names. */
static et_window *window_alloc(uint64_t series, uint64_t buckets, uint64_t names) {
    if (series > UINT32_MAX || buckets > SIZE_MAX / 16 || names > SIZE_MAX / 2) return NULL;
    const size_t s = (size_t)series, b = (size_t)buckets;
    size_t at = align8(sizeof(et_window));
    const size_t ids = at;
    at += align8(s * sizeof(uint32_t));
    const size_t stats = at;
    at += s * sizeof(et_series_stats);
    const size_t name_at = at;
    at += align8(s * 5 * sizeof(uint32_t));
    const size_t bucket_at = at;
    at += s * sizeof(uint64_t);
    const size_t counts = at;
    at += b * sizeof(uint64_t);
    const size_t indexes = at;
    at += align8(b * sizeof(uint32_t));
    const size_t name_bytes = at;
    at += (size_t)names;
    char *p = malloc(at);
    if (p == NULL) return NULL;
    et_window *w = (et_window *)p;
    memset(w, 0, sizeof *w);
    w->cap_series = (uint32_t)s;
    w->cap_buckets = b;
    w->cap_names = names;
    w->ids = (uint32_t *)(p + ids);
    w->stats = (et_series_stats *)(p + stats);
    w->name_at = (uint32_t(*)[5])(p + name_at);
    w->bucket_at = (uint64_t *)(p + bucket_at);
    w->counts = (uint64_t *)(p + counts);
    w->indexes = (uint32_t *)(p + indexes);
    w->names = p + name_bytes;
    return w;
}

/* What a window of a set needs now (the active one: under the aggregate lock). */
typedef struct window_need {
    uint64_t series, buckets, names;
} window_need;

static window_need need_of(const et_recorder *rec, uint32_t set) {
    const et_set *s = rec->sets[set & 1];
    const et_config *c = &rec->config;
    /* bounded by what the configuration allows, whatever the set's counters say */
    const uint64_t pages = s->pages_used < c->histogram_pages ? s->pages_used
                                                              : c->histogram_pages;
    const uint64_t coarse_most = (uint64_t)c->max_series * rec->layout.slots;
    window_need n;
    n.series = s->touched_count < c->max_series ? s->touched_count : c->max_series;
    n.buckets = pages * c->buckets_per_octave +
                (s->coarse_slots < coarse_most ? s->coarse_slots : coarse_most);
    n.names = s->names_bytes < c->names_bytes ? s->names_bytes : c->names_bytes;
    return n;
}

static et_window *window_alloc_for(window_need need) {
    return window_alloc(need.series + need.series / 4 + 16, need.buckets + need.buckets / 4 + 256,
                        need.names + need.names / 4 + 4096);
}

static int cmp_u32(const void *a, const void *b) {
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Copy series id's names into the window; false (and an integrity error) when the record
 * does not hold five strings inside the arena. */
static bool copy_names(et_recorder *rec, et_window *w, uint32_t listed, uint32_t id) {
    const et_series_rec *s = &rec->series[id];
    const uint64_t off = s->name_off, len = s->name_len;
    if (off + len > rec->config.names_bytes || len > w->cap_names - w->used_names) return false;
    char *dst = w->names + w->used_names;
    memcpy(dst, rec->arena + off, len);
    uint64_t at = 0;
    for (int k = 0; k < 5; k++) {
        const char *end = memchr(dst + at, '\0', len - at);
        if (end == NULL) return false;
        w->name_at[listed][k] = (uint32_t)(w->used_names + at);
        at = (uint64_t)(end - dst) + 1;
        if (k < 4 && at >= len) return false;
    }
    w->used_names += len;
    return true;
}

static void emit_bucket(et_window *w, et_series_stats *st, uint32_t index, uint64_t count) {
    if (w->used_buckets >= w->cap_buckets) return; /* bounded by need_of: never */
    w->indexes[w->used_buckets] = index;
    w->counts[w->used_buckets] = count;
    w->used_buckets++;
    st->buckets++;
}

/* The series' buckets from its page table, in increasing index order (slot, then bucket
 * within the slot's octave).  Coarse values go to the middle bucket of their octave. */
static void copy_buckets(et_recorder *rec, uint32_t set, const et_aggregate *agg, et_window *w,
                         et_series_stats *st) {
    const uint32_t k = rec->config.buckets_per_octave;
    const uint32_t middle = k / 2;
    const uint32_t *pool = rec->pools[set];
    for (uint32_t slot = 0; slot < rec->outlier_slot; slot++) {
        const uint64_t e = agg->pages[slot];
        if (e == ET_NO_PAGE) continue;
        if (e & ET_COARSE) {
            if (e & ~ET_COARSE) emit_bucket(w, st, slot * k + middle, e & ~ET_COARSE);
            continue;
        }
        if (e >= rec->page_limit) {
            rec->region->integrity_errors++;
            continue;
        }
        const uint32_t *page = pool + e;
        uint64_t coarse;
        memcpy(&coarse, page + rec->layout.page_words - 2, sizeof coarse);
        for (uint32_t sub = 0; sub < k; sub++) {
            const uint64_t c = page[sub] + (sub == middle ? coarse : 0);
            if (c) emit_bucket(w, st, slot * k + sub, c);
        }
    }
}

/* The window from the closed set: its touched series, in id order. */
static void build_window(et_recorder *rec, uint32_t set, et_window *w) {
    const et_set *s = rec->sets[set];
    uint32_t n = s->touched_count <= rec->config.max_series ? s->touched_count
                                                            : rec->config.max_series;
    if (n > w->cap_series) n = w->cap_series; /* bounded by need_of: never */
    memcpy(w->ids, rec->touched[set], n * sizeof(uint32_t));
    qsort(w->ids, n, sizeof(uint32_t), cmp_u32);
    /* unsigned: a pending window's bounds are read back from the region, which is data */
    const int64_t wall_offset = (int64_t)((uint64_t)w->end_wall_ns - (uint64_t)w->end_mono_ns);
    uint32_t listed = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t id = w->ids[i];
        if (id >= rec->config.max_series || (listed && w->ids[listed - 1] == id)) {
            rec->region->integrity_errors++; /* a touched list written over */
            continue;
        }
        const et_aggregate *agg = et__agg(rec, set, id);
        et_series_stats *st = &w->stats[listed];
        memset(st, 0, sizeof *st);
        st->count = agg->count;
        st->sum = agg->sum;
        st->min = agg->count ? agg->min : 0.0;
        st->max = agg->count ? agg->max : 0.0;
        st->zero = agg->zero;
        st->rejected[ET_REJECT_NAN] = agg->rejected_nan;
        st->rejected[ET_REJECT_INF] = agg->rejected_inf;
        st->rejected[ET_REJECT_TYPE] = agg->rejected_type;
        for (int r = 0; r < ET_DROP_REASONS; r++) st->dropped[r] = agg->dropped[r];
        st->coarse = agg->coarse;
        st->first_mono_ns = agg->first_mono_ns;
        st->last_mono_ns = agg->last_mono_ns;
        if (agg->first_mono_ns) {
            /* unsigned: the times are data, and clamped to the window's bounds next */
            int64_t first = (int64_t)((uint64_t)agg->first_mono_ns + (uint64_t)wall_offset);
            int64_t last = (int64_t)((uint64_t)agg->last_mono_ns + (uint64_t)wall_offset);
            if (first < w->start_wall_ns) first = w->start_wall_ns;
            if (first > w->end_wall_ns) first = w->end_wall_ns;
            if (last > w->end_wall_ns) last = w->end_wall_ns;
            if (last < first) last = first;
            st->first_wall_ns = first;
            st->last_wall_ns = last;
        }
        w->ids[listed] = id;
        if (!copy_names(rec, w, listed, id)) {
            rec->region->integrity_errors++;
            for (int k = 0; k < 5; k++) w->name_at[listed][k] = UINT32_MAX; /* "" below */
        }
        w->bucket_at[listed] = w->used_buckets;
        copy_buckets(rec, set, agg, w, st);
        listed++;
    }
    w->count = listed;
}

/* A window of the closed set `set`, whose bounds and seq are given: built outside the
 * aggregate lock (nobody writes a closed set).  NULL when it cannot be allocated. */
static et_window *window_of_closed(et_recorder *rec, uint32_t set, uint64_t seq, int64_t sm,
                                   int64_t em, int64_t sw, int64_t ew) {
    et_window *w = window_alloc_for(need_of(rec, set));
    if (w == NULL) return NULL;
    w->seq = seq;
    w->start_mono_ns = sm;
    w->end_mono_ns = em;
    w->start_wall_ns = sw;
    w->end_wall_ns = ew;
    build_window(rec, set & 1, w);
    return w;
}

/* A shared segment's closed window whose reset an agent began: finish it (resetting a set is
 * safe to repeat), and say there is no window pending any more. */
static void finish_reset(et_recorder *rec, uint64_t ws) {
    et__reset_set(rec, ET_WS_ACTIVE(ws) ^ 1);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&rec->region->window_state,
                          et__ws(ET_WS_SEQ(ws), ET_PHASE_NONE, ET_WS_ACTIVE(ws)),
                          memory_order_release);
}

/* The close itself, under close_lock.  Shared segments (hand-over): the closed set is kept
 * until et_window_ack; while it is, a close returns it again. */
static int window_close_locked(et_recorder *rec, et_window **out) {
    et_region *r = rec->region;
    uint64_t ws = atomic_load_explicit(&r->window_state, memory_order_acquire);
    if (ET_WS_PHASE(ws) == ET_PHASE_RESETTING) { /* an agent died resetting it */
        finish_reset(rec, ws);
        ws = atomic_load_explicit(&r->window_state, memory_order_acquire);
    }
    if (ET_WS_PHASE(ws) == ET_PHASE_PENDING) {
        et_window *w = window_of_closed(rec, ET_WS_ACTIVE(ws) ^ 1, ET_WS_SEQ(ws) - 1,
                                        r->closed_start_mono_ns, r->closed_end_mono_ns,
                                        r->closed_start_wall_ns, r->closed_end_wall_ns);
        if (w == NULL) return ET_ENOMEM;
        *out = w;
        return ET_OK;
    }
    bool ok;
    drain_pass(rec, &ok);
    if (!ok) return ET_ETIMEDOUT;

    /* Size the window before the flip, so that once the set is closed nothing can fail:
     * what the active set needs is read under the lock, the window allocated outside it,
     * and the flip happens only if the set still fits (it grows meanwhile: some slack, and
     * another try if it outgrew that). */
    uint64_t previous;
    if (!et__agg_enter_timed(rec, &previous)) return ET_ETIMEDOUT;
    et__fold_pending(rec);
    window_need need = need_of(rec, et__active(rec));
    et__agg_leave(rec, previous);
    et_window *w = NULL;
    uint32_t closing = 0;
    for (;;) {
        w = window_alloc_for(need);
        if (w == NULL) return ET_ENOMEM; /* nothing changed: the window stays open */
        if (!et__agg_enter_timed(rec, &previous)) {
            free(w);
            return ET_ETIMEDOUT;
        }
        et__fold_pending(rec);
        ws = atomic_load_explicit(&r->window_state, memory_order_relaxed);
        closing = ET_WS_ACTIVE(ws);
        need = need_of(rec, closing);
        const bool fits = need.series <= w->cap_series && need.buckets <= w->cap_buckets &&
                          need.names <= w->cap_names;
        if (fits) {
            /* windows tile time: the next one starts exactly where this one ends */
            w->end_mono_ns = et__now_ns(CLOCK_MONOTONIC);
            w->end_wall_ns = et__now_ns(CLOCK_REALTIME);
            w->seq = ET_WS_SEQ(ws);
            w->start_mono_ns = r->window_start_mono_ns;
            w->start_wall_ns = r->window_start_wall_ns;
            /* the closed window's bounds first, then one store commits the close: an agent
             * that dies between the two has closed nothing */
            r->closed_start_mono_ns = w->start_mono_ns;
            r->closed_end_mono_ns = w->end_mono_ns;
            r->closed_start_wall_ns = w->start_wall_ns;
            r->closed_end_wall_ns = w->end_wall_ns;
            atomic_store_explicit(&r->window_state,
                                  et__ws(w->seq + 1, rec->shared ? ET_PHASE_PENDING : ET_PHASE_NONE,
                                         closing ^ 1),
                                  memory_order_release);
        }
        et__agg_leave(rec, previous);
        if (fits) break;
        free(w);
    }
    r->window_start_mono_ns = w->end_mono_ns;
    r->window_start_wall_ns = w->end_wall_ns;

    /* the closed set is ours alone until the next close flips back to it */
    build_window(rec, closing, w);
    if (!rec->shared) et__reset_set(rec, closing); /* acknowledged at once */
    *out = w;
    return ET_OK;
}

int et_window_close(et_recorder *rec, et_window **out) {
    if (rec == NULL || out == NULL) return ET_EINVAL;
    *out = NULL;
    int rc = owner_check(rec);
    if (rc != ET_OK) return rc;
    et_region *r = rec->region;
    volatile int result = ET_OK;
    et_window *volatile built = NULL;
    ET_GUARDED(rec, {
        result = ET_ETRUNCATED;
        et_window_free(built);
        built = NULL;
    }, {
        et__lock(&r->close_lock);
        et_window *w = NULL;
        result = window_close_locked(rec, &w);
        built = w;
        et__unlock(&r->close_lock);
    });
    *out = built;
    return result;
}

int et_window_ack(et_recorder *rec, uint64_t seq) {
    if (rec == NULL) return ET_EINVAL;
    int rc = owner_check(rec);
    if (rc != ET_OK) return rc;
    et_region *r = rec->region;
    volatile int result = ET_OK;
    ET_GUARDED(rec, result = ET_ETRUNCATED, {
        et__lock(&r->close_lock);
        const uint64_t ws = atomic_load_explicit(&r->window_state, memory_order_acquire);
        const uint64_t open_seq = ET_WS_SEQ(ws);
        const uint32_t phase = ET_WS_PHASE(ws);
        if (phase != ET_PHASE_NONE && seq == open_seq - 1) {
            /* the closed window is spooled: its set may go.  RESETTING first, so that an
             * agent dying halfway leaves a reset to finish, never a half-cleared window */
            if (phase == ET_PHASE_PENDING)
                atomic_store_explicit(&r->window_state,
                                      et__ws(open_seq, ET_PHASE_RESETTING, ET_WS_ACTIVE(ws)),
                                      memory_order_release);
            atomic_signal_fence(memory_order_seq_cst);
            finish_reset(rec, et__ws(open_seq, ET_PHASE_RESETTING, ET_WS_ACTIVE(ws)));
        } else if (seq >= open_seq) {
            result = ET_EINVAL; /* not closed yet */
        } /* else: acknowledged before (a repeat after an agent restart): nothing to do */
        et__unlock(&r->close_lock);
    });
    return result;
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

uint32_t et_window_series_count(const et_window *w) { return w ? w->count : 0; }

int et_window_series_id(const et_window *w, uint32_t i, uint32_t *series_id) {
    if (series_id == NULL) return ET_EINVAL;
    if (w == NULL || i >= w->count) return ET_ENOSERIES;
    *series_id = w->ids[i];
    return ET_OK;
}

int et_window_series_find(const et_window *w, uint32_t series_id, uint32_t *i) {
    if (i == NULL) return ET_EINVAL;
    if (w == NULL) return ET_ENOSERIES;
    uint32_t lo = 0, hi = w->count; /* ids are increasing */
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (w->ids[mid] < series_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == w->count || w->ids[lo] != series_id) return ET_ENOSERIES;
    *i = lo;
    return ET_OK;
}

static const char *name_of(const et_window *w, uint32_t i, int k) {
    const uint32_t at = w->name_at[i][k];
    return at == UINT32_MAX ? "" : w->names + at;
}

int et_window_series_names(const et_window *w, uint32_t i, const char **model,
                           const char **version, const char **metric, const char **dimension) {
    if (w == NULL || i >= w->count) return ET_ENOSERIES;
    if (model) *model = name_of(w, i, 0);
    if (version) *version = name_of(w, i, 1);
    if (metric) *metric = name_of(w, i, 2);
    if (dimension) *dimension = name_of(w, i, 3);
    return ET_OK;
}

int et_window_series_unit(const et_window *w, uint32_t i, const char **unit) {
    if (unit == NULL) return ET_EINVAL;
    if (w == NULL || i >= w->count) return ET_ENOSERIES;
    *unit = name_of(w, i, 4);
    return ET_OK;
}

int et_window_series_stats(const et_window *w, uint32_t i, et_series_stats *out) {
    if (w == NULL || out == NULL) return ET_EINVAL;
    if (i >= w->count) return ET_ENOSERIES;
    *out = w->stats[i];
    return ET_OK;
}

int et_window_buckets(const et_window *w, uint32_t i, uint32_t *indexes, uint64_t *counts,
                      uint32_t capacity) {
    if (w == NULL || indexes == NULL || counts == NULL) return ET_EINVAL;
    if (i >= w->count) return ET_ENOSERIES;
    const uint32_t k = w->stats[i].buckets;
    if (capacity < k) return ET_EINVAL;
    memcpy(indexes, w->indexes + w->bucket_at[i], k * sizeof *indexes);
    memcpy(counts, w->counts + w->bucket_at[i], k * sizeof *counts);
    return (int)k;
}

/* ---- background collector ---- */

/* One pass of the background collector: the most records one ring held.  A shared
 * segment's: only while whole, under the SIGBUS guard, with the reaper. */
static uint64_t collector_pass(et_recorder *rec) {
    bool ok;
    if (!rec->shared) return drain_pass(rec, &ok);
    if (atomic_load_explicit(&rec->dead, memory_order_acquire) || !et__shared_size_ok(rec))
        return 0;
    volatile uint64_t fill = 0;
    ET_GUARDED(rec, fill = 0, {
        fill = drain_pass(rec, &ok);
        et__shared_maybe_reap(rec);
    });
    return fill;
}

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

        const uint64_t fill = collector_pass(rec);
        /* a ring an eighth full at a pass: come back sooner (the producer may be bursting:
         * draining it here is cheaper for everyone than its producer finding it full);
         * nearly empty: sleep longer */
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
    if (rec->shared && !rec->owner) return ET_ENOTOWNER;
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
    if (rec->shared && !rec->owner) return ET_ENOTOWNER;
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

/* In a fork child (every lock reset, the forking thread's tid refreshed): what is in the
 * rings and the sets was recorded by the parent, which reports it; only the forking thread
 * exists, and keeps its ring under its new tid. */
void et__thread_forget_after_fork(et_recorder *rec, uint32_t parent_tid) {
    et_region *r = rec->region;
    const uint32_t me = et__tid();
    for (uint32_t i = 0; i < rec->config.max_threads; i++) {
        et_ring *ring = et__ring(rec, i);
        atomic_store(&ring->tail, atomic_load(&ring->head));
        atomic_store(&ring->own, atomic_load(&ring->own) == parent_tid ? me : 0);
    }
    for (uint32_t s = 0; s < rec->config.max_series; s++) {
        atomic_store(&rec->counters[s].rejected_type, 0);
        for (int k = 0; k < ET_DROP_REASONS; k++) atomic_store(&rec->counters[s].dropped[k], 0);
        memset(rec->counters[s].folded, 0, sizeof rec->counters[s].folded);
    }
    for (uint32_t w = 0; w < (rec->config.max_series + 63) / 64; w++)
        atomic_store(&rec->dirty[w], 0);
    atomic_store(&r->pending, 0);
    atomic_store(&r->unknown_total, 0);
    r->unknown_folded = 0;
    et__reset_set(rec, 0);
    et__reset_set(rec, 1);
    atomic_store(&r->window_state, et__ws(0, ET_PHASE_NONE, 0));
    r->window_start_mono_ns = et__now_ns(CLOCK_MONOTONIC);
    r->window_start_wall_ns = et__now_ns(CLOCK_REALTIME);
    r->records_drained = 0;
    r->unknown_series = 0;
    r->ring_high_water = 0;
    r->full_drains = 0;
    r->direct_values = 0;
    r->pool_exhausted = 0;
    r->pages_high_water = 0;
    rec->thread_running = false; /* the thread was not copied; its handle means nothing here */
    rec->thread_stop = false;
    atomic_store(&rec->period_now_ns, 0);
}
