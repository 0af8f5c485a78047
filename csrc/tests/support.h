/* Helpers shared by the test files: recorders with small configs, window totals, clocks. */
#ifndef ET_TEST_SUPPORT_H
#define ET_TEST_SUPPORT_H

#include "edgetelemetry.h"
#include "et_test.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

/* Allocation-failure injection (alloc_fail.c, linked with -Wl,--wrap=...): the library's
 * malloc/calloc/posix_memalign/realloc calls go through a countdown. */
typedef enum { ET_FAIL_ONCE, ET_FAIL_FROM } et_fail_mode;
/* Fail the n-th allocation from now (0 = the next one): only that one, or that one and every
 * later one.  Disarm with et_alloc_disarm(), which says whether the failure was reached. */
void et_alloc_fail_at(uint64_t n, et_fail_mode mode);
bool et_alloc_disarm(void);
/* Allocations made through the wrappers and not yet freed (all threads). */
int64_t et_alloc_live(void);
/* Allocations attempted since start. */
uint64_t et_alloc_calls(void);
/* Make the next pthread_create and/or pthread_setspecific (any thread) fail. */
void et_thread_fail_next(bool create, bool setspecific);

/* Sanitizer builds scale work down; TSan cannot follow threads started in a fork child of a
 * multi-threaded parent (its registry still holds the parent's threads: "dup thread"). */
#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#ifndef TEST_TSAN
#define TEST_TSAN 0
#endif
#if TEST_TSAN || defined(__SANITIZE_ADDRESS__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif
#ifndef TEST_SANITIZED
#define TEST_SANITIZED 0
#endif

static inline et_config test_config(uint32_t ring, uint32_t threads, uint32_t series) {
    et_config c;
    memset(&c, 0, sizeof c);
    c.ring_capacity = ring;
    c.max_threads = threads;
    c.max_series = series;
    return c;
}

static inline et_recorder *test_recorder(uint32_t ring, uint32_t threads, uint32_t series) {
    et_config c = test_config(ring, threads, series);
    et_recorder *rec = NULL;
    const int rc = et_recorder_new(&c, &rec);
    ET_CHECKF(rc == ET_OK && rec != NULL, "et_recorder_new: %s", et_strerror(rc));
    return rc == ET_OK ? rec : NULL;
}

static inline uint32_t test_series(et_recorder *rec, const char *metric) {
    uint32_t id = UINT32_MAX;
    const int rc = et_series_add(rec, "model", "1", metric, NULL, &id);
    ET_CHECKF(rc == ET_OK, "et_series_add(%s): %s", metric, et_strerror(rc));
    return id;
}

/* Per-series sums over any number of closed windows. */
typedef struct test_totals {
    uint64_t count, zero, buckets_total, windows, coarse;
    uint64_t rejected[ET_REJECT_REASONS];
    uint64_t dropped[ET_DROP_REASONS];
    double sum, min, max;
} test_totals;

static inline void test_totals_init(test_totals *t, size_t n) {
    memset(t, 0, n * sizeof *t);
    for (size_t i = 0; i < n; i++) {
        t[i].min = INFINITY;
        t[i].max = -INFINITY;
    }
}

/* Stats of series id in a window: false (and zeros) when the window does not list it, which
 * means it had no activity. */
static inline bool test_stats_of(const et_window *w, uint32_t id, et_series_stats *st) {
    memset(st, 0, sizeof *st);
    uint32_t i;
    if (et_window_series_find(w, id, &i) != ET_OK) return false;
    ET_CHECK_RC(et_window_series_stats(w, i, st), ET_OK);
    return true;
}

/* Add a closed window into totals[0..n), indexed by series id (ids >= n are a failure).
 * Checks what the window promises: ids increasing, only series with activity listed. */
static inline void test_totals_add(test_totals *t, size_t n, const et_window *w) {
    const uint32_t k = et_window_series_count(w);
    ET_CHECKF(k <= n, "window lists %u series, expected at most %zu", k, n);
    uint32_t previous = 0;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t id = UINT32_MAX, back = UINT32_MAX;
        ET_CHECK_RC(et_window_series_id(w, i, &id), ET_OK);
        ET_CHECK_RC(et_window_series_find(w, id, &back), ET_OK);
        ET_CHECK_EQ_U(back, i);
        if (i) ET_CHECKF(id > previous, "ids not increasing: %u after %u", id, previous);
        previous = id;
        ET_CHECKF(id < n, "window lists series %u, expected ids below %zu", id, n);
        if (id >= n) continue;
        et_series_stats st;
        ET_CHECK_RC(et_window_series_stats(w, i, &st), ET_OK);
        uint64_t activity = st.count;
        for (int r = 0; r < ET_REJECT_REASONS; r++) activity += st.rejected[r];
        for (int r = 0; r < ET_DROP_REASONS; r++) activity += st.dropped[r];
        ET_CHECKF(activity > 0, "window lists series %u without activity", id);
        ET_CHECKF(st.coarse <= st.count, "series %u: coarse %" PRIu64 " of %" PRIu64, id,
                  st.coarse, st.count);
        test_totals *tt = &t[id];
        tt->windows++;
        tt->count += st.count;
        tt->zero += st.zero;
        tt->coarse += st.coarse;
        tt->sum += st.sum;
        for (int r = 0; r < ET_REJECT_REASONS; r++) tt->rejected[r] += st.rejected[r];
        for (int r = 0; r < ET_DROP_REASONS; r++) tt->dropped[r] += st.dropped[r];
        if (st.count) {
            if (st.min < tt->min) tt->min = st.min;
            if (st.max > tt->max) tt->max = st.max;
        }
        if (st.buckets) {
            uint32_t *idx = malloc(st.buckets * sizeof *idx);
            uint64_t *cnt = malloc(st.buckets * sizeof *cnt);
            ET_CHECK(idx && cnt);
            if (idx && cnt) {
                ET_CHECK_EQ_I(et_window_buckets(w, i, idx, cnt, st.buckets), st.buckets);
                for (uint32_t b = 0; b < st.buckets; b++) {
                    tt->buckets_total += cnt[b];
                    if (b) ET_CHECK(idx[b] > idx[b - 1]);
                }
            }
            free(idx);
            free(cnt);
        }
    }
}

/* Close a window into totals; returns its seq (or UINT64_MAX on failure). */
static inline uint64_t test_close_into(et_recorder *rec, test_totals *t, size_t n) {
    et_window *w = NULL;
    const int rc = et_window_close(rec, &w);
    ET_CHECKF(rc == ET_OK && w != NULL, "et_window_close: %s", et_strerror(rc));
    if (rc != ET_OK || w == NULL) return UINT64_MAX;
    test_totals_add(t, n, w);
    const uint64_t seq = et_window_seq(w);
    et_window_free(w);
    return seq;
}

static inline int64_t test_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void test_sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* xorshift64*: deterministic, seedable, good enough for test data. */
static inline uint64_t test_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static inline double test_rand_unit(uint64_t *s) { /* [0, 1) */
    return (double)(test_rand(s) >> 11) * 0x1.0p-53;
}

#endif
