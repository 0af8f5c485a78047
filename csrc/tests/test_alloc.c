/* Allocation-failure injection (mpack style): every allocation et_recorder_new and
 * et_window_close make is failed in turn, alone and together with every later one; each must
 * return ET_ENOMEM with nothing leaked and nothing changed.  The wrappers count live
 * allocations, so a leak fails here in any build; under ASan, LSan checks again at exit. */
#include "support.h"

static void new_fails_cleanly(const et_config *cfg, const char *what) {
    for (int mode = ET_FAIL_ONCE; mode <= ET_FAIL_FROM; mode++) {
        uint64_t points = 0;
        for (uint64_t k = 0;; k++) {
            const int64_t live = et_alloc_live();
            et_recorder *rec = (et_recorder *)&points; /* must be cleared on failure */
            et_alloc_fail_at(k, (et_fail_mode)mode);
            const int rc = et_recorder_new(cfg, &rec);
            const bool hit = et_alloc_disarm();
            if (!hit) { /* k is past the last allocation: the call must simply work */
                ET_CHECKF(rc == ET_OK, "%s: no failure injected, got %s", what, et_strerror(rc));
                if (rc == ET_OK) {
                    /* and the recorder works */
                    uint32_t s;
                    ET_CHECK_RC(et_series_add(rec, "m", "1", "x", NULL, &s), ET_OK);
                    ET_CHECK_RC(et_record(rec, s, 1.0), ET_OK);
                    test_totals t;
                    test_totals_init(&t, 1);
                    test_close_into(rec, &t, 1);
                    ET_CHECK_EQ_U(t.count, 1);
                    et_recorder_free(rec);
                }
                ET_CHECK_EQ_I(et_alloc_live(), live);
                break;
            }
            points++;
            ET_CHECKF(rc == ET_ENOMEM, "%s: allocation %" PRIu64 " failed (mode %d): got %s",
                      what, k, mode, et_strerror(rc));
            ET_CHECKF(rec == NULL, "%s: *out set after failure at %" PRIu64, what, k);
            ET_CHECKF(et_alloc_live() == live, "%s: failure at allocation %" PRIu64
                      " (mode %d) leaked %" PRId64 " blocks", what, k, mode,
                      et_alloc_live() - live);
            if (rc == ET_OK && rec) et_recorder_free(rec);
            if (k > 100000) break;
        }
        /* the handle and the region: everything else lives inside the region */
        ET_CHECKF(points == 2, "%s: %" PRIu64 " failure points", what, points);
    }
}

ET_TEST(alloc_failure_recorder_new) {
    new_fails_cleanly(NULL, "defaults");
    et_config c = test_config(64, 3, 5);
    new_fails_cleanly(&c, "3 threads, 5 series");
    c = test_config(128, 1, 1);
    c.buckets_per_octave = 255;
    new_fails_cleanly(&c, "1 thread, 1 series, 255 buckets per octave");
}

/* Fill three series (one left empty), then fail each allocation of et_window_close in turn:
 * ENOMEM, no window, nothing leaked, the window stays open with everything in it. */
ET_TEST(alloc_failure_window_close) {
    for (int mode = ET_FAIL_ONCE; mode <= ET_FAIL_FROM; mode++) {
        et_recorder *rec = test_recorder(256, 2, 4);
        ET_REQUIRE(rec);
        const uint32_t a = test_series(rec, "a"), b = test_series(rec, "b");
        test_series(rec, "empty");
        uint64_t made_a = 0, made_b = 0;
        uint64_t points = 0;
        for (uint64_t k = 0;; k++) {
            /* new records each round: a failed close must not lose them */
            ET_CHECK_RC(et_record(rec, a, 1.0 + (double)k), ET_OK);
            ET_CHECK_RC(et_record(rec, b, -2.0), ET_OK);
            ET_CHECK_RC(et_count_drop(rec, b, ET_DROP_CLOSED), ET_OK);
            made_a++;
            made_b++;
            et_info before;
            ET_CHECK_RC(et_recorder_info(rec, &before), ET_OK);
            const int64_t live = et_alloc_live();
            et_window *w = (et_window *)&points;
            et_alloc_fail_at(k, (et_fail_mode)mode);
            const int rc = et_window_close(rec, &w);
            const bool hit = et_alloc_disarm();
            if (!hit) {
                ET_CHECK_RC(rc, ET_OK);
                ET_REQUIRE(rc == ET_OK && w != NULL);
                ET_CHECK_EQ_U(et_window_seq(w), 0); /* every failed close left seq alone */
                test_totals t[3];
                test_totals_init(t, 3);
                test_totals_add(t, 3, w);
                ET_CHECK_EQ_U(t[0].count, made_a);
                ET_CHECK_EQ_D(t[0].sum, (double)made_a * (double)(made_a + 1) / 2);
                ET_CHECK_EQ_U(t[0].buckets_total, made_a);
                ET_CHECK_EQ_U(t[1].count, made_b);
                ET_CHECK_EQ_U(t[1].dropped[ET_DROP_CLOSED], made_b);
                ET_CHECK_EQ_U(t[2].windows, 0); /* nothing recorded: not listed */
                et_window_free(w);
                ET_CHECK_EQ_I(et_alloc_live(), live);
                break;
            }
            points++;
            ET_CHECKF(rc == ET_ENOMEM, "close: allocation %" PRIu64 " failed: got %s", k,
                      et_strerror(rc));
            ET_CHECKF(w == NULL, "close: *out set after failure at %" PRIu64, k);
            ET_CHECKF(et_alloc_live() == live,
                      "close: failure at allocation %" PRIu64 " (mode %d) leaked %" PRId64, k,
                      mode, et_alloc_live() - live);
            et_info after;
            ET_CHECK_RC(et_recorder_info(rec, &after), ET_OK);
            ET_CHECK_EQ_U(after.window_seq, before.window_seq);
            if (k > 10000) break;
        }
        /* one allocation per window, sized before the sets flip */
        ET_CHECKF(points == 1, "close: %" PRIu64 " failure points", points);
        et_recorder_free(rec);
    }
}

/* The hot path and the collector never allocate. */
ET_TEST(no_allocation_on_record_or_collect) {
    et_recorder *rec = test_recorder(256, 2, 2);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    ET_CHECK_RC(et_record(rec, s, 1.0), ET_OK); /* claim the ring first */
    const uint64_t calls = et_alloc_calls();
    const double v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int i = 0; i < 1000; i++) {
        ET_CHECK(et_record(rec, s, i) != ET_ENOMEM);
        ET_CHECK(et_record_many(rec, s, v, 8) >= 0);
        if (i % 10 == 0) ET_CHECK_RC(et_collect(rec), ET_OK);
    }
    /* and the paths past the ring: its producer draining it, a batch and a group larger
     * than the ring, aggregated by their caller */
    for (int i = 0; i < 2000; i++) ET_CHECK_RC(et_record(rec, s, i), ET_OK);
    static double big[1000];
    static uint32_t ids[300];
    for (int i = 0; i < 1000; i++) big[i] = i;
    ET_CHECK_EQ_I(et_record_many(rec, s, big, 1000), 1000);
    ET_CHECK_EQ_I(et_record_group(rec, ids, big, 300), 300);
    ET_CHECK_RC(et_count_reject(rec, s, ET_REJECT_TYPE), ET_OK);
    ET_CHECK_RC(et_count_drop(rec, s, ET_DROP_CLOSED), ET_OK);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK(info.full_drains > 0 && info.direct_values == 1300);
    uint32_t edges[64];
    ET_CHECK(et_recorder_edges(rec, edges, 64) > 0);
    uint32_t again;
    ET_CHECK_RC(et_series_add(rec, "m", "1", "y", NULL, &again), ET_OK);
    ET_CHECK_EQ_U(et_alloc_calls(), calls);
    et_recorder_free(rec);
}

typedef struct record_twice_arg {
    et_recorder *rec;
    int rc1, rc2;
} record_twice_arg;

static void *record_twice(void *p) {
    record_twice_arg *arg = p;
    arg->rc1 = et_record(arg->rec, 0, 1.0);
    arg->rc2 = et_record(arg->rec, 0, 2.0);
    return NULL;
}

/* Thread-call failures: a collector that cannot start says ET_ETHREAD and leaves the recorder
 * usable; a thread that cannot register for exit notification gets no ring, and its record
 * is aggregated directly instead (nothing lost). */
ET_TEST(thread_call_failures) {
    et_recorder *rec = test_recorder(64, 2, 1);
    ET_REQUIRE(rec);
    test_series(rec, "x");
    et_thread_fail_next(true, false);
    ET_CHECK_RC(et_collector_start(rec, 1000000), ET_ETHREAD);
    et_thread_fail_next(false, false);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.collector_period_ns, 0);
    ET_CHECK_RC(et_collector_stop(rec), ET_OK);
    ET_CHECK_RC(et_collector_start(rec, 1000000), ET_OK);
    ET_CHECK_RC(et_collector_stop(rec), ET_OK);

    /* pthread_setspecific is called when a thread first claims a ring: use a fresh thread */
    record_twice_arg arg = {rec, 0, 0};
    pthread_t th;
    ET_REQUIRE(pthread_create(&th, NULL, record_twice, &arg) == 0);
    pthread_join(th, NULL); /* a normal thread, to have a baseline */
    ET_CHECK_RC(arg.rc1, ET_OK);
    et_thread_fail_next(false, true);
    ET_REQUIRE(pthread_create(&th, NULL, record_twice, &arg) == 0);
    pthread_join(th, NULL);
    et_thread_fail_next(false, false);
    ET_CHECK_RC(arg.rc1, ET_OK); /* no ring: aggregated directly */
    ET_CHECK_RC(arg.rc2, ET_OK); /* the next record retries and gets a ring */
    test_totals t;
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, 4);
    ET_CHECK_EQ_D(t.sum, 6.0);
    ET_CHECK_EQ_U(t.dropped[ET_DROP_NO_RING], 0);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.direct_values, 1);
    ET_CHECK_EQ_U(info.threads_active, 0); /* both rings came back at thread exit */
    et_recorder_free(rec);
}
