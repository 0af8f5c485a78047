/* Recorder lifecycle: configuration, the region's layout, the series registry, thread exit
 * and fork. */
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
#define DEFAULT_NAMES_PER_SERIES 256u
/* A typical series touches 5 to 10 octaves in a window: 8 pages each on average, and room
 * for one series to cover every octave of both signs. */
#define DEFAULT_PAGES_PER_SERIES 8u
#define MAX_PAGES (1u << 24)

/* ---- process-wide state: the live recorder list, the thread-exit key, fork handlers ---- */

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static et_recorder *live_head;
static _Atomic uint64_t next_recorder_id = 1;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_exit_key;
static int process_init_error;

void et__live_lock(void) { pthread_mutex_lock(&live_lock); }
void et__live_unlock(void) { pthread_mutex_unlock(&live_lock); }

/* Give back the rings this thread owns in rec. */
static void release_thread_rings(et_recorder *rec, uint64_t mine) {
    for (uint32_t i = 0; i < rec->config.max_threads; i++) {
        et_ring *ring = et__ring(rec, i);
        if (atomic_load_explicit(&ring->own, memory_order_relaxed) != mine) continue;
        /* release: the next owner's claim (acquire) sees this thread's last head */
        atomic_store_explicit(&ring->own, 0, memory_order_release);
    }
}

/* A recording thread is exiting: free its rings for the next thread that records. */
static void on_thread_exit(void *unused) {
    (void)unused;
    const uint32_t me = et__tid();
    /* a record made later in this thread's exit (another key's destructor) claims afresh and
     * sets our key again, so glibc calls us once more to give that ring back */
    et__thread_cache_forget();
    pthread_mutex_lock(&live_lock);
    for (et_recorder *rec = live_head; rec != NULL; rec = rec->next_live) {
        if (!rec->shared) {
            release_thread_rings(rec, me);
            continue;
        }
        /* a segment that shrank is not touched again; the agent's access is guarded */
        if (atomic_load_explicit(&rec->dead, memory_order_acquire) || rec->own_tag == 0)
            continue;
        ET_GUARDED(rec, (void)0, release_thread_rings(rec, rec->own_tag | me));
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
 * does not exist in the child.  Order as everywhere: close before aggregate.  A shared
 * segment's locks are not taken: they live in memory the child shares rather than copies,
 * so a holder in the parent releases them for the child too (and taking them would make
 * every fork wait for the other processes). */
static void before_fork(void) {
    pthread_mutex_lock(&live_lock);
    for (et_recorder *rec = live_head; rec != NULL; rec = rec->next_live) {
        pthread_mutex_lock(&rec->lifecycle_lock);
        pthread_mutex_lock(&rec->thread_lock);
        if (rec->shared) {
            pthread_mutex_lock(&rec->slot_lock);
            continue;
        }
        et__lock(&rec->region->close_lock);
        et__lock(&rec->region->registry_lock);
        et__lock(&rec->region->agg_lock);
    }
}

static void after_fork_parent(void) {
    for (et_recorder *rec = live_head; rec != NULL; rec = rec->next_live) {
        if (rec->shared) {
            pthread_mutex_unlock(&rec->slot_lock);
        } else {
            et__unlock(&rec->region->agg_lock);
            et__unlock(&rec->region->registry_lock);
            et__unlock(&rec->region->close_lock);
        }
        pthread_mutex_unlock(&rec->thread_lock);
        pthread_mutex_unlock(&rec->lifecycle_lock);
    }
    pthread_mutex_unlock(&live_lock);
}

static void after_fork_child(void) {
    /* the forking thread has a new tid here: its rings and locks were under the old one */
    const uint32_t parent_tid = et__tid();
    et__tid_refresh();
    for (et_recorder *rec = live_head; rec != NULL; rec = rec->next_live) {
        if (rec->shared) {
            et__shared_after_fork_child(rec);
            pthread_mutex_unlock(&rec->slot_lock);
        } else {
            et__lock_reset(&rec->region->agg_lock);
            et__lock_reset(&rec->region->registry_lock);
            et__lock_reset(&rec->region->close_lock);
            et__thread_forget_after_fork(rec, parent_tid);
        }
        /* the parent's collector thread was most likely waiting on thread_wake when we forked:
         * the copy counts a waiter that does not exist here, and glibc's pthread_cond_destroy
         * (et_recorder_free) would wait for it forever.  Start the child with a fresh one. */
        init_wake_cond(rec);
        rec->thread_running = false; /* the thread was not copied */
        rec->thread_stop = false;
        atomic_store(&rec->period_now_ns, 0);
        pthread_mutex_unlock(&rec->thread_lock);
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

int et__process_init(void) {
    pthread_once(&process_once, process_init);
    return process_init_error;
}

void et__live_add(et_recorder *rec) {
    pthread_mutex_lock(&live_lock);
    rec->next_live = live_head;
    live_head = rec;
    pthread_mutex_unlock(&live_lock);
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
    /* names_bytes and histogram_pages stay 0: they follow max_series (and octaves) unless
     * set, so raising max_series alone is enough */
}

int et__resolve_config(const et_config *given, et_config *out) {
    et_config_default(out);
    if (given != NULL) {
        if (given->ring_capacity) out->ring_capacity = given->ring_capacity;
        if (given->max_threads) out->max_threads = given->max_threads;
        if (given->max_series) out->max_series = given->max_series;
        if (given->buckets_per_octave) out->buckets_per_octave = given->buckets_per_octave;
        if (given->min_exponent) out->min_exponent = given->min_exponent;
        if (given->octaves) out->octaves = given->octaves;
        out->names_bytes = given->names_bytes;
        out->histogram_pages = given->histogram_pages;
    }
    const uint32_t cap = out->ring_capacity;
    if (cap < 64 || cap > (1u << 24) || (cap & (cap - 1)) != 0) return ET_EINVAL;
    if (out->max_threads > 1024 || out->max_series > 65536) return ET_EINVAL;
    if (out->buckets_per_octave < 8 || out->buckets_per_octave > 255) return ET_EINVAL;
    /* normal doubles only: the exponent field must locate the octave */
    if (out->min_exponent < -1022 || out->octaves > 2046 ||
        out->min_exponent + (int32_t)out->octaves > 1024)
        return ET_EINVAL;
    if (out->names_bytes == 0) out->names_bytes = out->max_series * DEFAULT_NAMES_PER_SERIES;
    if (out->names_bytes < 16 || out->names_bytes > (64u << 20)) return ET_EINVAL;
    if (out->histogram_pages == 0)
        out->histogram_pages = DEFAULT_PAGES_PER_SERIES * out->max_series + 2 * out->octaves;
    if (out->histogram_pages > MAX_PAGES) return ET_EINVAL;
    return ET_OK;
}

static uint64_t round_line(uint64_t n) { return (n + ET_CACHE_LINE - 1) & ~(uint64_t)(ET_CACHE_LINE - 1); }

/* Where everything is in the region: a pure function of the configuration. */
void et__compute_layout(const et_config *c, et_layout *l) {
    memset(l, 0, sizeof *l);
    uint64_t at = round_line(sizeof(et_region));
    l->ring_stride = sizeof(et_ring) + (uint64_t)c->ring_capacity * sizeof(et_entry);
    l->rings = at;
    at += (uint64_t)c->max_threads * l->ring_stride;
    l->series = at;
    at += round_line((uint64_t)c->max_series * sizeof(et_series_rec));
    uint32_t buckets = 16;
    while (buckets < 2 * c->max_series) buckets *= 2;
    l->hash_mask = buckets - 1;
    l->hash = at;
    at += round_line((uint64_t)buckets * sizeof(uint32_t));
    l->arena = at;
    at += round_line(c->names_bytes);
    l->shared = at;
    at += round_line((uint64_t)c->max_series * sizeof(et_shared_counters));
    l->dirty = at;
    at += round_line((uint64_t)(c->max_series + 63) / 64 * sizeof(uint64_t));

    l->slots = 2 * c->octaves + 1;
    l->agg_stride = round_line(sizeof(et_aggregate) + (uint64_t)l->slots * sizeof(uint64_t));
    l->page_words = ((c->buckets_per_octave + 1) & ~1u) + 2; /* buckets, then a uint64 */
    l->pages = c->histogram_pages;
    l->touched = round_line(sizeof(et_set));
    l->aggregates = l->touched + round_line((uint64_t)c->max_series * sizeof(uint32_t));
    l->pool = l->aggregates + (uint64_t)c->max_series * l->agg_stride;
    const uint64_t set_bytes =
        l->pool + round_line((uint64_t)l->pages * l->page_words * sizeof(uint32_t));
    l->sets[0] = at;
    l->sets[1] = at + set_bytes;
    l->total = at + 2 * set_bytes;
}

/* Bucket j of an octave starts at the first mantissa step m with 1 + m/2^B >= 2^(j/K); the
 * bound is exact for these integer edges, whatever libm rounds. */
static void build_tables(et_recorder *rec) {
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
    rec->outlier_slot = 2 * rec->config.octaves;
    for (uint32_t top = 0; top < (1u << 12); top++) {
        const uint32_t sign = top >> 11, octave = (top & 0x7ff) - rec->exponent_lo;
        rec->slot_of[top] = (uint16_t)(octave < rec->config.octaves
                                           ? sign * rec->config.octaves + octave
                                           : rec->outlier_slot);
    }
}

/* The handle's pointers into the region. */
static void derive_pointers(et_recorder *rec) {
    char *base = (char *)rec->region;
    const et_layout *l = &rec->layout;
    rec->rings = base + l->rings;
    rec->series = (et_series_rec *)(base + l->series);
    rec->hash = (uint32_t *)(base + l->hash);
    rec->arena = base + l->arena;
    rec->counters = (et_shared_counters *)(base + l->shared);
    rec->dirty = (_Atomic uint64_t *)(base + l->dirty);
    for (int s = 0; s < 2; s++) {
        char *set = base + l->sets[s];
        rec->sets[s] = (et_set *)set;
        rec->touched[s] = (uint32_t *)(set + l->touched);
        rec->aggregates[s] = set + l->aggregates;
        rec->pools[s] = (uint32_t *)(set + l->pool);
    }
    /* page p starts at word p * page_words: valid offsets are below the last one, plus 1 */
    rec->page_limit = l->pages ? (uint64_t)(l->pages - 1) * l->page_words + 1 : 0;
}

/* The handle's tables, pointers and process-local locks: rec->config, layout and region set. */
void et__init_handle(et_recorder *rec) {
    rec->id = atomic_fetch_add(&next_recorder_id, 1);
    build_tables(rec);
    derive_pointers(rec);
    pthread_mutex_init(&rec->lifecycle_lock, NULL);
    pthread_mutex_init(&rec->thread_lock, NULL);
    pthread_mutex_init(&rec->slot_lock, NULL);
    init_wake_cond(rec);
    rec->fd = -1;
    rec->slot = ET_NO_SLOT;
}

/* A fresh region: zero, then what zero does not mean. */
void et__init_region(et_recorder *rec) {
    et_region *r = rec->region;
    r->magic = ET_REGION_MAGIC;
    r->layout_version = ET_LAYOUT_VERSION;
    r->header_bytes = (uint32_t)sizeof(et_region);
    r->region_bytes = rec->layout.total;
    r->config = rec->config;
    for (uint32_t s = 0; s < 2; s++)
        for (uint32_t i = 0; i < rec->config.max_series; i++)
            et__agg_clear(rec, et__agg(rec, s, i));
    atomic_store_explicit(&r->window_state, et__ws(0, ET_PHASE_NONE, 0), memory_order_relaxed);
    r->window_start_mono_ns = et__now_ns(CLOCK_MONOTONIC);
    r->window_start_wall_ns = et__now_ns(CLOCK_REALTIME);
}

/* ---- lifecycle ---- */

int et_recorder_new(const et_config *cfg, et_recorder **out) {
    if (out == NULL) return ET_EINVAL;
    *out = NULL;
    int rc = et__process_init();
    if (rc != ET_OK) return rc;

    et_config resolved;
    rc = et__resolve_config(cfg, &resolved);
    if (rc != ET_OK) return rc;
    et_layout layout;
    et__compute_layout(&resolved, &layout);
    if (layout.total > SIZE_MAX / 2) return ET_ENOMEM; /* a 32-bit address space */

    et_recorder *rec = calloc(1, sizeof *rec);
    if (rec == NULL) return ET_ENOMEM;
    void *region = NULL;
    if (posix_memalign(&region, ET_CACHE_LINE, (size_t)layout.total) != 0) {
        free(rec);
        return ET_ENOMEM;
    }
    memset(region, 0, (size_t)layout.total);
    rec->region = region;
    rec->config = resolved;
    rec->layout = layout;
    rec->memory_bytes = sizeof *rec + layout.total;
    et__init_handle(rec);
    et__init_region(rec);
    et__live_add(rec);
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
    if (rec->shared) et__shared_release(rec); /* detach: slot, rings, mapping, file */
    pthread_mutex_destroy(&rec->lifecycle_lock);
    pthread_mutex_destroy(&rec->thread_lock);
    pthread_mutex_destroy(&rec->slot_lock);
    pthread_cond_destroy(&rec->thread_wake);
    if (!rec->shared) free(rec->region);
    free(rec);
}

/* ---- series registry ---- */

static int check_name(const char *s, size_t max, bool optional, size_t *len) {
    *len = 0;
    if (s == NULL) return optional ? ET_OK : ET_ENAME;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) return ET_ENAME;
        if (n >= max) return ET_ENAME;
    }
    *len = n;
    return (n == 0 && !optional) ? ET_ENAME : ET_OK;
}

/* Count a scribbled registry record: integrity_errors is guarded by the aggregate lock, which
 * may be taken inside the registry lock (the order before_fork uses). */
static void count_integrity_error(et_recorder *rec) {
    const uint64_t previous = et__agg_enter(rec);
    rec->region->integrity_errors++;
    et__agg_leave(rec, previous);
}

/* FNV-1a over the key bytes (the four names with their NULs). */
static uint32_t hash_key(const char *key, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return h;
}

/* The registered series whose names start with key (four names, NULs included), or -1.
 * Chains are followed only through ids already published, and only while they stay
 * inside the arena: the region is data. */
static int64_t registry_find(et_recorder *rec, const char *key, size_t key_len, uint32_t hash,
                             uint32_t registered) {
    uint32_t link = rec->hash[hash & rec->layout.hash_mask];
    for (uint32_t steps = 0; link != 0 && steps < registered; steps++) {
        const uint32_t id = link - 1;
        if (id >= registered) {
            count_integrity_error(rec);
            return -1;
        }
        const et_series_rec *s = &rec->series[id];
        if (s->hash == hash && s->name_len > key_len &&
            (uint64_t)s->name_off + s->name_len <= rec->config.names_bytes &&
            memcmp(rec->arena + s->name_off, key, key_len) == 0)
            return id;
        link = s->next;
    }
    return -1;
}

/* A series' unit: after its four names; "" when it has none. */
static const char *series_unit(const et_recorder *rec, uint32_t id, size_t key_len) {
    const et_series_rec *s = &rec->series[id];
    const char *unit = rec->arena + s->name_off + key_len;
    /* name_len covers the unit and its NUL; anything else reads as no unit */
    return memchr(unit, '\0', s->name_len - key_len) ? unit : "";
}

/* The registry lock was taken from a holder that died inside its section: its append may
 * be half done.  Published records (below series_count) are complete, so the hash index is
 * rebuilt from them alone, and the arena resumes after the last of them at the earliest. */
static void registry_repair(et_recorder *rec) {
    et_region *r = rec->region;
    atomic_fetch_add_explicit(&rec->seg->lock_steals, 1, memory_order_relaxed);
    const uint32_t n = et__series_count(rec);
    memset(rec->hash, 0, ((size_t)rec->layout.hash_mask + 1) * sizeof(uint32_t));
    uint64_t end = 0;
    for (uint32_t id = 0; id < n; id++) {
        et_series_rec *sr = &rec->series[id];
        const uint32_t b = sr->hash & rec->layout.hash_mask;
        sr->next = rec->hash[b];
        rec->hash[b] = id + 1;
        const uint64_t e = (uint64_t)sr->name_off + sr->name_len;
        if (e <= rec->config.names_bytes && e > end) end = e;
    }
    if (r->arena_used < end || r->arena_used > rec->config.names_bytes)
        r->arena_used = (uint32_t)end;
}

bool et__registry_take_over(et_recorder *rec, uint32_t dead_owner) {
    et_lock *l = &rec->region->registry_lock;
    uint32_t v = atomic_load_explicit(&l->word, memory_order_relaxed);
    if ((v & ET_LOCK_TID_MASK) != dead_owner || (v & ET_LOCK_HANDOFF)) return false;
    const uint32_t me = et__shared_lock_id(rec) | (v & ET_LOCK_WAITERS);
    if (!atomic_compare_exchange_strong_explicit(&l->word, &v, me, memory_order_acquire,
                                                 memory_order_relaxed))
        return false;
    registry_repair(rec);
    et__unlock_any(l);
    return true;
}

void et__registry_leave(et_recorder *rec) {
    if (rec->shared)
        et__unlock_any(&rec->region->registry_lock);
    else
        et__unlock(&rec->region->registry_lock);
}

bool et__registry_enter(et_recorder *rec) {
    if (!rec->shared) {
        et__lock(&rec->region->registry_lock);
        return true;
    }
    const int got = et__lock_shared(&rec->region->registry_lock, et__shared_lock_id(rec),
                                    rec->steal_ns, rec->owner ? rec->give_up_ns : 0,
                                    et__shared_owner_dead, rec);
    if (got == ET_LOCK_GAVE_UP) {
        atomic_fetch_add_explicit(&rec->seg->lock_timeouts, 1, memory_order_relaxed);
        return false;
    }
    if (got == ET_LOCK_STOLEN) registry_repair(rec);
    return true;
}

static int series_add_locked(et_recorder *rec, const char *const parts[5],
                             const size_t lens[5], const char *key, size_t key_len,
                             uint32_t hash, bool strict, uint32_t *series_id);

/* The registry step, under the SIGBUS guard (an agent's) and the registry lock. */
static int series_add_guarded(et_recorder *rec, const char *const parts[5],
                              const size_t lens[5], const char *key, size_t key_len,
                              uint32_t hash, bool strict, uint32_t *series_id) {
    volatile int rc = ET_OK;
    ET_GUARDED(rec, rc = ET_ETRUNCATED, {
        if (!et__registry_enter(rec)) {
            rc = ET_ETIMEDOUT;
        } else {
            rc = series_add_locked(rec, parts, lens, key, key_len, hash, strict, series_id);
            et__registry_leave(rec);
        }
    });
    return rc;
}

/* The key (model, version, metric, dimension, NULs included) into key; returns its length. */
static size_t make_key(char *key, const char *const parts[4], const size_t lens[4]) {
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        memcpy(key + n, parts[i], lens[i]);
        key[n + lens[i]] = '\0';
        n += lens[i] + 1;
    }
    return n;
}

/* A registered series of the same model, version and dimension whose display name,
 * "metric-unit" (or "metric" without a unit), is also metric[-unit], or -1.  Such a name
 * splits at one of its hyphens into the other series' metric and unit, or not at all (no
 * unit): one hash lookup per hyphen, so registration stays linear.  Registry lock held. */
static int64_t display_name_clash(et_recorder *rec, const char *model, const char *version,
                                  const char *metric, const char *dimension, const char *unit,
                                  const size_t lens[5], uint32_t registered) {
    char name[2 * ET_NAME_MAX + 2];
    size_t name_len = lens[2];
    memcpy(name, metric, lens[2]);
    if (lens[4] > 0) {
        name[name_len++] = '-';
        memcpy(name + name_len, unit, lens[4]);
        name_len += lens[4];
    }
    char key[3 * (ET_NAME_MAX + 1) + ET_DIMENSION_MAX + 1];
    for (size_t cut = 1; cut <= name_len; cut++) {
        if (cut < name_len && name[cut] != '-') continue;
        /* the other series: metric name[0, cut), unit name(cut, end) or none */
        const size_t metric_len = cut, unit_len = cut < name_len ? name_len - cut - 1 : 0;
        if (metric_len > ET_NAME_MAX || unit_len > ET_NAME_MAX) continue;
        if (cut < name_len && unit_len == 0) continue; /* a trailing hyphen: no unit "" */
        if (metric_len == lens[2] && unit_len == lens[4]) continue; /* this very series */
        const char *const parts[4] = {model, version, name, dimension};
        const size_t part_lens[4] = {lens[0], lens[1], metric_len, lens[3]};
        const size_t key_len = make_key(key, parts, part_lens);
        const int64_t other = registry_find(rec, key, key_len, hash_key(key, key_len),
                                            registered);
        if (other < 0) continue;
        const char *other_unit = series_unit(rec, (uint32_t)other, key_len);
        if (strlen(other_unit) == unit_len &&
            memcmp(other_unit, name + name_len - unit_len, unit_len) == 0)
            return other;
    }
    return -1;
}

static int series_add(et_recorder *rec, const char *model, const char *version,
                      const char *metric, const char *dimension, const char *unit, bool strict,
                      uint32_t *series_id) {
    if (rec == NULL || series_id == NULL) return ET_EINVAL;
    size_t lens[5];
    if (check_name(model, ET_NAME_MAX, false, &lens[0]) ||
        check_name(version, ET_NAME_MAX, false, &lens[1]) ||
        check_name(metric, ET_NAME_MAX, false, &lens[2]) ||
        check_name(dimension, ET_DIMENSION_MAX, true, &lens[3]) ||
        check_name(unit, ET_NAME_MAX, true, &lens[4]))
        return ET_ENAME;
    const char *parts[5] = {model, version, metric, dimension ? dimension : "",
                            unit ? unit : ""};
    char key[3 * (ET_NAME_MAX + 1) + ET_DIMENSION_MAX + 1];
    const size_t key_len = make_key(key, parts, lens);
    const uint32_t hash = hash_key(key, key_len);

    if (rec->shared && atomic_load_explicit(&rec->dead, memory_order_acquire))
        return ET_ETRUNCATED;
    return series_add_guarded(rec, parts, lens, key, key_len, hash, strict, series_id);
}

static int series_add_locked(et_recorder *rec, const char *const parts[5],
                             const size_t lens[5], const char *key, size_t key_len,
                             uint32_t hash, bool strict, uint32_t *series_id) {
    et_region *r = rec->region;
    const uint32_t n = et__series_count(rec);
    const int64_t found = registry_find(rec, key, key_len, hash, n);
    if (found >= 0) {
        if (strict && strcmp(series_unit(rec, (uint32_t)found, key_len), parts[4]) != 0)
            return ET_EUNIT;
        *series_id = (uint32_t)found;
        return ET_OK;
    }
    const int64_t clash =
        display_name_clash(rec, parts[0], parts[1], parts[2], parts[3], parts[4], lens, n);
    if (clash >= 0) {
        *series_id = (uint32_t)clash;
        return ET_ENAMECLASH;
    }
    const uint64_t need = key_len + lens[4] + 1;
    if (n >= rec->config.max_series) return ET_ESERIESFULL;
    if (r->arena_used > rec->config.names_bytes ||
        need > rec->config.names_bytes - r->arena_used)
        return ET_ENAMESFULL;
    /* Each step complete before the next is visible: names, record, arena, then the count
     * publishes the series (release).  A holder that dies before the count leaks arena bytes
     * at worst; the hash index is rebuilt from published records by whoever steals the
     * lock (registry_repair). */
    char *dst = rec->arena + r->arena_used;
    memcpy(dst, key, key_len);
    memcpy(dst + key_len, parts[4], lens[4] + 1);
    et_series_rec *sr = &rec->series[n];
    sr->name_off = r->arena_used;
    sr->name_len = (uint32_t)need;
    sr->hash = hash;
    sr->next = rec->hash[hash & rec->layout.hash_mask];
    rec->hash[hash & rec->layout.hash_mask] = n + 1;
    r->arena_used += (uint32_t)need;
    /* release: the names are complete before any reader sees the new count */
    atomic_store_explicit(&r->series_count, n + 1, memory_order_release);
    *series_id = n;
    return ET_OK;
}

int et_series_add(et_recorder *rec, const char *model, const char *version, const char *metric,
                  const char *dimension, uint32_t *series_id) {
    return series_add(rec, model, version, metric, dimension, NULL, false, series_id);
}

int et_series_add_unit(et_recorder *rec, const char *model, const char *version,
                       const char *metric, const char *dimension, const char *unit,
                       uint32_t *series_id) {
    return series_add(rec, model, version, metric, dimension, unit, true, series_id);
}

/* ---- introspection ---- */

static void info_counters(et_recorder *rec, et_info *out) {
    const et_region *r = rec->region;
    out->ring_high_water = r->ring_high_water;
    out->records_drained = r->records_drained;
    out->unknown_series = r->unknown_series;
    out->full_drains = r->full_drains;
    out->direct_values = r->direct_values;
    out->pool_exhausted = r->pool_exhausted;
    out->pages_high_water = r->pages_high_water;
    out->integrity_errors = r->integrity_errors;
    out->unknown_series += atomic_load_explicit(&rec->region->unknown_total,
                                                memory_order_relaxed) - r->unknown_folded;
}

static void info_read(et_recorder *rec, et_info *out) {
    et_region *r = rec->region;
    out->series = et__series_count(rec);
    for (uint32_t i = 0; i < rec->config.max_threads; i++)
        if (atomic_load_explicit(&et__ring(rec, i)->own, memory_order_relaxed) != 0)
            out->threads_active++;
    uint64_t previous;
    if (et__agg_enter_timed(rec, &previous)) {
        info_counters(rec, out);
        et__agg_leave(rec, previous);
    } else { /* a live process holds the lock too long: the agent reads without it */
        info_counters(rec, out);
    }
    out->collector_passes = atomic_load_explicit(&r->passes, memory_order_relaxed);
    out->window_seq =
        ET_WS_SEQ(atomic_load_explicit(&r->window_state, memory_order_relaxed));
}

int et_recorder_info(et_recorder *rec, et_info *out) {
    if (rec == NULL || out == NULL) return ET_EINVAL;
    memset(out, 0, sizeof *out);
    if (rec->shared && atomic_load_explicit(&rec->dead, memory_order_acquire))
        return ET_ETRUNCATED;
    if (rec->owner && !et__shared_size_ok(rec)) return ET_ETRUNCATED;
    out->config = rec->config;
    out->memory_bytes = rec->memory_bytes;
    out->relative_error = rec->relative_error;
    volatile int rc = ET_OK;
    ET_GUARDED(rec, rc = ET_ETRUNCATED, info_read(rec, out));
    if (rc != ET_OK) return rc;
    out->collector_period_ns = atomic_load_explicit(&rec->period_now_ns, memory_order_relaxed);
    /* what one more series costs: its aggregate and touched-list entry in both sets, its
     * registry record and hash buckets (two or more per series), its lock-free counters */
    const uint64_t hash_bytes = (uint64_t)(rec->layout.hash_mask + 1) * sizeof(uint32_t);
    const uint32_t series = rec->config.max_series ? rec->config.max_series : 1;
    out->series_bytes = (uint32_t)(2 * (rec->layout.agg_stride + sizeof(uint32_t)) +
                                   sizeof(et_series_rec) + sizeof(et_shared_counters) +
                                   (hash_bytes + series - 1) / series);
    out->page_bytes = rec->layout.page_words * sizeof(uint32_t);
    return ET_OK;
}

/* Copy series id's five names out of the arena, bounds-checked (the arena may have been
 * written over by another process). */
static int series_names_copy(et_recorder *rec, uint32_t id, char *buf, size_t cap) {
    if (id >= et__series_count(rec)) return ET_ENOSERIES;
    const et_series_rec *sr = &rec->series[id];
    const uint64_t off = sr->name_off, len = sr->name_len;
    if (len == 0 || off + len > rec->config.names_bytes) {
        rec->region->integrity_errors++;
        return ET_ENOSERIES;
    }
    if (len > cap) return ET_EINVAL;
    memcpy(buf, rec->arena + off, len);
    uint64_t at = 0;
    for (int k = 0; k < 5; k++) {
        const char *end = memchr(buf + at, '\0', len - at);
        if (end == NULL || (k < 4 && (uint64_t)(end - buf) + 1 >= len)) {
            rec->region->integrity_errors++;
            return ET_ENOSERIES;
        }
        at = (uint64_t)(end - buf) + 1;
    }
    return (int)at;
}

int et_series_names(et_recorder *rec, uint32_t series_id, char *buf, size_t capacity) {
    if (rec == NULL || buf == NULL) return ET_EINVAL;
    if (rec->shared && atomic_load_explicit(&rec->dead, memory_order_acquire))
        return ET_ETRUNCATED;
    if (rec->owner && !et__shared_size_ok(rec)) return ET_ETRUNCATED;
    volatile int rc = ET_OK;
    ET_GUARDED(rec, rc = ET_ETRUNCATED, rc = series_names_copy(rec, series_id, buf, capacity));
    return rc;
}

int et_recorder_edges(const et_recorder *rec, uint32_t *edges, uint32_t capacity) {
    if (rec == NULL || edges == NULL) return ET_EINVAL;
    const uint32_t n = rec->config.buckets_per_octave + 1;
    if (capacity < n) return ET_EINVAL;
    memcpy(edges, rec->edges, n * sizeof *edges);
    return (int)n;
}

#define ET__STR2(x) #x
#define ET__STR(x) ET__STR2(x)

const char *et_strerror(int code) {
    switch (code) {
    case ET_OK: return "ok";
    case ET_EINVAL: return "invalid argument";
    case ET_ENOMEM: return "out of memory";
    case ET_ESERIESFULL: return "series limit reached (raise max_series)";
    case ET_ENAME: return "invalid series name (empty, too long or a control character)";
    case ET_ENOSERIES: return "no such series";
    case ET_ETHREAD: return "thread operation failed";
    case ET_ERINGFULL: return "recorded from a signal handler during its thread's drain: dropped and counted";
    case ET_ENORING: return "no ring free for this thread: record dropped and counted";
    case ET_EUNIT: return "the series exists with another unit";
    case ET_ENAMESFULL: return "series names use up names_bytes (raise names_bytes)";
    case ET_ENOSEGMENT: return "no shared recorder at this path (is the agent running?)";
    case ET_ENOTSEGMENT: return "not an edgetelemetry shared recorder, or its header is damaged";
    case ET_ELAYOUT:
        return "the shared recorder has another layout version than this library's (layout "
               ET__STR(ET_SEGMENT_LAYOUT) "): use the same edgetelemetry version as the agent "
               "(et_segment_inspect names the file's)";
    case ET_EACCES: return "permission denied (the segment's group and mode decide who may attach)";
    case ET_EPROCFULL: return "the shared recorder's process table is full (raise max_processes)";
    case ET_ENOTOWNER: return "only the agent that created the shared recorder may do this";
    case ET_EBUSY: return "another agent owns this shared recorder";
    case ET_ECONFIG: return "the shared recorder exists with another configuration";
    case ET_ETRUNCATED: return "the shared recorder's file is shorter than its layout (truncated)";
    case ET_ETIMEDOUT:
        return "a live process held the recorder's lock too long: nothing changed, try again";
    case ET_ESYSTEM: return "a system call failed (errno says which)";
    case ET_ENAMECLASH:
        return "another series of this model, version and dimension has the same metric-unit "
               "name";
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
    .series_add_unit = et_series_add_unit,
};

const et_api *et_api_table(void) { return &api_table; }
