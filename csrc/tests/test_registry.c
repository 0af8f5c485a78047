/* The series registry at scale and with units: thousands of series with long names, found
 * again by hash; one unit per series; windows that list only what had activity. */
#include "support.h"

/* Realistic long names: the example model and dimension, metric and unit varying. */
static void long_names(uint32_t i, char *metric, size_t metric_n, char *dimension,
                       size_t dimension_n) {
    static const char *kinds[] = {"latency", "preprocess", "confidence", "queue-wait"};
    snprintf(metric, metric_n, "%s-stage-%04u", kinds[i % 4], i / 4);
    snprintf(dimension, dimension_n, "camera-front/roi-%u/class-pedestrian", i % 97);
}

#define LONG_MODEL "resnet50-imagenet-int8-tensorrt"

ET_TEST(thousands_of_series_with_long_names) {
    const uint32_t n = 4096;
    et_config c;
    et_config_default(&c); /* as a binding does: defaults, then max_series */
    c.max_series = n;
    et_recorder *rec = NULL;
    ET_REQUIRE_OK(et_recorder_new(&c, &rec));
    char metric[64], dim[64];
    const int64_t t0 = test_now_ns();
    for (uint32_t i = 0; i < n; i++) {
        long_names(i, metric, sizeof metric, dim, sizeof dim);
        uint32_t id = UINT32_MAX;
        ET_CHECK_RC(et_series_add_unit(rec, LONG_MODEL, "2.1.0", metric, dim,
                                       i % 4 == 0 ? "ms" : NULL, &id),
                    ET_OK);
        ET_CHECK_EQ_U(id, i);
    }
    const int64_t t1 = test_now_ns();
    /* found again, by hash: every one, with the unit it has or through et_series_add */
    for (uint32_t i = 0; i < n; i++) {
        long_names(i, metric, sizeof metric, dim, sizeof dim);
        uint32_t id = UINT32_MAX;
        ET_CHECK_RC(et_series_add(rec, LONG_MODEL, "2.1.0", metric, dim, &id), ET_OK);
        ET_CHECK_EQ_U(id, i);
        if (i % 4 == 0)
            ET_CHECK_RC(et_series_add_unit(rec, LONG_MODEL, "2.1.0", metric, dim, "ms", &id),
                        ET_OK);
    }
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.series, n);
    printf("     4,096 series: registered in %.1f ms, %.1f MB\n", (double)(t1 - t0) / 1e6,
           (double)info.memory_bytes / 1048576.0);
    uint32_t extra;
    ET_CHECK_RC(et_series_add(rec, LONG_MODEL, "2.1.0", "one-more", NULL, &extra),
                ET_ESERIESFULL);

    /* 16 active: the window lists 16, with the right names */
    for (uint32_t k = 0; k < 16; k++) ET_CHECK_RC(et_record(rec, k * 256 + 3, (double)k), ET_OK);
    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_series_count(w), 16);
    for (uint32_t i = 0; i < et_window_series_count(w); i++) {
        uint32_t id;
        ET_CHECK_RC(et_window_series_id(w, i, &id), ET_OK);
        ET_CHECK_EQ_U(id, i * 256 + 3);
        const char *mo, *ve, *me, *di, *un;
        ET_CHECK_RC(et_window_series_names(w, i, &mo, &ve, &me, &di), ET_OK);
        ET_CHECK_RC(et_window_series_unit(w, i, &un), ET_OK);
        long_names(id, metric, sizeof metric, dim, sizeof dim);
        ET_CHECK(!strcmp(mo, LONG_MODEL) && !strcmp(ve, "2.1.0") && !strcmp(me, metric) &&
                 !strcmp(di, dim) && !strcmp(un, id % 4 == 0 ? "ms" : ""));
    }
    et_window_free(w);

    /* all active: every one listed, in id order, with its names */
    for (uint32_t i = 0; i < n; i++) ET_CHECK_RC(et_record(rec, i, (double)i), ET_OK);
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_series_count(w), n);
    for (uint32_t i = 0; i < n; i += 7) {
        uint32_t id;
        ET_CHECK_RC(et_window_series_id(w, i, &id), ET_OK);
        ET_CHECK_EQ_U(id, i);
        const char *me;
        ET_CHECK_RC(et_window_series_names(w, i, NULL, NULL, &me, NULL), ET_OK);
        long_names(i, metric, sizeof metric, dim, sizeof dim);
        ET_CHECK(!strcmp(me, metric));
        et_series_stats st;
        ET_CHECK_RC(et_window_series_stats(w, i, &st), ET_OK);
        ET_CHECK_EQ_U(st.count, 1);
        ET_CHECK_EQ_D(st.sum, (double)i);
    }
    et_window_free(w);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.pool_exhausted, 0);
    ET_CHECK_EQ_U(info.integrity_errors, 0);
    et_recorder_free(rec);
}

ET_TEST(one_unit_per_series) {
    et_recorder *rec = test_recorder(64, 1, 8);
    ET_REQUIRE(rec);
    uint32_t a = 99, b = 99, c = 99;
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency", NULL, "ms", &a), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency", NULL, "ms", &b), ET_OK);
    ET_CHECK_EQ_U(a, b);
    /* the same four names with another unit, or none: refused, id untouched */
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency", NULL, "s", &c), ET_EUNIT);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency", NULL, NULL, &c), ET_EUNIT);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency", "", "", &c), ET_EUNIT);
    ET_CHECK_EQ_U(c, 99);
    /* et_series_add finds it whatever its unit (a module that only records into it) */
    ET_CHECK_RC(et_series_add(rec, "m", "1", "latency", NULL, &c), ET_OK);
    ET_CHECK_EQ_U(c, a);
    /* another dimension is another series, free to have its own unit */
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency", "gpu", "us", &c), ET_OK);
    ET_CHECK(c != a);
    /* a series registered without a unit: NULL and "" are both "none" */
    uint32_t d, e;
    ET_CHECK_RC(et_series_add(rec, "m", "1", "tokens", NULL, &d), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "tokens", NULL, "", &e), ET_OK);
    ET_CHECK_EQ_U(d, e);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "tokens", NULL, NULL, &e), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "tokens", NULL, "count", &e), ET_EUNIT);
    /* the unit is not part of the key: "latency-ms" is another metric, and a legal one as
     * long as no series of the same model, version and dimension is displayed that way */
    uint32_t f;
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency-ms", "gpu", NULL, &f), ET_OK);
    ET_CHECK(f != a);
    ET_CHECK_EQ_U(f, 3);
    et_recorder_free(rec);
}

/* Display names (metric-unit) cannot clash within a model, version and dimension, whichever
 * way round and through whichever call the second series comes; the error says which one. */
ET_TEST(display_names_cannot_clash) {
    et_recorder *rec = test_recorder(64, 1, 32);
    ET_REQUIRE(rec);
    uint32_t lat, other = 99;
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency", NULL, "ms", &lat), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "latency-ms", NULL, &other), ET_ENAMECLASH);
    ET_CHECK_EQ_U(other, lat);
    other = 99;
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency-ms", "", "", &other), ET_ENAMECLASH);
    ET_CHECK_EQ_U(other, lat);
    char names[ET_SERIES_NAMES_MAX];
    static const char latency_ms[] = "m\0" "1\0" "latency\0" "\0" "ms";
    ET_CHECK_EQ_I(et_series_names(rec, other, names, sizeof names), (int)sizeof latency_ms);
    ET_CHECK(!memcmp(names, latency_ms, sizeof latency_ms));
    /* the other way round: a unit-less "queue-wait-s" first, then "queue-wait" in "s" or
     * "queue" in "wait-s" (a C unit may hold a hyphen) */
    uint32_t q, r = 99;
    ET_CHECK_RC(et_series_add(rec, "m", "1", "queue-wait-s", "cam", &q), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "queue-wait", "cam", "s", &r), ET_ENAMECLASH);
    ET_CHECK_EQ_U(r, q);
    r = 99;
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "queue", "cam", "wait-s", &r), ET_ENAMECLASH);
    ET_CHECK_EQ_U(r, q);
    /* another dimension, version or model, or another display name: no clash */
    uint32_t id;
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "queue-wait", "cam2", "s", &id), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "2", "queue-wait", "cam", "s", &id), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "n", "1", "latency-ms", NULL, NULL, &id), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "queue-wait", "cam", "ms", &id), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency", NULL, "s", &id), ET_EUNIT);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "latency-m", NULL, "s", &id), ET_OK);
    /* finding an existing series is never a clash */
    ET_CHECK_RC(et_series_add(rec, "m", "1", "latency", NULL, &id), ET_OK);
    ET_CHECK_EQ_U(id, lat);
    /* names of an unknown id, NULL, a buffer too small */
    ET_CHECK_RC(et_series_names(rec, 1000, names, sizeof names), ET_ENOSERIES);
    ET_CHECK_RC(et_series_names(NULL, 0, names, sizeof names), ET_EINVAL);
    ET_CHECK_RC(et_series_names(rec, q, NULL, sizeof names), ET_EINVAL);
    ET_CHECK_RC(et_series_names(rec, q, names, 4), ET_EINVAL);
    static const char queue[] = "m\0" "1\0" "queue-wait-s\0" "cam\0";
    ET_CHECK_EQ_I(et_series_names(rec, q, names, sizeof names), (int)sizeof queue);
    ET_CHECK(!memcmp(names, queue, sizeof queue));
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.integrity_errors, 0);
    et_recorder_free(rec);
}

/* Hash collisions and chains: many series whose names differ in one byte, in a small table,
 * all found again; and a registry with names that are prefixes of each other. */
ET_TEST(registry_chains_and_prefixes) {
    et_recorder *rec = test_recorder(64, 1, 602);
    ET_REQUIRE(rec);
    char metric[32];
    for (uint32_t i = 0; i < 600; i++) {
        snprintf(metric, sizeof metric, "%u", i);
        uint32_t id;
        ET_CHECK_RC(et_series_add(rec, "m", i % 2 ? "1" : "10", metric, i % 3 ? "" : "x", &id),
                    ET_OK);
        ET_CHECK_EQ_U(id, i);
    }
    for (uint32_t i = 0; i < 600; i++) {
        snprintf(metric, sizeof metric, "%u", i);
        uint32_t id;
        ET_CHECK_RC(et_series_add(rec, "m", i % 2 ? "1" : "10", metric, i % 3 ? "" : "x", &id),
                    ET_OK);
        ET_CHECK_EQ_U(id, i);
    }
    /* fields are compared whole: "m"/"10"/"1" is neither "m1"/"0"/"1" nor "m"/"1"/"1" */
    uint32_t a, b, c;
    ET_CHECK_RC(et_series_add(rec, "m", "10", "1", NULL, &a), ET_OK);
    ET_CHECK_EQ_U(a, 600);
    ET_CHECK_RC(et_series_add(rec, "m1", "0", "1", NULL, &b), ET_OK);
    ET_CHECK_EQ_U(b, 601);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "1", NULL, &c), ET_OK); /* i = 1 */
    ET_CHECK_EQ_U(c, 1);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "01", NULL, &c), ET_ESERIESFULL);
    et_recorder_free(rec);
}
