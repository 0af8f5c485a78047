/* Nothing lost, whatever runs out: histogram pages (values kept with octave precision),
 * bucket width (a bucket that would pass 2^32), the recorder's own memory written over (every
 * index bounds-checked: run under ASan, these prove it), and a signal handler that records
 * while its thread drains (the one drop left, counted).  The white-box tests reach into the
 * region through the internal header, as a scribbling process could in a shared recorder. */
#include "support.h"

#include "../src/internal.h"
#include "../src/lock.h"

#include <signal.h>

/* ---- the page pool ---- */

ET_TEST(pool_used_up_keeps_values_with_octave_precision) {
    et_config c = test_config(1024, 1, 2);
    c.histogram_pages = 4;
    et_recorder *rec = NULL;
    ET_REQUIRE_OK(et_recorder_new(&c, &rec));
    const uint32_t s = test_series(rec, "x");
    /* ten octaves, ten values each, in order: the first four get pages */
    double sum = 0;
    for (int k = 0; k < 10; k++) {
        for (int i = 0; i < 10; i++) {
            ET_CHECK_RC(et_record(rec, s, ldexp(1.3, k)), ET_OK);
            sum += ldexp(1.3, k);
        }
    }
    for (int i = 0; i < 5; i++) ET_CHECK_RC(et_record(rec, s, -1.5), ET_OK);
    for (int i = 0; i < 3; i++) ET_CHECK_RC(et_record(rec, s, 0.0), ET_OK);
    sum += 5 * -1.5;
    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    et_series_stats st;
    ET_REQUIRE(test_stats_of(w, s, &st));
    /* count, sum and extremes exact; 65 values with octave precision, counted as such */
    ET_CHECK_EQ_U(st.count, 108);
    ET_CHECK_EQ_D(st.sum, sum);
    ET_CHECK_EQ_D(st.min, -1.5);
    ET_CHECK_EQ_D(st.max, ldexp(1.3, 9));
    ET_CHECK_EQ_U(st.zero, 3);
    ET_CHECK_EQ_U(st.coarse, 6 * 10 + 5);
    uint32_t idx[32];
    uint64_t cnt[32];
    const int k = et_window_buckets(w, 0, idx, cnt, 32);
    ET_REQUIRE(k == 11); /* one bucket per octave: 10 positive, 1 negative */
    const uint32_t K = 36, bps = K * 70;
    for (int b = 0; b < 10; b++) {
        /* each in its own octave (1.3 * 2^b: octave b + 30 above 2^-30) */
        ET_CHECK_EQ_U(idx[b] / K, (uint32_t)b + 30);
        ET_CHECK_EQ_U(cnt[b], 10);
        if (b >= 4) ET_CHECK_EQ_U(idx[b] % K, K / 2); /* coarse: the octave's middle */
        else ET_CHECK(idx[b] % K != K / 2);          /* 1.3 is below the middle bucket */
    }
    ET_CHECK_EQ_U(idx[10], bps + 30 * K + K / 2);
    ET_CHECK_EQ_U(cnt[10], 5);
    et_window_free(w);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.pool_exhausted, 7);
    ET_CHECK_EQ_U(info.pages_high_water, 4);

    /* the next window has its pages again */
    ET_CHECK_RC(et_record(rec, s, ldexp(1.3, 8)), ET_OK);
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_REQUIRE(test_stats_of(w, s, &st));
    ET_CHECK_EQ_U(st.coarse, 0);
    ET_CHECK_EQ_I(et_window_buckets(w, 0, idx, cnt, 32), 1);
    ET_CHECK(idx[0] % K != K / 2);
    et_window_free(w);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.pool_exhausted, 7);
    et_recorder_free(rec);
}

/* Through every path (ring, batch past the ring, group past the ring), many series share a
 * pool too small for them: totals stay exact. */
ET_TEST(pool_shared_by_many_series_stays_exact) {
    et_config c = test_config(64, 1, 8);
    c.histogram_pages = 10;
    et_recorder *rec = NULL;
    ET_REQUIRE_OK(et_recorder_new(&c, &rec));
    for (int s = 0; s < 8; s++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", s);
        test_series(rec, name);
    }
    uint64_t seed = 7;
    double v[500];
    uint32_t ids[500];
    test_totals want[8], got[8];
    test_totals_init(want, 8);
    test_totals_init(got, 8);
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 500; i++) {
            v[i] = ldexp(1.0 + test_rand_unit(&seed), (int)(test_rand(&seed) % 40) - 20);
            ids[i] = (uint32_t)(test_rand(&seed) % 8);
        }
        const uint32_t s = (uint32_t)round % 8;
        if (round % 3 == 0) {
            for (int i = 0; i < 500; i++) ET_CHECK_RC(et_record(rec, ids[i], v[i]), ET_OK);
            for (int i = 0; i < 500; i++) {
                want[ids[i]].count++;
                want[ids[i]].sum += v[i];
            }
        } else if (round % 3 == 1) {
            ET_CHECK_EQ_I(et_record_many(rec, s, v, 500), 500);
            for (int i = 0; i < 500; i++) {
                want[s].count++;
                want[s].sum += v[i];
            }
        } else {
            ET_CHECK_EQ_I(et_record_group(rec, ids, v, 500), 500);
            for (int i = 0; i < 500; i++) {
                want[ids[i]].count++;
                want[ids[i]].sum += v[i];
            }
        }
        if (round % 10 == 9) test_close_into(rec, got, 8);
    }
    test_close_into(rec, got, 8);
    for (int s = 0; s < 8; s++) {
        ET_CHECK_EQ_U(got[s].count, want[s].count);
        ET_CHECK(fabs(got[s].sum - want[s].sum) <= 1e-9 * fabs(want[s].sum));
        ET_CHECK_EQ_U(got[s].buckets_total, got[s].count); /* every value in some bucket */
        ET_CHECK(got[s].coarse > 0);                       /* 10 pages for 8 x 40 octaves */
    }
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK(info.pool_exhausted > 0);
    ET_CHECK_EQ_U(info.integrity_errors, 0);
    et_recorder_free(rec);
}

/* ---- a bucket at 2^32 - 1 (white-box: 4 billion records would take a while) ---- */

/* Bring series 0's bucket for `value` to UINT32_MAX - 2 in the active set, as if 4 billion
 * values had been recorded into it, and the set's fill with it (fill bounds every bucket). */
static void nearly_full_bucket(et_recorder *rec, double value) {
    const uint32_t set = et__active(rec);
    et_aggregate *agg = et__agg(rec, set, 0);
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    const uint64_t off = agg->pages[rec->slot_of[bits >> 52]];
    ET_REQUIRE(off < rec->page_limit);
    const uint32_t sub = rec->sub_bucket_of[(bits >> 40) & 0xfff];
    rec->pools[set][off + sub] = UINT32_MAX - 2;
    rec->sets[set]->fill = UINT32_MAX - 2;
}

ET_TEST(full_bucket_spills_to_octave_counter) {
    et_recorder *rec = test_recorder(64, 1, 1);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    const uint32_t K = 36;
    const uint32_t octave = 1 + 30, sub = 21; /* 3.0 = 1.5 * 2^1; 2^(21/36) <= 1.5 */
    for (int path = 0; path < 3; path++) {
        ET_CHECK_RC(et_record(rec, s, 3.0), ET_OK);
        ET_CHECK_RC(et_collect(rec), ET_OK); /* its page exists now */
        nearly_full_bucket(rec, 3.0);
        double five[100];
        uint32_t ids[100] = {0};
        for (int i = 0; i < 100; i++) five[i] = 3.0;
        if (path == 0) { /* through the ring */
            for (int i = 0; i < 5; i++) ET_CHECK_RC(et_record(rec, s, 3.0), ET_OK);
        } else if (path == 1) { /* a batch past the ring */
            ET_CHECK_EQ_I(et_record_many(rec, s, five, 100), 100);
        } else { /* a group past the ring */
            ET_CHECK_EQ_I(et_record_group(rec, ids, five, 100), 100);
        }
        const uint64_t n = path == 0 ? 5 : 100;
        et_window *w = NULL;
        ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
        ET_REQUIRE(w);
        et_series_stats st;
        ET_REQUIRE(test_stats_of(w, s, &st));
        ET_CHECK_EQ_U(st.count, 1 + n);
        ET_CHECK_EQ_U(st.coarse, n - 2); /* two fit before the bucket is full */
        uint32_t idx[4];
        uint64_t cnt[4];
        ET_REQUIRE(et_window_buckets(w, 0, idx, cnt, 4) == 2);
        ET_CHECK_EQ_U(idx[0], octave * K + K / 2); /* the octave's counter, at its middle */
        ET_CHECK_EQ_U(cnt[0], n - 2);
        ET_CHECK_EQ_U(idx[1], octave * K + sub);
        ET_CHECK_EQ_U(cnt[1], UINT32_MAX); /* full, never wrapped */
        et_window_free(w);
    }
    et_recorder_free(rec);
}

/* ---- the region written over: refused, never followed out of bounds ---- */

ET_TEST(scribbled_region_is_bounds_checked) {
    et_recorder *rec = test_recorder(64, 2, 4);
    ET_REQUIRE(rec);
    const uint32_t a = test_series(rec, "a"), b = test_series(rec, "b");
    ET_CHECK_RC(et_record(rec, a, 2.0), ET_OK);
    ET_CHECK_RC(et_collect(rec), ET_OK);
    et_region *r = rec->region;
    const uint32_t set = et__active(rec);

    /* a ring whose head runs far past its tail: resynchronised, not read 10 rings long */
    et_ring *ring = et__ring(rec, 0);
    ET_CHECK_RC(et_record(rec, a, 2.0), ET_OK);
    atomic_store(&ring->head, atomic_load(&ring->tail) + 10 * 64);
    ET_CHECK_RC(et_collect(rec), ET_OK);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.integrity_errors, 1);
    ring->cached_limit = atomic_load(&ring->head) + 64; /* what the producer resyncs to */

    /* a page-table entry pointing past the pool: the value is kept, coarse */
    et_aggregate *agg = et__agg(rec, set, a);
    for (uint32_t slot = 0; slot < rec->layout.slots - 1; slot++)
        if (agg->pages[slot] != ET_NO_PAGE) agg->pages[slot] = rec->page_limit + 12345;
    ET_CHECK_RC(et_record(rec, a, 2.0), ET_OK);
    ET_CHECK_RC(et_collect(rec), ET_OK);

    /* a registry record whose names run past the arena: listed with empty names */
    rec->series[b].name_len = rec->config.names_bytes + 100;
    ET_CHECK_RC(et_record(rec, b, 5.0), ET_OK);
    /* a series count past max_series: clamped */
    atomic_store(&r->series_count, 1000);
    ET_CHECK_RC(et_record(rec, 999, 1.0), ET_OK); /* unknown, not aggregate 999 */
    ET_CHECK_RC(et_collect(rec), ET_OK);
    atomic_store(&r->series_count, 2);

    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    et_series_stats st;
    ET_REQUIRE(test_stats_of(w, a, &st));
    ET_CHECK_EQ_U(st.count, 2); /* the one read out of the scribbled ring was refused */
    ET_CHECK_EQ_U(st.coarse, 1);
    ET_REQUIRE(test_stats_of(w, b, &st));
    ET_CHECK_EQ_U(st.count, 1);
    uint32_t i;
    ET_CHECK_RC(et_window_series_find(w, b, &i), ET_OK);
    const char *mo = NULL;
    ET_CHECK_RC(et_window_series_names(w, i, &mo, NULL, NULL, NULL), ET_OK);
    ET_CHECK(mo != NULL && mo[0] == '\0');
    et_window_free(w);
    /* the registry's own accessor refuses it (no names past the arena), and counts it */
    char names[ET_SERIES_NAMES_MAX];
    ET_CHECK_RC(et_series_names(rec, b, names, sizeof names), ET_ENOSERIES);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK(info.integrity_errors >= 4);
    ET_CHECK(info.unknown_series >= 1);

    /* a touched list and count written over: bounded, and the close still works */
    const uint32_t closing = et__active(rec);
    rec->sets[closing]->touched_count = 1000000;
    for (uint32_t k = 0; k < rec->config.max_series; k++) rec->touched[closing][k] = 77777 + k;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    et_window_free(w);
    ET_CHECK_RC(et_record(rec, a, 1.0), ET_OK);
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_REQUIRE(test_stats_of(w, a, &st));
    ET_CHECK_EQ_U(st.count, 1);
    et_window_free(w);
    et_recorder_free(rec);
}

/* ---- a signal handler that records while its thread drains ---- */

static et_recorder *sig_rec;
static uint32_t sig_series;
static volatile sig_atomic_t sig_armed;
/* Set around an et_record that drains its full ring: the handler records only while that
 * ring is still full, i.e. before the drain has given it room.  Right after the drain the
 * call pushes into the ring, with the head it read before: a handler that recorded into
 * the ring in between was overwritten (recording into the ring its thread is pushing to is
 * not supported).  Under ASan, 3 runs in 200 lost values that way, before issue 14 too.
 * While the ring is full the handler only drops (counted); the et_collect rounds have it
 * recording normally too. */
static volatile sig_atomic_t sig_inside_drain_only;
static et_ring *sig_ring; /* this thread's ring in sig_rec */
static _Atomic uint64_t sig_ok, sig_dropped, sig_calls;

/* Alternates the three recording calls; counts what each kept and what it dropped. */
static void on_signal(int sig) {
    (void)sig;
    if (!sig_armed) return;
    if (sig_inside_drain_only &&
        (!et__agg_held(sig_rec) ||
         atomic_load(&sig_ring->head) - atomic_load(&sig_ring->tail) < sig_rec->config.ring_capacity))
        return;
    const uint64_t call = atomic_fetch_add(&sig_calls, 1);
    const double v[3] = {1.0, 1.0, 1.0};
    const uint32_t ids[2] = {sig_series, sig_series};
    if (call % 3 == 0) {
        const int rc = et_record(sig_rec, sig_series, 1.0);
        atomic_fetch_add(rc == ET_OK ? &sig_ok : &sig_dropped, 1);
        if (rc != ET_OK && rc != ET_ERINGFULL) abort();
    } else if (call % 3 == 1) {
        const int64_t took = et_record_many(sig_rec, sig_series, v, 3);
        if (took < 0 || took > 3) abort();
        atomic_fetch_add(&sig_ok, (uint64_t)took);
        atomic_fetch_add(&sig_dropped, 3 - (uint64_t)took);
    } else {
        const int64_t got = et_record_group(sig_rec, ids, v, 2);
        if (got != 2 && got != ET_ERINGFULL) abort();
        atomic_fetch_add(got == 2 ? &sig_ok : &sig_dropped, 2);
    }
}

typedef struct signaller {
    pthread_t target;
    _Atomic bool stop;
} signaller;

static void *signaller_main(void *arg) {
    signaller *s = arg;
    while (!atomic_load(&s->stop)) {
        pthread_kill(s->target, SIGUSR1);
        test_sleep_us(30);
    }
    return NULL;
}

/* The thread's own drains (a full ring, et_collect) are long here (a 64k ring): signals land
 * inside them, and those records are dropped and counted instead of deadlocking; signals
 * landing elsewhere record normally.  Every value is accounted for. */
ET_TEST(signal_handler_recording_during_own_drain) {
    const uint32_t capacity = 1u << 16;
    sig_rec = test_recorder(capacity, 2, 1);
    ET_REQUIRE(sig_rec);
    sig_series = test_series(sig_rec, "x");
    atomic_store(&sig_ok, 0);
    atomic_store(&sig_dropped, 0);
    atomic_store(&sig_calls, 0);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ET_REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    ET_CHECK_RC(et_record(sig_rec, sig_series, 2.0), ET_OK); /* this thread's ring */
    ET_CHECK_RC(et_collect(sig_rec), ET_OK);
    for (uint32_t i = 0; i < sig_rec->config.max_threads; i++)
        if ((uint32_t)atomic_load(&et__ring(sig_rec, i)->own) == et__tid())
            sig_ring = et__ring(sig_rec, i);
    ET_REQUIRE(sig_ring != NULL);
    signaller *sg = calloc(1, sizeof *sg);
    ET_REQUIRE(sg);
    sg->target = pthread_self();
    pthread_t th;
    ET_REQUIRE(pthread_create(&th, NULL, signaller_main, sg) == 0);
    uint64_t mine = 0;
    const int64_t deadline = test_now_ns() + 20000000000ll;
    for (int round = 0; atomic_load(&sig_dropped) < 10 && test_now_ns() < deadline; round++) {
        /* fill the (drained) ring with the handler quiet: a handler recording into the ring
         * its thread is pushing to would interrupt the push, which no one supports */
        for (uint32_t i = 0; i < capacity; i++)
            ET_CHECK_RC(et_record(sig_rec, sig_series, 2.0), ET_OK);
        mine += capacity;
        sig_inside_drain_only = round % 2 == 0;
        sig_armed = 1;
        if (round % 2) {
            ET_CHECK_RC(et_collect(sig_rec), ET_OK); /* drains as the collector */
        } else {
            ET_CHECK_RC(et_record(sig_rec, sig_series, 2.0), ET_OK); /* finds it full */
            mine++;
        }
        sig_armed = 0;
        sig_inside_drain_only = 0;
        ET_CHECK_RC(et_collect(sig_rec), ET_OK);
    }
    atomic_store(&sg->stop, true);
    pthread_join(th, NULL);
    sigaction(SIGUSR1, &old, NULL);
    const uint64_t ok = atomic_load(&sig_ok), dropped = atomic_load(&sig_dropped);
    ET_CHECKF(dropped >= 10, "only %" PRIu64 " re-entrant records in 20 s", dropped);
    test_totals t;
    test_totals_init(&t, 1);
    test_close_into(sig_rec, &t, 1);
    ET_CHECK_EQ_U(t.count, mine + ok + 1);
    ET_CHECK_EQ_D(t.sum, 2.0 * (double)(mine + 1) + (double)ok);
    ET_CHECK_EQ_U(t.dropped[ET_DROP_RING_FULL], dropped);
    printf("     %" PRIu64 " signals: %" PRIu64 " values recorded, %" PRIu64
           " dropped re-entrantly (counted)\n",
           atomic_load(&sig_calls), ok, dropped);
    et_recorder_free(sig_rec);
    free(sg);
}
