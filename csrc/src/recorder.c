/* Recorder lifecycle: configuration, memory, the series registry, thread exit and fork. */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_RING_CAPACITY 2048u
#define DEFAULT_MAX_THREADS 4u
#define DEFAULT_MAX_SERIES 16u
#define DEFAULT_BUCKETS_PER_OCTAVE 36u
#define DEFAULT_MIN_EXPONENT (-30)
#define DEFAULT_OCTAVES 70u

/* ---- process-wide state: the live recorder list, the thread-exit key, fork handlers ---- */

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static et_recorder *live_head;
static _Atomic uint64_t next_recorder_id = 1;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_exit_key;
static int process_init_error;

void et__live_lock(void) { pthread_mutex_lock(&live_lock); }
void et__live_unlock(void) { pthread_mutex_unlock(&live_lock); }

/* A recording thread is exiting: free its rings for the next thread that records. */
static void on_thread_exit(void *unused) {
    (void)unused;
    const uintptr_t me = et__this_thread_token();
    /* a record made later in this thread's exit (another key's destructor) claims afresh and
     * sets our key again, so glibc calls us once more to give that ring back */
    et__thread_cache_forget();
    pthread_mutex_lock(&live_lock);
    for (et_recorder *rec = live_head; rec != NULL; rec = rec->next_live) {
        for (uint32_t i = 0; i < rec->config.max_threads; i++) {
            et_ring *ring = &rec->rings[i];
            if (atomic_load_explicit(&ring->owner, memory_order_relaxed) != me) continue;
            atomic_store_explicit(&ring->owner, 0, memory_order_relaxed);
            /* release: the next owner's claim (acquire) sees this thread's last head */
            atomic_store_explicit(&ring->state, RING_FREE, memory_order_release);
        }
    }
    pthread_mutex_unlock(&live_lock);
}

static void init_wake_cond(et_recorder *rec) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&rec->thread_wake, &attr);
    pthread_condattr_destroy(&attr);
}

/* fork() copies one thread: take every lock first so none is copied held by a thread that
 * does not exist in the child. */
static void before_fork(void) {
    pthread_mutex_lock(&live_lock);
    for (et_recorder *rec = live_head; rec != NULL; rec = rec->next_live) {
        pthread_mutex_lock(&rec->lifecycle_lock);
        pthread_mutex_lock(&rec->registry_lock);
        pthread_mutex_lock(&rec->collector_lock);
        pthread_mutex_lock(&rec->thread_lock);
    }
}

static void after_fork_parent(void) {
    for (et_recorder *rec = live_head; rec != NULL; rec = rec->next_live) {
        pthread_mutex_unlock(&rec->thread_lock);
        pthread_mutex_unlock(&rec->collector_lock);
        pthread_mutex_unlock(&rec->registry_lock);
        pthread_mutex_unlock(&rec->lifecycle_lock);
    }
    pthread_mutex_unlock(&live_lock);
}

static void after_fork_child(void) {
    for (et_recorder *rec = live_head; rec != NULL; rec = rec->next_live) {
        et__thread_forget_after_fork(rec);
        /* the parent's collector thread was most likely waiting on thread_wake when we forked:
         * the copy counts a waiter that does not exist here, and glibc's pthread_cond_destroy
         * (et_recorder_free) would wait for it forever.  Start the child with a fresh one. */
        init_wake_cond(rec);
        pthread_mutex_unlock(&rec->thread_lock);
        pthread_mutex_unlock(&rec->collector_lock);
        pthread_mutex_unlock(&rec->registry_lock);
        pthread_mutex_unlock(&rec->lifecycle_lock);
    }
    pthread_mutex_unlock(&live_lock);
}

static void process_init(void) {
    if (pthread_key_create(&thread_exit_key, on_thread_exit) != 0) {
        process_init_error = ET_ETHREAD;
        return;
    }
    if (pthread_atfork(before_fork, after_fork_parent, after_fork_child) != 0)
        process_init_error = ET_ETHREAD;
}

int et__register_thread_exit(void) {
    /* the destructor runs only for a non-NULL value; any non-NULL will do */
    if (pthread_getspecific(thread_exit_key) != NULL) return ET_OK;
    return pthread_setspecific(thread_exit_key, (void *)1) == 0 ? ET_OK : ET_ENOMEM;
}

int64_t et__now_ns(int clock_id) {
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- configuration ---- */

void et_config_default(et_config *cfg) {
    if (cfg == NULL) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->ring_capacity = DEFAULT_RING_CAPACITY;
    cfg->max_threads = DEFAULT_MAX_THREADS;
    cfg->max_series = DEFAULT_MAX_SERIES;
    cfg->buckets_per_octave = DEFAULT_BUCKETS_PER_OCTAVE;
    cfg->min_exponent = DEFAULT_MIN_EXPONENT;
    cfg->octaves = DEFAULT_OCTAVES;
    cfg->names_bytes = DEFAULT_MAX_SERIES * 256;
}

static int resolve_config(const et_config *given, et_config *out) {
    et_config_default(out);
    if (given == NULL) return ET_OK;
    if (given->ring_capacity) out->ring_capacity = given->ring_capacity;
    if (given->max_threads) out->max_threads = given->max_threads;
    if (given->max_series) {
        out->max_series = given->max_series;
        out->names_bytes = given->max_series * 256;
    }
    if (given->buckets_per_octave) out->buckets_per_octave = given->buckets_per_octave;
    if (given->min_exponent) out->min_exponent = given->min_exponent;
    if (given->octaves) out->octaves = given->octaves;
    if (given->names_bytes) out->names_bytes = given->names_bytes;

    const uint32_t cap = out->ring_capacity;
    if (cap < 64 || cap > (1u << 24) || (cap & (cap - 1)) != 0) return ET_EINVAL;
    if (out->max_threads > 1024 || out->max_series > 65536) return ET_EINVAL;
    if (out->buckets_per_octave < 8 || out->buckets_per_octave > 255) return ET_EINVAL;
    /* normal doubles only: the exponent field must locate the octave */
    if (out->min_exponent < -1022 || out->octaves > 2046 ||
        out->min_exponent + (int32_t)out->octaves > 1024)
        return ET_EINVAL;
    if (out->names_bytes < 16 || out->names_bytes > (64u << 20)) return ET_EINVAL;
    return ET_OK;
}

/* Bucket j of an octave starts at the first mantissa step m with 1 + m/2^B >= 2^(j/K); the
 * bound is exact for these integer edges, whatever libm rounds. */
static void build_layout(et_recorder *rec) {
    const uint32_t k = rec->config.buckets_per_octave;
    const uint32_t steps = 1u << ET_MANTISSA_BITS;
    rec->edges[0] = 0;
    for (uint32_t j = 1; j < k; j++)
        rec->edges[j] = (uint32_t)ceil((exp2((double)j / k) - 1.0) * steps);
    rec->edges[k] = steps;
    double worst = 0.0;
    uint32_t j = 0;
    for (uint32_t m = 0; m < steps; m++) {
        while (m >= rec->edges[j + 1]) j++;
        rec->sub_bucket_of[m] = (uint8_t)j;
    }
    for (j = 0; j < k; j++) {
        const double a = rec->edges[j], b = rec->edges[j + 1];
        const double err = (b - a) / (2.0 * steps + a + b);
        if (err > worst) worst = err;
    }
    rec->relative_error = worst;
    rec->buckets_per_sign = k * rec->config.octaves;
    rec->exponent_lo = (uint32_t)(rec->config.min_exponent + 1023);
    for (uint32_t top = 0; top < (1u << 12); top++) {
        const uint32_t sign = top >> 11, octave = (top & 0x7ff) - rec->exponent_lo;
        rec->octave_base[top] = octave < rec->config.octaves
                                    ? sign * rec->buckets_per_sign + octave * k
                                    : ET_OUTLIER;
    }
}

/* ---- lifecycle ---- */

static void *take(et_recorder *rec, size_t n, size_t align) {
    void *p = NULL;
    if (align <= sizeof(void *)) {
        p = calloc(1, n);
    } else if (posix_memalign(&p, align, n) == 0) {
        memset(p, 0, n);
    } else {
        p = NULL;
    }
    if (p != NULL) rec->memory_bytes += n;
    return p;
}

static void release_memory(et_recorder *rec) {
    if (rec->rings != NULL) {
        for (uint32_t i = 0; i < rec->config.max_threads; i++) {
            free(rec->rings[i].entries);
            free((void *)rec->rings[i].full_drops);
            free(rec->rings[i].full_drops_seen);
        }
    }
    if (rec->aggregates != NULL) {
        for (uint32_t i = 0; i < rec->config.max_series; i++)
            free(rec->aggregates[i].own_buckets);
    }
    free(rec->rings);
    free(rec->aggregates);
    free(rec->sink_buckets);
    free(rec->names);
    free(rec->name_arena);
    free(rec->shared);
    free(rec);
}

int et_recorder_new(const et_config *cfg, et_recorder **out) {
    if (out == NULL) return ET_EINVAL;
    *out = NULL;
    pthread_once(&process_once, process_init);
    if (process_init_error) return process_init_error;

    et_config resolved;
    int rc = resolve_config(cfg, &resolved);
    if (rc != ET_OK) return rc;

    et_recorder *rec = calloc(1, sizeof *rec);
    if (rec == NULL) return ET_ENOMEM;
    rec->memory_bytes = sizeof *rec;
    rec->config = resolved;
    rec->id = atomic_fetch_add(&next_recorder_id, 1);
    build_layout(rec);

    const uint32_t threads = resolved.max_threads, series = resolved.max_series;
    const size_t bucket_bytes = (size_t)2 * rec->buckets_per_sign * sizeof(uint32_t);
    rec->rings = take(rec, (size_t)threads * sizeof(et_ring), ET_CACHE_LINE);
    rec->aggregates = take(rec, (size_t)series * sizeof(et_aggregate), ET_CACHE_LINE);
    rec->sink_buckets = take(rec, bucket_bytes, 8);
    rec->names = take(rec, (size_t)series * sizeof(et_series_names), 8);
    rec->name_arena = take(rec, resolved.names_bytes, 8);
    rec->shared = take(rec, (size_t)series * sizeof(et_shared_counters), ET_CACHE_LINE);
    bool ok = rec->rings && rec->aggregates && rec->sink_buckets && rec->names &&
              rec->name_arena && rec->shared;
    for (uint32_t i = 0; ok && i < threads; i++) {
        et_ring *ring = &rec->rings[i];
        ring->capacity = resolved.ring_capacity;
        ring->mask = resolved.ring_capacity - 1;
        ring->entries = take(rec, (size_t)resolved.ring_capacity * sizeof(et_entry),
                             ET_CACHE_LINE);
        ring->full_drops = take(rec, (size_t)series * sizeof(uint64_t), 8);
        ring->full_drops_seen = take(rec, (size_t)series * sizeof(uint64_t), 8);
        ok = ring->entries && ring->full_drops && ring->full_drops_seen;
    }
    for (uint32_t i = 0; ok && i < series; i++) {
        et_aggregate *agg = &rec->aggregates[i];
        agg->own_buckets = take(rec, bucket_bytes, 8);
        agg->buckets = agg->own_buckets;
        ok = agg->own_buckets != NULL;
    }
    if (!ok) {
        release_memory(rec);
        return ET_ENOMEM;
    }

    pthread_mutex_init(&rec->registry_lock, NULL);
    pthread_mutex_init(&rec->collector_lock, NULL);
    pthread_mutex_init(&rec->lifecycle_lock, NULL);
    pthread_mutex_init(&rec->thread_lock, NULL);
    init_wake_cond(rec);

    pthread_mutex_lock(&rec->collector_lock);
    et__reset_window_locked(rec);
    pthread_mutex_unlock(&rec->collector_lock);

    pthread_mutex_lock(&live_lock);
    rec->next_live = live_head;
    live_head = rec;
    pthread_mutex_unlock(&live_lock);
    *out = rec;
    return ET_OK;
}

void et_recorder_free(et_recorder *rec) {
    if (rec == NULL) return;
    et_collector_stop(rec);
    pthread_mutex_lock(&live_lock);
    for (et_recorder **p = &live_head; *p != NULL; p = &(*p)->next_live) {
        if (*p == rec) {
            *p = rec->next_live;
            break;
        }
    }
    pthread_mutex_unlock(&live_lock);
    pthread_mutex_destroy(&rec->registry_lock);
    pthread_mutex_destroy(&rec->collector_lock);
    pthread_mutex_destroy(&rec->lifecycle_lock);
    pthread_mutex_destroy(&rec->thread_lock);
    pthread_cond_destroy(&rec->thread_wake);
    release_memory(rec);
}

/* ---- series registry ---- */

static int check_name(const char *s, size_t max, bool optional) {
    if (s == NULL) return optional ? ET_OK : ET_ENAME;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) return ET_ENAME;
        if (n >= max) return ET_ENAME;
    }
    return (n == 0 && !optional) ? ET_ENAME : ET_OK;
}

static const char *arena_copy(et_recorder *rec, const char *s) {
    const size_t n = strlen(s) + 1;
    char *dst = rec->name_arena + rec->name_arena_used;
    memcpy(dst, s, n);
    rec->name_arena_used += (uint32_t)n;
    return dst;
}

int et_series_add(et_recorder *rec, const char *model, const char *version, const char *metric,
                  const char *dimension, uint32_t *series_id) {
    if (rec == NULL || series_id == NULL) return ET_EINVAL;
    if (check_name(model, ET_NAME_MAX, false) || check_name(version, ET_NAME_MAX, false) ||
        check_name(metric, ET_NAME_MAX, false) ||
        check_name(dimension, ET_DIMENSION_MAX, true))
        return ET_ENAME;
    if (dimension == NULL) dimension = "";

    int rc = ET_OK;
    pthread_mutex_lock(&rec->registry_lock);
    const uint32_t n = atomic_load_explicit(&rec->series_count, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        const et_series_names *s = &rec->names[i];
        if (!strcmp(s->model, model) && !strcmp(s->version, version) &&
            !strcmp(s->metric, metric) && !strcmp(s->dimension, dimension)) {
            *series_id = i;
            goto out;
        }
    }
    const size_t need = strlen(model) + strlen(version) + strlen(metric) + strlen(dimension) + 4;
    if (n >= rec->config.max_series || rec->name_arena_used + need > rec->config.names_bytes) {
        rc = ET_ESERIESFULL;
        goto out;
    }
    et_series_names *s = &rec->names[n];
    s->model = arena_copy(rec, model);
    s->version = arena_copy(rec, version);
    s->metric = arena_copy(rec, metric);
    s->dimension = arena_copy(rec, dimension);
    /* release: the names are complete before any reader sees the new count */
    atomic_store_explicit(&rec->series_count, n + 1, memory_order_release);
    *series_id = n;
out:
    pthread_mutex_unlock(&rec->registry_lock);
    return rc;
}

/* ---- introspection ---- */

int et_recorder_info(et_recorder *rec, et_info *out) {
    if (rec == NULL || out == NULL) return ET_EINVAL;
    memset(out, 0, sizeof *out);
    out->config = rec->config;
    out->memory_bytes = rec->memory_bytes;
    out->relative_error = rec->relative_error;
    out->series = atomic_load_explicit(&rec->series_count, memory_order_acquire);
    for (uint32_t i = 0; i < rec->config.max_threads; i++)
        if (atomic_load_explicit(&rec->rings[i].state, memory_order_relaxed) == RING_OWNED)
            out->threads_active++;
    pthread_mutex_lock(&rec->collector_lock);
    out->ring_high_water = rec->ring_high_water;
    out->records_drained = rec->records_drained;
    out->collector_passes = rec->pass;
    out->unknown_series = rec->unknown_series +
                          atomic_load_explicit(&rec->unknown_dropped, memory_order_relaxed);
    out->window_seq = rec->window_seq;
    pthread_mutex_unlock(&rec->collector_lock);
    out->collector_period_ns = atomic_load_explicit(&rec->period_now_ns, memory_order_relaxed);
    return ET_OK;
}

int et_recorder_edges(const et_recorder *rec, uint32_t *edges, uint32_t capacity) {
    if (rec == NULL || edges == NULL) return ET_EINVAL;
    const uint32_t n = rec->config.buckets_per_octave + 1;
    if (capacity < n) return ET_EINVAL;
    memcpy(edges, rec->edges, n * sizeof *edges);
    return (int)n;
}

const char *et_strerror(int code) {
    switch (code) {
    case ET_OK: return "ok";
    case ET_EINVAL: return "invalid argument";
    case ET_ENOMEM: return "out of memory";
    case ET_ESERIESFULL: return "series limit reached (raise max_series or names_bytes)";
    case ET_ENAME: return "invalid series name (empty, too long or a control character)";
    case ET_ENOSERIES: return "no such series";
    case ET_ETHREAD: return "thread operation failed";
    case ET_ERINGFULL: return "ring full: record dropped and counted";
    case ET_ENORING: return "no ring free for this thread: record dropped and counted";
    default: return "unknown error code";
    }
}

static const et_api api_table = {
    .abi_version = ET_API_VERSION,
    .record = et_record,
    .record_many = et_record_many,
    .count_reject = et_count_reject,
    .series_add = et_series_add,
    .strerror = et_strerror,
    .record_group = et_record_group,
};

const et_api *et_api_table(void) { return &api_table; }
