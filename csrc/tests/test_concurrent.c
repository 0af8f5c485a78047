/* Multi-threaded validators in the style of ck's regressions/ck_ring/validate: producers
 * record tagged values (single records, batches larger than the ring, groups) while
 * consumers close windows, collect, start and stop the collector; at the end every record
 * made is accounted for exactly, per series, and none was dropped:
 *     sum over windows of count == records made, drops == 0,
 * with sum, min and max exact too.  Rings are small so that producers find them full and
 * drain them themselves; more producers than rings aggregate directly. */
#include "support.h"

#define SANITIZED TEST_SANITIZED
#define MAX_SERIES 8

/* What one producer did, per series; the test adds them up after join. */
typedef struct producer {
    pthread_t thread;
    et_recorder *rec;
    unsigned index;
    uint32_t series;        /* series used: ids 0..series-1 */
    uint64_t records;       /* records to make */
    uint64_t ok[MAX_SERIES];
    double sum[MAX_SERIES], min[MAX_SERIES], max[MAX_SERIES];
    bool use_many;
} producer;

/* Value i of producer p: an integer tag, so sums stay exact in any order. */
static double tagged(unsigned p, uint64_t i) { return (double)((p + 1) * 1000 + i % 97); }

/* Nothing may be dropped (no signal handler records here): anything but ET_OK fails. */
static void account(producer *p, uint32_t s, double v, int rc) {
    ET_CHECKF(rc == ET_OK, "a record returned %s", et_strerror(rc));
    p->ok[s]++;
    p->sum[s] += v;
    if (v < p->min[s]) p->min[s] = v;
    if (v > p->max[s]) p->max[s] = v;
}

#define BATCH 300 /* larger than the smallest rings: those batches bypass them */

static void *producer_main(void *arg) {
    producer *p = arg;
    for (uint32_t s = 0; s < MAX_SERIES; s++) {
        p->min[s] = INFINITY;
        p->max[s] = -INFINITY;
    }
    double batch[BATCH];
    for (uint64_t i = 0; i < p->records;) {
        const uint32_t s = (uint32_t)((i / 3 + p->index) % p->series);
        if (p->use_many && i % 64 == 0 && i + 8 <= p->records) {
            /* mostly small batches (the ring), every 16th a large one (past the ring) */
            const uint64_t n = i % 1024 == 0 && i + BATCH <= p->records ? BATCH : 8;
            for (uint64_t k = 0; k < n; k++) batch[k] = tagged(p->index, i + k);
            const int64_t took = et_record_many(p->rec, s, batch, n);
            ET_CHECKF(took == (int64_t)n, "et_record_many returned %" PRId64, took);
            for (uint64_t k = 0; k < n; k++) account(p, s, batch[k], ET_OK);
            i += n;
            continue;
        }
        if (p->use_many && i % 64 == 32 && i + p->series <= p->records) {
            /* one inference's metrics: one value into each series, all or none */
            uint32_t ids[MAX_SERIES];
            for (uint32_t k = 0; k < p->series; k++) {
                ids[k] = k;
                batch[k] = tagged(p->index, i + k);
            }
            const int64_t got = et_record_group(p->rec, ids, batch, p->series);
            ET_CHECKF(got == (int64_t)p->series, "et_record_group returned %" PRId64, got);
            for (uint32_t k = 0; k < p->series; k++) account(p, k, batch[k], ET_OK);
            i += p->series;
            continue;
        }
        const double v = tagged(p->index, i);
        account(p, s, v, et_record(p->rec, s, v));
        i++;
    }
    return NULL;
}

/* Expected totals per series from the producers. */
typedef struct expected {
    uint64_t ok;
    double sum, min, max;
} expected;

static void sum_producers(const producer *ps, unsigned n, expected *e, uint32_t series) {
    for (uint32_t s = 0; s < series; s++) {
        e[s] = (expected){0, 0.0, INFINITY, -INFINITY};
        for (unsigned p = 0; p < n; p++) {
            e[s].ok += ps[p].ok[s];
            e[s].sum += ps[p].sum[s];
            e[s].min = fmin(e[s].min, ps[p].min[s]);
            e[s].max = fmax(e[s].max, ps[p].max[s]);
        }
    }
}

static void check_exact(const test_totals *t, const expected *e, uint32_t series,
                        uint64_t made) {
    uint64_t seen = 0;
    for (uint32_t s = 0; s < series; s++) {
        ET_CHECKF(t[s].count == e[s].ok, "series %u: %" PRIu64 " counted, %" PRIu64 " recorded",
                  s, t[s].count, e[s].ok);
        for (int r = 0; r < ET_DROP_REASONS; r++) ET_CHECK_EQ_U(t[s].dropped[r], 0);
        ET_CHECK_EQ_U(t[s].coarse, 0);
        ET_CHECK_EQ_D(t[s].sum, e[s].sum);
        ET_CHECK_EQ_U(t[s].buckets_total, t[s].count); /* no zeros among tagged values */
        if (e[s].ok) {
            ET_CHECK_EQ_D(t[s].min, e[s].min);
            ET_CHECK_EQ_D(t[s].max, e[s].max);
        }
        for (int r = 0; r < ET_REJECT_REASONS; r++) ET_CHECK_EQ_U(t[s].rejected[r], 0);
        seen += t[s].count;
    }
    ET_CHECKF(seen == made, "accounted %" PRIu64 " of %" PRIu64 " records", seen, made);
}

/* ---- a consumer that closes windows until told to stop, checking seq and tiling ---- */

typedef struct snapshotter {
    pthread_t thread;
    et_recorder *rec;
    _Atomic bool stop;
    test_totals totals[MAX_SERIES];
    uint64_t windows, next_seq;
    int64_t prev_end_mono, prev_end_wall;
    bool also_collect;  /* et_collect between closes */
    long pause_us;      /* between closes: producers with full rings drain them */
} snapshotter;

static void snapshot_once(snapshotter *s) {
    et_window *w = NULL;
    const int rc = et_window_close(s->rec, &w);
    ET_CHECKF(rc == ET_OK && w, "et_window_close: %s", et_strerror(rc));
    if (!w) return;
    ET_CHECK_EQ_U(et_window_seq(w), s->next_seq);
    s->next_seq = et_window_seq(w) + 1;
    int64_t sm, em, sw, ew;
    et_window_bounds(w, &sm, &em, &sw, &ew);
    if (s->windows) {
        ET_CHECK_EQ_I(sm, s->prev_end_mono);
        ET_CHECK_EQ_I(sw, s->prev_end_wall);
    }
    ET_CHECK(sm <= em);
    s->prev_end_mono = em;
    s->prev_end_wall = ew;
    test_totals_add(s->totals, MAX_SERIES, w);
    s->windows++;
    et_window_free(w);
}

static void *snapshotter_main(void *arg) {
    snapshotter *s = arg;
    while (!atomic_load(&s->stop)) {
        snapshot_once(s);
        if (s->also_collect) {
            for (int i = 0; i < 4; i++) ET_CHECK_RC(et_collect(s->rec), ET_OK);
        }
        if (s->pause_us) test_sleep_us(s->pause_us);
    }
    return NULL;
}

static void snapshotter_start(snapshotter *s, et_recorder *rec) {
    s->rec = rec;
    atomic_store(&s->stop, false);
    test_totals_init(s->totals, MAX_SERIES);
    ET_CHECK(pthread_create(&s->thread, NULL, snapshotter_main, s) == 0);
}

static void snapshotter_finish(snapshotter *s) {
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    snapshot_once(s); /* the last window: everything the producers left */
}

/* ---- the validators ---- */

typedef struct validate_opts {
    uint32_t ring, threads, producers, series;
    uint64_t records;
    bool collector_thread, second_collector, use_many;
    bool producers_only; /* nobody collects: windows close now and then, rings fill */
} validate_opts;

static void *collect_loop(void *arg) {
    snapshotter *s = arg; /* shares the stop flag */
    while (!atomic_load(&s->stop)) ET_CHECK_RC(et_collect(s->rec), ET_OK);
    return NULL;
}

static void validate(validate_opts o) {
    et_recorder *rec = test_recorder(o.ring, o.threads, o.series);
    ET_REQUIRE(rec);
    char name[16];
    for (uint32_t s = 0; s < o.series; s++) {
        snprintf(name, sizeof name, "s%u", s);
        ET_CHECK_EQ_U(test_series(rec, name), s);
    }
    if (o.collector_thread) ET_CHECK_RC(et_collector_start(rec, 100000), ET_OK);
    snapshotter *snap = calloc(1, sizeof *snap);
    producer *ps = calloc(o.producers, sizeof *ps);
    ET_REQUIRE(snap && ps);
    snap->also_collect = !o.collector_thread && !o.producers_only;
    if (o.producers_only) snap->pause_us = 2000;
    snapshotter_start(snap, rec);
    pthread_t collector;
    if (o.second_collector) ET_CHECK(pthread_create(&collector, NULL, collect_loop, snap) == 0);
    for (unsigned p = 0; p < o.producers; p++) {
        ps[p] = (producer){.rec = rec, .index = p, .series = o.series, .records = o.records,
                           .use_many = o.use_many};
        ET_CHECK(pthread_create(&ps[p].thread, NULL, producer_main, &ps[p]) == 0);
    }
    for (unsigned p = 0; p < o.producers; p++) pthread_join(ps[p].thread, NULL);
    if (o.second_collector) {
        atomic_store(&snap->stop, true);
        pthread_join(collector, NULL);
    }
    snapshotter_finish(snap);
    if (o.collector_thread) ET_CHECK_RC(et_collector_stop(rec), ET_OK);

    expected e[MAX_SERIES];
    sum_producers(ps, o.producers, e, o.series);
    check_exact(snap->totals, e, o.series, (uint64_t)o.producers * o.records);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    uint64_t ok = 0;
    for (uint32_t s = 0; s < o.series; s++) ok += e[s].ok;
    /* through the rings, or past them (batches, threads without a ring) */
    ET_CHECK_EQ_U(info.records_drained + info.direct_values, ok);
    ET_CHECK_EQ_U(info.unknown_series, 0);
    ET_CHECK_EQ_U(info.pool_exhausted, 0);
    ET_CHECK_EQ_U(info.integrity_errors, 0);
    ET_CHECK_EQ_U(info.threads_active, 0); /* every producer exited and its ring was freed */
    if (o.producers_only) ET_CHECK(info.full_drains > 0);
    if (o.producers > o.threads) ET_CHECK(info.direct_values > 0);
    free(snap);
    free(ps);
    et_recorder_free(rec);
}

/* Sanitized builds run 5-15x slower: fewer records, same shape. */
static uint64_t scaled(uint64_t n) { return TEST_TSAN ? n / 8 : SANITIZED ? n / 4 : n; }

ET_TEST_FLAGS(validate_producers_vs_snapshots, ET_CONCURRENT) {
    /* small rings: the consumers fall behind and drops must be counted exactly */
    validate((validate_opts){.ring = 64, .threads = 4, .producers = 4, .series = 8,
                             .records = scaled(2000000), .use_many = true});
    /* a ring big enough to rarely fill, and a second consumer racing for the lock */
    validate((validate_opts){.ring = 4096, .threads = 4, .producers = 3, .series = 5,
                             .records = scaled(2000000), .second_collector = true});
}

ET_TEST_FLAGS(validate_with_collector_thread, ET_CONCURRENT) {
    validate((validate_opts){.ring = 256, .threads = 4, .producers = 4, .series = 3,
                             .records = scaled(2000000), .collector_thread = true,
                             .use_many = true});
}

ET_TEST_FLAGS(validate_more_producers_than_rings, ET_CONCURRENT) {
    /* two rings for six producers: four find none and aggregate directly; nothing lost */
    validate((validate_opts){.ring = 128, .threads = 2, .producers = 6, .series = 4,
                             .records = scaled(500000), .use_many = true});
}

/* Bursts with nobody draining: producers, 1 up to max_threads of them, find their rings full
 * and drain them themselves, while windows close now and then. */
ET_TEST_FLAGS(validate_bursts_drained_by_their_producers, ET_CONCURRENT) {
    for (uint32_t producers = 1; producers <= 4; producers++)
        validate((validate_opts){.ring = 64, .threads = 4, .producers = producers,
                                 .series = 5, .records = scaled(1000000) / producers,
                                 .use_many = producers % 2 == 0, .producers_only = true});
    /* and beyond max_threads, still with nobody draining */
    validate((validate_opts){.ring = 64, .threads = 2, .producers = 5, .series = 3,
                             .records = scaled(300000), .use_many = true,
                             .producers_only = true});
}

/* ---- short-lived threads ---- */

typedef struct churn {
    et_recorder *rec;
    uint32_t series;
    uint32_t records_per_thread;
    _Atomic uint64_t ok[MAX_SERIES], full[MAX_SERIES], noring[MAX_SERIES];
    _Atomic uint64_t threads_with_ring;
} churn;

typedef struct churn_arg {
    churn *c;
    unsigned index;
} churn_arg;

static void *churn_main(void *arg) {
    churn_arg *a = arg;
    churn *c = a->c;
    const uint32_t s = a->index % c->series;
    bool got = false;
    for (uint32_t i = 0; i < c->records_per_thread; i++) {
        const int rc = et_record(c->rec, s, 1.0);
        if (rc == ET_OK) {
            atomic_fetch_add(&c->ok[s], 1);
            got = true;
        } else if (rc == ET_ERINGFULL) {
            atomic_fetch_add(&c->full[s], 1);
        } else if (rc == ET_ENORING) {
            atomic_fetch_add(&c->noring[s], 1);
        } else {
            et_test_fail(__FILE__, __LINE__, "et_record: %s", et_strerror(rc));
        }
    }
    if (got) atomic_fetch_add(&c->threads_with_ring, 1);
    return NULL;
}

static void short_lived_threads(unsigned total, unsigned at_once, bool collector_thread) {
    const int64_t live = et_alloc_live();
    churn *c = calloc(1, sizeof *c);
    ET_REQUIRE(c);
    c->rec = test_recorder(64, 4, 4);
    ET_REQUIRE(c->rec);
    c->series = 4;
    c->records_per_thread = 5;
    for (uint32_t s = 0; s < c->series; s++) {
        char name[16];
        snprintf(name, sizeof name, "s%u", s);
        test_series(c->rec, name);
    }
    if (collector_thread) ET_CHECK_RC(et_collector_start(c->rec, 80000), ET_OK);
    snapshotter *snap = calloc(1, sizeof *snap);
    ET_REQUIRE(snap);
    snap->also_collect = true;
    snap->pause_us = 200;
    snapshotter_start(snap, c->rec);

    pthread_t th[16];
    churn_arg args[16];
    for (unsigned done = 0; done < total; done += at_once) {
        for (unsigned k = 0; k < at_once; k++) {
            args[k] = (churn_arg){c, done + k};
            ET_REQUIRE(pthread_create(&th[k], NULL, churn_main, &args[k]) == 0);
        }
        for (unsigned k = 0; k < at_once; k++) pthread_join(th[k], NULL);
        /* rings come back at thread exit with records pending; an occasional collect from
         * here keeps the 64-slot rings from filling even if the snapshotter is slow */
        if (!collector_thread && done % 64 == 0) ET_CHECK_RC(et_collect(c->rec), ET_OK);
    }
    snapshotter_finish(snap);
    if (collector_thread) ET_CHECK_RC(et_collector_stop(c->rec), ET_OK);

    uint64_t made = 0;
    for (uint32_t s = 0; s < c->series; s++) {
        const test_totals *t = &snap->totals[s];
        ET_CHECK_EQ_U(t->count, atomic_load(&c->ok[s]));
        ET_CHECK_EQ_D(t->sum, (double)atomic_load(&c->ok[s]));
        /* nothing dropped: not by threads without a ring (8 at once for 4 rings) */
        ET_CHECK_EQ_U(atomic_load(&c->full[s]) + atomic_load(&c->noring[s]), 0);
        for (int r = 0; r < ET_DROP_REASONS; r++) ET_CHECK_EQ_U(t->dropped[r], 0);
        made += t->count;
    }
    ET_CHECK_EQ_U(made, (uint64_t)total * c->records_per_thread);
    ET_CHECK_EQ_U(atomic_load(&c->threads_with_ring), total);
    ET_CHECK_RC(et_collect(c->rec), ET_OK);
    et_info info;
    ET_CHECK_RC(et_recorder_info(c->rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.threads_active, 0);
    uint64_t ok = 0;
    for (uint32_t s = 0; s < c->series; s++) ok += atomic_load(&c->ok[s]);
    /* through a ring, or directly by a thread that found none */
    ET_CHECK_EQ_U(info.records_drained + info.direct_values, ok);
    et_recorder_free(c->rec);
    free(snap);
    free(c);
    ET_CHECK_EQ_I(et_alloc_live(), live); /* nothing the library allocated is left */
}

ET_TEST_FLAGS(short_lived_threads_sequential, ET_CONCURRENT) {
    short_lived_threads(10000, 1, false);
}

ET_TEST_FLAGS(short_lived_threads_few_at_a_time, ET_CONCURRENT) {
    /* eight at once for four rings: some find none, and say so */
    short_lived_threads(10000, 8, true);
}

/* ---- the collector thread started and stopped under load ---- */

typedef struct toggler {
    et_recorder *rec;
    unsigned rounds, seed;
    uint64_t toggles;
} toggler;

static void *toggle_main(void *arg) {
    toggler *t = arg;
    uint64_t seed = t->seed;
    for (unsigned i = 0; i < t->rounds; i++) {
        const uint64_t period = 80000 + test_rand(&seed) % 2000000;
        ET_CHECK_RC(et_collector_start(t->rec, period), ET_OK);
        test_sleep_us((long)(test_rand(&seed) % 300));
        ET_CHECK_RC(et_collector_stop(t->rec), ET_OK);
        t->toggles++;
    }
    return NULL;
}

static void collector_toggling(unsigned togglers) {
    et_recorder *rec = test_recorder(128, 4, 4);
    ET_REQUIRE(rec);
    for (uint32_t s = 0; s < 4; s++) {
        char name[16];
        snprintf(name, sizeof name, "s%u", s);
        test_series(rec, name);
    }
    snapshotter *snap = calloc(1, sizeof *snap);
    producer *ps = calloc(3, sizeof *ps);
    ET_REQUIRE(snap && ps);
    snap->pause_us = 500;
    snapshotter_start(snap, rec);
    toggler tg[4];
    pthread_t tt[4];
    for (unsigned k = 0; k < togglers; k++) {
        tg[k] = (toggler){rec, SANITIZED ? 100 : 300, 17 + k, 0};
        ET_CHECK(pthread_create(&tt[k], NULL, toggle_main, &tg[k]) == 0);
    }
    for (unsigned p = 0; p < 3; p++) {
        ps[p] = (producer){.rec = rec, .index = p, .series = 4, .records = scaled(1000000),
                           .use_many = true};
        ET_CHECK(pthread_create(&ps[p].thread, NULL, producer_main, &ps[p]) == 0);
    }
    for (unsigned p = 0; p < 3; p++) pthread_join(ps[p].thread, NULL);
    for (unsigned k = 0; k < togglers; k++) pthread_join(tt[k], NULL);
    ET_CHECK_RC(et_collector_stop(rec), ET_OK);
    snapshotter_finish(snap);
    expected e[MAX_SERIES];
    sum_producers(ps, 3, e, 4);
    check_exact(snap->totals, e, 4, 3 * scaled(1000000));
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.collector_period_ns, 0);
    uint64_t toggles = 0;
    for (unsigned k = 0; k < togglers; k++) toggles += tg[k].toggles;
    ET_CHECK_EQ_U(toggles, togglers * tg[0].rounds);
    free(snap);
    free(ps);
    et_recorder_free(rec);
}

ET_TEST_FLAGS(collector_start_stop_under_load, ET_CONCURRENT) { collector_toggling(1); }

/* The header lets any thread call et_collector_*; two threads toggling at once must each see
 * ET_OK, and the collector thread must never be joined twice. */
ET_TEST_FLAGS(collector_start_stop_from_two_threads, ET_CONCURRENT) { collector_toggling(3); }

/* ---- threads moving between two recorders ---- */

typedef struct two_recorders {
    pthread_t thread;
    et_recorder *a, *b;
    unsigned index;
    uint64_t records, ok_a, ok_b, full_a, full_b;
} two_recorders;

static void *two_recorders_main(void *arg) {
    two_recorders *t = arg;
    for (uint64_t i = 0; i < t->records; i++) {
        /* runs of different lengths on each, so the thread cache switches often */
        const bool to_a = (i / (1 + t->index)) % 2 == 0;
        const int rc = et_record(to_a ? t->a : t->b, 0, 1.0);
        if (rc == ET_OK) {
            if (to_a) t->ok_a++;
            else t->ok_b++;
        } else if (rc == ET_ERINGFULL) {
            if (to_a) t->full_a++;
            else t->full_b++;
        } else {
            et_test_fail(__FILE__, __LINE__, "et_record: %s", et_strerror(rc));
        }
    }
    return NULL;
}

ET_TEST_FLAGS(threads_alternate_between_recorders, ET_CONCURRENT) {
    et_recorder *a = test_recorder(256, 3, 1), *b = test_recorder(256, 3, 1);
    ET_REQUIRE(a && b);
    test_series(a, "x");
    test_series(b, "x");
    snapshotter *sa = calloc(1, sizeof *sa), *sb = calloc(1, sizeof *sb);
    ET_REQUIRE(sa && sb);
    sa->also_collect = sb->also_collect = true;
    snapshotter_start(sa, a);
    snapshotter_start(sb, b);
    two_recorders t[3];
    for (unsigned k = 0; k < 3; k++) {
        t[k] = (two_recorders){.a = a, .b = b, .index = k, .records = scaled(1000000)};
        ET_CHECK(pthread_create(&t[k].thread, NULL, two_recorders_main, &t[k]) == 0);
    }
    uint64_t ok_a = 0, ok_b = 0, full_a = 0, full_b = 0;
    for (unsigned k = 0; k < 3; k++) {
        pthread_join(t[k].thread, NULL);
        ok_a += t[k].ok_a;
        ok_b += t[k].ok_b;
        full_a += t[k].full_a;
        full_b += t[k].full_b;
    }
    snapshotter_finish(sa);
    snapshotter_finish(sb);
    ET_CHECK_EQ_U(sa->totals[0].count, ok_a);
    ET_CHECK_EQ_U(sb->totals[0].count, ok_b);
    ET_CHECK_EQ_U(sa->totals[0].dropped[ET_DROP_RING_FULL], full_a);
    ET_CHECK_EQ_U(sb->totals[0].dropped[ET_DROP_RING_FULL], full_b);
    ET_CHECK_EQ_U(sa->totals[0].dropped[ET_DROP_NO_RING] + sb->totals[0].dropped[ET_DROP_NO_RING],
                  0);
    ET_CHECK_EQ_U(ok_a + ok_b + full_a + full_b, 3 * scaled(1000000));
    ET_CHECK_EQ_U(full_a + full_b, 0);
    free(sa);
    free(sb);
    et_recorder_free(a);
    et_recorder_free(b);
}

/* ---- series registered while windows close ---- */

typedef struct registrar {
    et_recorder *rec;
    uint32_t n;
} registrar;

static void *registrar_main(void *arg) {
    registrar *r = arg;
    char metric[64], dim[300];
    for (uint32_t i = 0; i < r->n; i++) {
        snprintf(metric, sizeof metric, "metric-%04u", i);
        memset(dim, 'a' + (int)(i % 26), 200 + i % 50);
        dim[200 + i % 50] = '\0';
        uint32_t id;
        ET_CHECK_RC(et_series_add(r->rec, "model", "v1", metric, dim, &id), ET_OK);
        ET_CHECK_EQ_U(id, i);
        ET_CHECK_RC(et_record(r->rec, id, (double)(i + 1)), ET_OK);
        if (i % 8 == 0) test_sleep_us(50);
    }
    return NULL;
}

/* Window close copies the names; et_series_add appends to them under another lock. */
ET_TEST_FLAGS(series_added_while_windows_close, ET_CONCURRENT) {
    const uint32_t n = 400;
    et_config c = test_config(1024, 2, n);
    et_recorder *rec = NULL;
    ET_REQUIRE_OK(et_recorder_new(&c, &rec));
    registrar r = {rec, n};
    pthread_t th;
    ET_REQUIRE(pthread_create(&th, NULL, registrar_main, &r) == 0);
    uint64_t *counts = calloc(n, sizeof *counts);
    ET_REQUIRE(counts);
    bool done = false;
    uint32_t windows = 0;
    while (!done) {
        et_info info;
        ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
        done = info.series == n; /* one more close after the last registration */
        et_window *w = NULL;
        ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
        if (!w) break;
        windows++;
        const uint32_t k = et_window_series_count(w);
        for (uint32_t i = 0; i < k; i++) {
            uint32_t id = UINT32_MAX;
            ET_CHECK_RC(et_window_series_id(w, i, &id), ET_OK);
            ET_REQUIRE(id < n);
            const char *mo, *ve, *me, *di;
            ET_CHECK_RC(et_window_series_names(w, i, &mo, &ve, &me, &di), ET_OK);
            char want[64];
            snprintf(want, sizeof want, "metric-%04u", id);
            ET_CHECKF(!strcmp(me, want) && !strcmp(mo, "model") && !strcmp(ve, "v1") &&
                          strlen(di) == 200 + id % 50 && di[0] == 'a' + (int)(id % 26),
                      "window %u series %u: names %s/%s/%s", windows, id, mo, ve, me);
            et_series_stats st;
            ET_CHECK_RC(et_window_series_stats(w, i, &st), ET_OK);
            counts[id] += st.count;
        }
        et_window_free(w);
    }
    pthread_join(th, NULL);
    test_totals *t = calloc(n, sizeof *t);
    ET_REQUIRE(t);
    test_totals_init(t, n);
    test_close_into(rec, t, n);
    for (uint32_t i = 0; i < n; i++) ET_CHECK_EQ_U(counts[i] + t[i].count, 1);
    free(t);
    free(counts);
    et_recorder_free(rec);
}

/* ---- a thread that records from a thread-exit destructor running after the core's ---- */

typedef struct late {
    et_recorder *rec;
    pthread_key_t key;
    _Atomic bool a_done, b_go;
    _Atomic uint64_t ok, full, noring;
} late;

static void late_account(late *l, int rc) {
    if (rc == ET_OK) atomic_fetch_add(&l->ok, 1);
    else if (rc == ET_ERINGFULL) atomic_fetch_add(&l->full, 1);
    else if (rc == ET_ENORING) atomic_fetch_add(&l->noring, 1);
    else et_test_fail(__FILE__, __LINE__, "et_record: %s", et_strerror(rc));
}

/* runs after the core's destructor freed this thread's ring (its key was created later) */
static void late_destructor(void *arg) {
    late *l = arg;
    atomic_store(&l->b_go, true); /* the other thread may take the ring now */
    for (int i = 0; i < 20000; i++) late_account(l, et_record(l->rec, 0, 1.0));
}

static void *late_a(void *arg) {
    late *l = arg;
    late_account(l, et_record(l->rec, 0, 1.0)); /* takes the only ring */
    pthread_setspecific(l->key, l);
    return NULL;
}

static void *late_b(void *arg) {
    late *l = arg;
    while (!atomic_load(&l->b_go)) sched_yield();
    for (int i = 0; i < 20000; i++) late_account(l, et_record(l->rec, 0, 1.0));
    return NULL;
}

/* A record made after the core's exit destructor ran must not write through the thread's
 * stale ring pointer into a ring another thread now owns (two producers on one SPSC ring). */
ET_TEST_FLAGS(record_from_late_thread_exit_destructor, ET_CONCURRENT) {
    late *l = calloc(1, sizeof *l);
    ET_REQUIRE(l);
    l->rec = test_recorder(1024, 1, 1);
    ET_REQUIRE(l->rec);
    test_series(l->rec, "x");
    /* the core's key exists (a recorder was created); this one has a higher index, and glibc
     * runs destructors in index order */
    ET_REQUIRE(pthread_key_create(&l->key, late_destructor) == 0);
    snapshotter *snap = calloc(1, sizeof *snap);
    ET_REQUIRE(snap);
    snap->also_collect = true;
    snapshotter_start(snap, l->rec);
    pthread_t a, b;
    ET_REQUIRE(pthread_create(&b, NULL, late_b, l) == 0);
    ET_REQUIRE(pthread_create(&a, NULL, late_a, l) == 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    snapshotter_finish(snap);
    const test_totals *t = &snap->totals[0];
    ET_CHECK_EQ_U(t->count, atomic_load(&l->ok));
    ET_CHECK_EQ_U(t->dropped[ET_DROP_RING_FULL], atomic_load(&l->full));
    ET_CHECK_EQ_U(t->dropped[ET_DROP_NO_RING], atomic_load(&l->noring));
    ET_CHECK_EQ_U(atomic_load(&l->full) + atomic_load(&l->noring), 0); /* none lost */
    ET_CHECK_EQ_U(t->count + t->dropped[ET_DROP_RING_FULL] + t->dropped[ET_DROP_NO_RING],
                  1 + 20000 + 20000);
    et_info info;
    ET_CHECK_RC(et_recorder_info(l->rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.threads_active, 0);
    pthread_key_delete(l->key);
    et_recorder_free(l->rec);
    free(snap);
    free(l);
}
