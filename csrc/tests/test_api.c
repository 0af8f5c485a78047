/* Single-threaded unit tests of the public API: configuration, errors, the series registry,
 * record -> window round trips, drops, windows and introspection. */
#include "support.h"

#include <limits.h>

/* ---- configuration ---- */

ET_TEST(config_defaults) {
    et_config c;
    memset(&c, 0xff, sizeof c);
    et_config_default(&c);
    ET_CHECK_EQ_U(c.ring_capacity, 2048);
    ET_CHECK_EQ_U(c.max_threads, 4);
    ET_CHECK_EQ_U(c.max_series, 16);
    ET_CHECK_EQ_U(c.buckets_per_octave, 36);
    ET_CHECK_EQ_I(c.min_exponent, -30);
    ET_CHECK_EQ_U(c.octaves, 70);
    ET_CHECK_EQ_U(c.names_bytes, 0);     /* scaled to max_series at creation */
    ET_CHECK_EQ_U(c.histogram_pages, 0); /* likewise */
    et_config_default(NULL); /* ignored */

    /* NULL config and an all-zero config both mean the defaults */
    et_recorder *a = NULL, *b = NULL;
    ET_CHECK_RC(et_recorder_new(NULL, &a), ET_OK);
    et_config zero;
    memset(&zero, 0, sizeof zero);
    ET_CHECK_RC(et_recorder_new(&zero, &b), ET_OK);
    ET_REQUIRE(a && b);
    et_info ia, ib;
    ET_CHECK_RC(et_recorder_info(a, &ia), ET_OK);
    ET_CHECK_RC(et_recorder_info(b, &ib), ET_OK);
    /* the effective configuration: the defaults, with the scaled fields filled in */
    c.names_bytes = 16 * 256;
    c.histogram_pages = 8 * 16 + 2 * 70;
    ET_CHECK(memcmp(&ia.config, &c, sizeof c) == 0);
    ET_CHECK(memcmp(&ib.config, &c, sizeof c) == 0);
    ET_CHECK_EQ_U(ia.memory_bytes, ib.memory_bytes);
    et_recorder_free(a);
    et_recorder_free(b);

    /* raising max_series alone raises what scales with it: a config made by
     * et_config_default and then edited (what a binding does) gets room for its series */
    et_config big;
    et_config_default(&big);
    big.max_series = 1000;
    ET_REQUIRE_OK(et_recorder_new(&big, &a));
    ET_CHECK_RC(et_recorder_info(a, &ia), ET_OK);
    ET_CHECK_EQ_U(ia.config.names_bytes, 1000 * 256);
    ET_CHECK_EQ_U(ia.config.histogram_pages, 8 * 1000 + 2 * 70);
    et_recorder_free(a);
}

typedef struct bad_config {
    const char *why;
    et_config cfg;
    int want;
} bad_config;

ET_TEST(config_validation_at_init) {
    /* zero fields take the default, so each row sets only the field under test */
    static const bad_config rows[] = {
        {"ring 63 (not a power of two)", {.ring_capacity = 63}, ET_EINVAL},
        {"ring 100 (not a power of two)", {.ring_capacity = 100}, ET_EINVAL},
        {"ring 3000", {.ring_capacity = 3000}, ET_EINVAL},
        {"ring 32 (power of two below 64)", {.ring_capacity = 32}, ET_EINVAL},
        {"ring 1", {.ring_capacity = 1}, ET_EINVAL},
        {"ring 2^25", {.ring_capacity = 1u << 25}, ET_EINVAL},
        {"ring 2^31", {.ring_capacity = 1u << 31}, ET_EINVAL},
        {"ring UINT32_MAX", {.ring_capacity = UINT32_MAX}, ET_EINVAL},
        {"ring 64", {.ring_capacity = 64}, ET_OK},
        {"ring 2^16", {.ring_capacity = 1u << 16}, ET_OK},
        {"threads 1025", {.max_threads = 1025}, ET_EINVAL},
        {"threads 1", {.max_threads = 1}, ET_OK},
        {"series 65537", {.max_series = 65537}, ET_EINVAL},
        {"series 1", {.max_series = 1}, ET_OK},
        {"buckets 7", {.buckets_per_octave = 7}, ET_EINVAL},
        {"buckets 256", {.buckets_per_octave = 256}, ET_EINVAL},
        {"buckets 8", {.buckets_per_octave = 8}, ET_OK},
        {"buckets 255", {.buckets_per_octave = 255}, ET_OK},
        {"min_exponent -1023 (subnormal)", {.min_exponent = -1023}, ET_EINVAL},
        {"min_exponent INT32_MIN", {.min_exponent = INT32_MIN}, ET_EINVAL},
        {"min_exponent -1022", {.min_exponent = -1022}, ET_OK},
        {"octaves 2047", {.octaves = 2047}, ET_EINVAL},
        {"octaves UINT32_MAX", {.octaves = UINT32_MAX}, ET_EINVAL},
        {"top above 2^1024", {.min_exponent = 1000, .octaves = 25}, ET_EINVAL},
        {"top exactly 2^1024", {.min_exponent = 1000, .octaves = 24}, ET_OK},
        {"min_exponent 1024", {.min_exponent = 1024, .octaves = 1}, ET_EINVAL},
        {"names_bytes 15", {.names_bytes = 15}, ET_EINVAL},
        {"names_bytes 16", {.names_bytes = 16}, ET_OK},
        {"names_bytes 64 MiB + 1", {.names_bytes = (64u << 20) + 1}, ET_EINVAL},
        {"histogram_pages 1", {.histogram_pages = 1}, ET_OK},
        {"histogram_pages 2^24 + 1", {.histogram_pages = (1u << 24) + 1}, ET_EINVAL},
        {"histogram_pages UINT32_MAX", {.histogram_pages = UINT32_MAX}, ET_EINVAL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        et_recorder *rec = (et_recorder *)&rows; /* must be overwritten */
        const int rc = et_recorder_new(&rows[i].cfg, &rec);
        ET_CHECKF(rc == rows[i].want, "%s: got %d (%s), want %d", rows[i].why, rc,
                  et_strerror(rc), rows[i].want);
        if (rc == ET_OK) {
            ET_CHECK(rec != NULL);
            et_recorder_free(rec);
        } else {
            ET_CHECKF(rec == NULL, "%s: *out not cleared on error", rows[i].why);
        }
    }
    ET_CHECK_RC(et_recorder_new(NULL, NULL), ET_EINVAL);
}

ET_TEST(strerror_names_every_code) {
    const int codes[] = {ET_OK,          ET_EINVAL,     ET_ENOMEM,    ET_ESERIESFULL,
                         ET_ENAME,       ET_ENOSERIES,  ET_ETHREAD,   ET_ERINGFULL,
                         ET_ENORING,     ET_EUNIT,      ET_ENAMESFULL, ET_ENAMECLASH,
                         ET_ENOSEGMENT,  ET_ENOTSEGMENT, ET_ELAYOUT,  ET_EACCES,
                         ET_EPROCFULL,   ET_ENOTOWNER,  ET_EBUSY,     ET_ECONFIG,
                         ET_ETRUNCATED,  ET_ETIMEDOUT,  ET_ESYSTEM};
    const size_t n = sizeof codes / sizeof codes[0];
    const char *unknown = et_strerror(-1000);
    ET_REQUIRE(unknown != NULL && unknown[0] != '\0');
    for (size_t i = 0; i < n; i++) {
        const char *s = et_strerror(codes[i]);
        ET_CHECKF(s != NULL && s[0] != '\0', "code %d has no name", codes[i]);
        ET_CHECKF(s && strcmp(s, unknown) != 0, "code %d is named as unknown", codes[i]);
        for (size_t j = 0; j < i; j++)
            ET_CHECKF(s && strcmp(s, et_strerror(codes[j])) != 0, "codes %d and %d share a name",
                      codes[i], codes[j]);
    }
    /* the codes are the contiguous range the header promises */
    ET_CHECK_EQ_U(n, 1 - ET_ESYSTEM); /* every code listed above */
    for (int c = ET_ESYSTEM; c <= ET_OK; c++)
        ET_CHECKF(strcmp(et_strerror(c), unknown) != 0, "code %d unnamed", c);
    const int others[] = {1, 2, ET_ESYSTEM - 1, -100, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        ET_CHECK(et_strerror(others[i]) != NULL && !strcmp(et_strerror(others[i]), unknown));
}

/* ---- series registry ---- */

ET_TEST(series_dedupe_and_ids) {
    et_recorder *rec = test_recorder(64, 1, 4);
    ET_REQUIRE(rec);
    uint32_t a, b, c, d, e, f;
    ET_CHECK_RC(et_series_add(rec, "m", "1", "latency", NULL, &a), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "latency", "", &b), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "latency", "gpu", &c), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "m", "2", "latency", NULL, &d), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "latency", "gpu", &e), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "latency", NULL, &f), ET_OK);
    ET_CHECK_EQ_U(a, 0);
    ET_CHECK_EQ_U(b, a); /* NULL and "" are the same dimension */
    ET_CHECK_EQ_U(c, 1);
    ET_CHECK_EQ_U(d, 2);
    ET_CHECK_EQ_U(e, c);
    ET_CHECK_EQ_U(f, a);
    /* fields are compared separately, not concatenated */
    uint32_t g, h;
    ET_CHECK_RC(et_series_add(rec, "ab", "c", "x", NULL, &g), ET_OK);
    h = 99;
    ET_CHECK_RC(et_series_add(rec, "a", "bc", "x", NULL, &h), ET_ESERIESFULL);
    ET_CHECK_EQ_U(h, 99);
    ET_CHECK_EQ_U(g, 3);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.series, 4);

    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK); /* nothing recorded: nothing listed */
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_series_count(w), 0);
    et_window_free(w);
    for (uint32_t id = 0; id < 4; id++) ET_CHECK_RC(et_record(rec, id, 1.0), ET_OK);
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_series_count(w), 4);
    const char *mo, *ve, *me, *di;
    ET_CHECK_RC(et_window_series_names(w, 1, &mo, &ve, &me, &di), ET_OK);
    ET_CHECK(!strcmp(mo, "m") && !strcmp(ve, "1") && !strcmp(me, "latency") &&
             !strcmp(di, "gpu"));
    ET_CHECK_RC(et_window_series_names(w, 0, &mo, &ve, &me, &di), ET_OK);
    ET_CHECK(!strcmp(di, ""));
    ET_CHECK_RC(et_window_series_names(w, 0, NULL, NULL, NULL, NULL), ET_OK);
    ET_CHECK_RC(et_window_series_names(w, 4, &mo, &ve, &me, &di), ET_ENOSERIES);
    ET_CHECK_RC(et_window_series_names(NULL, 0, &mo, &ve, &me, &di), ET_ENOSERIES);
    et_window_free(w);
    et_recorder_free(rec);
}

ET_TEST(series_limits) {
    et_recorder *rec = test_recorder(64, 1, 3);
    ET_REQUIRE(rec);
    uint32_t id = 99;
    char metric[16];
    for (int i = 0; i < 3; i++) {
        snprintf(metric, sizeof metric, "m%d", i);
        ET_CHECK_RC(et_series_add(rec, "model", "v", metric, NULL, &id), ET_OK);
        ET_CHECK_EQ_U(id, (uint32_t)i);
    }
    id = 99;
    ET_CHECK_RC(et_series_add(rec, "model", "v", "m3", NULL, &id), ET_ESERIESFULL);
    ET_CHECK_EQ_U(id, 99); /* untouched on error */
    /* a registered series is still found when the registry is full */
    ET_CHECK_RC(et_series_add(rec, "model", "v", "m1", NULL, &id), ET_OK);
    ET_CHECK_EQ_U(id, 1);
    et_recorder_free(rec);

    /* the names arena is a limit of its own, with an error of its own */
    et_config c = test_config(64, 1, 8);
    c.names_bytes = 32;
    ET_REQUIRE_OK(et_recorder_new(&c, &rec));
    /* names + NULs, the unit's NUL included: 5 + 2 + 9 + 1 + 1 = 18 bytes */
    ET_CHECK_RC(et_series_add(rec, "mmmm", "v", "aaaaaaaa", NULL, &id), ET_OK);
    id = 99;
    ET_CHECK_RC(et_series_add(rec, "mmmm", "v", "bbbbbbbb", NULL, &id), ET_ENAMESFULL);
    ET_CHECK_EQ_U(id, 99);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "v", "c", NULL, "milliseconds", &id),
                ET_ENAMESFULL);
    ET_CHECK_RC(et_series_add(rec, "m", "v", "c", NULL, &id), ET_OK); /* 8 more fit: 26 */
    ET_CHECK_EQ_U(id, 1);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "v", "d", NULL, "s", &id), ET_ENAMESFULL); /* 35 */
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.series, 2);
    et_recorder_free(rec);
}

ET_TEST(series_name_rules) {
    et_recorder *rec = test_recorder(64, 1, 16);
    ET_REQUIRE(rec);
    uint32_t id;
    char name256[257], name255[256], dim1000[1001], dim1001[1002];
    memset(name256, 'a', 256);
    name256[256] = '\0';
    memset(name255, 'b', 255);
    name255[255] = '\0';
    memset(dim1000, 'c', 1000);
    dim1000[1000] = '\0';
    memset(dim1001, 'd', 1001);
    dim1001[1001] = '\0';

    ET_CHECK_RC(et_series_add(rec, "", "1", "x", NULL, &id), ET_ENAME);
    ET_CHECK_RC(et_series_add(rec, "m", "", "x", NULL, &id), ET_ENAME);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "", NULL, &id), ET_ENAME);
    ET_CHECK_RC(et_series_add(rec, NULL, "1", "x", NULL, &id), ET_ENAME);
    ET_CHECK_RC(et_series_add(rec, "m", NULL, "x", NULL, &id), ET_ENAME);
    ET_CHECK_RC(et_series_add(rec, "m", "1", NULL, NULL, &id), ET_ENAME);
    const char *bad[] = {"a\nb", "tab\t", "\x01", "x\x1f", "del\x7f", "\r"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ET_CHECK_RC(et_series_add(rec, bad[i], "1", "x", NULL, &id), ET_ENAME);
        ET_CHECK_RC(et_series_add(rec, "m", bad[i], "x", NULL, &id), ET_ENAME);
        ET_CHECK_RC(et_series_add(rec, "m", "1", bad[i], NULL, &id), ET_ENAME);
        ET_CHECK_RC(et_series_add(rec, "m", "1", "x", bad[i], &id), ET_ENAME);
    }
    ET_CHECK_RC(et_series_add(rec, name256, "1", "x", NULL, &id), ET_ENAME);
    ET_CHECK_RC(et_series_add(rec, "m", name256, "x", NULL, &id), ET_ENAME);
    ET_CHECK_RC(et_series_add(rec, "m", "1", name256, NULL, &id), ET_ENAME);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "x", dim1001, &id), ET_ENAME);
    /* a unit follows the names' rules, up to ET_NAME_MAX bytes */
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "x", NULL, name256, &id), ET_ENAME);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "x", NULL, bad[i], &id), ET_ENAME);
    ET_CHECK_RC(et_series_add_unit(rec, "", "1", "x", NULL, "ms", &id), ET_ENAME);
    ET_CHECK_RC(et_series_add_unit(NULL, "m", "1", "x", NULL, "ms", &id), ET_EINVAL);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "x", NULL, "ms", NULL), ET_EINVAL);
    ET_CHECK_RC(et_series_add(rec, NULL, "1", "x", NULL, NULL), ET_EINVAL);
    ET_CHECK_RC(et_series_add(NULL, "m", "1", "x", NULL, &id), ET_EINVAL);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.series, 0); /* nothing rejected was registered */

    /* limits are inclusive; bytes >= 0x80 (UTF-8) and spaces are fine */
    ET_CHECK_RC(et_series_add(rec, name255, "1", "x", NULL, &id), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "m", name255, name255, NULL, &id), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "m", "1", "x", dim1000, &id), ET_OK);
    ET_CHECK_RC(et_series_add(rec, "mod\xc3\xa8le", "1 2", "lat ms", "\xe2\x82\xac", &id), ET_OK);
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "y", NULL, name255, &id), ET_OK);
    ET_CHECK_EQ_U(id, 4);
    for (uint32_t s = 0; s <= 4; s++) ET_CHECK_RC(et_record(rec, s, 1.0), ET_OK);
    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    const char *mo, *ve, *me, *di, *un;
    ET_CHECK_RC(et_window_series_names(w, 0, &mo, &ve, &me, &di), ET_OK);
    ET_CHECK(!strcmp(mo, name255) && !strcmp(ve, "1") && !strcmp(me, "x") && !strcmp(di, ""));
    ET_CHECK_RC(et_window_series_names(w, 1, &mo, &ve, &me, &di), ET_OK);
    ET_CHECK(!strcmp(mo, "m") && !strcmp(ve, name255) && !strcmp(me, name255));
    ET_CHECK_RC(et_window_series_names(w, 2, &mo, &ve, &me, &di), ET_OK);
    ET_CHECK(!strcmp(di, dim1000));
    ET_CHECK_RC(et_window_series_names(w, 3, &mo, &ve, &me, &di), ET_OK);
    ET_CHECK(!strcmp(mo, "mod\xc3\xa8le") && !strcmp(di, "\xe2\x82\xac"));
    ET_CHECK_RC(et_window_series_unit(w, 3, &un), ET_OK);
    ET_CHECK(!strcmp(un, ""));
    ET_CHECK_RC(et_window_series_unit(w, 4, &un), ET_OK);
    ET_CHECK(!strcmp(un, name255));
    ET_CHECK_RC(et_window_series_unit(w, 5, &un), ET_ENOSERIES);
    ET_CHECK_RC(et_window_series_unit(w, 0, NULL), ET_EINVAL);
    ET_CHECK_RC(et_window_series_unit(NULL, 0, &un), ET_ENOSERIES);
    et_window_free(w);
    et_recorder_free(rec);
}

/* ---- record -> window ---- */

ET_TEST(round_trip_stats) {
    et_recorder *rec = test_recorder(256, 2, 4);
    ET_REQUIRE(rec);
    const uint32_t lat = test_series(rec, "latency");
    const uint32_t conf = test_series(rec, "confidence");
    const double values[] = {1.5, 2.0, -3.25, 1e6, 0.0, -0.0, 1e-300, 4.9e-324, 7.0};
    double sum = 0;
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        ET_CHECK_RC(et_record(rec, lat, values[i]), ET_OK);
        sum += values[i];
    }
    ET_CHECK_RC(et_record(rec, lat, NAN), ET_OK); /* accepted, rejected at drain */
    ET_CHECK_RC(et_record(rec, lat, -NAN), ET_OK);
    ET_CHECK_RC(et_record(rec, lat, INFINITY), ET_OK);
    ET_CHECK_RC(et_record(rec, lat, -INFINITY), ET_OK);
    ET_CHECK_RC(et_count_reject(rec, lat, ET_REJECT_TYPE), ET_OK);
    ET_CHECK_RC(et_count_reject(rec, lat, ET_REJECT_TYPE), ET_OK);
    ET_CHECK_RC(et_count_reject(rec, lat, ET_REJECT_NAN), ET_EINVAL);
    ET_CHECK_RC(et_count_reject(rec, lat, 99), ET_EINVAL);
    ET_CHECK_RC(et_count_reject(rec, 4, ET_REJECT_TYPE), ET_ENOSERIES);
    ET_CHECK_RC(et_count_reject(NULL, 0, ET_REJECT_TYPE), ET_ENOSERIES);
    ET_CHECK_RC(et_count_drop(rec, conf, ET_DROP_CLOSED), ET_OK);
    ET_CHECK_RC(et_count_drop(rec, conf, ET_DROP_NO_RING), ET_OK);
    ET_CHECK_RC(et_count_drop(rec, conf, ET_DROP_RING_FULL), ET_EINVAL);
    ET_CHECK_RC(et_count_drop(rec, conf, -1), ET_EINVAL);
    ET_CHECK_RC(et_count_drop(rec, UINT32_MAX, ET_DROP_CLOSED), ET_ENOSERIES);
    ET_CHECK_RC(et_record(rec, conf, 0.5), ET_OK);

    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_series_count(w), 2);
    et_series_stats st;
    ET_CHECK_RC(et_window_series_stats(w, lat, &st), ET_OK);
    ET_CHECK_EQ_U(st.count, 9);
    ET_CHECK_EQ_D(st.sum, sum);
    ET_CHECK_EQ_D(st.min, -3.25);
    ET_CHECK_EQ_D(st.max, 1e6);
    ET_CHECK_EQ_U(st.zero, 4); /* 0, -0, 1e-300 and a subnormal are below 2^-30 */
    ET_CHECK_EQ_U(st.rejected[ET_REJECT_NAN], 2);
    ET_CHECK_EQ_U(st.rejected[ET_REJECT_INF], 2);
    ET_CHECK_EQ_U(st.rejected[ET_REJECT_TYPE], 2);
    for (int r = 0; r < ET_DROP_REASONS; r++) ET_CHECK_EQ_U(st.dropped[r], 0);
    ET_CHECK_EQ_U(st.buckets, 5); /* 1.5, 2, 7, 1e6 and -3.25 in distinct buckets */
    ET_CHECK(st.first_mono_ns > 0 && st.first_mono_ns <= st.last_mono_ns);
    ET_CHECK(st.first_wall_ns > 0 && st.first_wall_ns <= st.last_wall_ns);
    uint32_t idx[8];
    uint64_t cnt[8];
    ET_CHECK_RC(et_window_buckets(w, lat, idx, cnt, 4), ET_EINVAL); /* too small */
    ET_CHECK_EQ_I(et_window_buckets(w, lat, idx, cnt, 8), 5);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    const uint32_t bps = info.config.buckets_per_octave * info.config.octaves;
    uint64_t total = 0, negative = 0;
    for (int i = 0; i < 5; i++) {
        ET_CHECK(idx[i] < 2 * bps);
        if (i) ET_CHECK(idx[i] > idx[i - 1]); /* increasing */
        total += cnt[i];
        if (idx[i] >= bps) negative += cnt[i];
    }
    ET_CHECK_EQ_U(total + st.zero, st.count);
    ET_CHECK_EQ_U(negative, 1);

    ET_CHECK_RC(et_window_series_stats(w, conf, &st), ET_OK);
    ET_CHECK_EQ_U(st.count, 1);
    ET_CHECK_EQ_D(st.sum, 0.5);
    ET_CHECK_EQ_U(st.dropped[ET_DROP_CLOSED], 1);
    ET_CHECK_EQ_U(st.dropped[ET_DROP_NO_RING], 1);
    ET_CHECK_EQ_U(st.dropped[ET_DROP_RING_FULL], 0);
    ET_CHECK_EQ_U(st.rejected[ET_REJECT_TYPE], 0);
    ET_CHECK_RC(et_window_series_stats(w, 2, &st), ET_ENOSERIES);
    ET_CHECK_RC(et_window_series_stats(w, 0, NULL), ET_EINVAL);
    ET_CHECK_RC(et_window_buckets(w, 2, idx, cnt, 8), ET_ENOSERIES);
    ET_CHECK_RC(et_window_buckets(w, 0, NULL, cnt, 8), ET_EINVAL);
    et_window_free(w);

    /* the next window starts empty: counters were handed over, not copied */
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_series_count(w), 0);
    et_window_free(w);
    /* a series whose only activity is rejections is listed, with empty stats */
    ET_CHECK_RC(et_record(rec, conf, NAN), ET_OK);
    ET_CHECK_RC(et_count_reject(rec, conf, ET_REJECT_TYPE), ET_OK);
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_series_count(w), 1);
    uint32_t listed_id = 99;
    ET_CHECK_RC(et_window_series_id(w, 0, &listed_id), ET_OK);
    ET_CHECK_EQ_U(listed_id, conf);
    ET_CHECK_RC(et_window_series_id(w, 1, &listed_id), ET_ENOSERIES);
    ET_CHECK_RC(et_window_series_id(w, 0, NULL), ET_EINVAL);
    uint32_t at = 99;
    ET_CHECK_RC(et_window_series_find(w, lat, &at), ET_ENOSERIES);
    ET_CHECK_RC(et_window_series_find(w, conf, NULL), ET_EINVAL);
    ET_CHECK_RC(et_window_series_find(NULL, conf, &at), ET_ENOSERIES);
    for (uint32_t s = 0; s < 1; s++) {
        ET_CHECK_RC(et_window_series_stats(w, s, &st), ET_OK);
        ET_CHECK_EQ_U(st.rejected[ET_REJECT_NAN], 1);
        ET_CHECK_EQ_U(st.rejected[ET_REJECT_TYPE], 1);
        st.rejected[ET_REJECT_NAN] = st.rejected[ET_REJECT_TYPE] = 0;
        ET_CHECK(st.first_mono_ns > 0); /* the NaN was aggregated then */
        st.first_mono_ns = 0;
        ET_CHECK_EQ_U(st.count, 0);
        ET_CHECK_EQ_U(st.zero, 0);
        ET_CHECK_EQ_U(st.buckets, 0);
        ET_CHECK_EQ_D(st.sum, 0.0);
        ET_CHECK_EQ_D(st.min, 0.0); /* defined as 0 when empty, not +-inf */
        ET_CHECK_EQ_D(st.max, 0.0);
        ET_CHECK_EQ_I(st.first_mono_ns, 0);
        for (int r = 0; r < ET_REJECT_REASONS; r++) ET_CHECK_EQ_U(st.rejected[r], 0);
        for (int r = 0; r < ET_DROP_REASONS; r++) ET_CHECK_EQ_U(st.dropped[r], 0);
    }
    et_window_free(w);
    et_recorder_free(rec);
}

ET_TEST(range_edges_go_to_zero_and_top_buckets) {
    et_recorder *rec = test_recorder(256, 1, 2);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    const uint32_t bps = info.config.buckets_per_octave * info.config.octaves;
    const double lo = ldexp(1.0, info.config.min_exponent);
    const double top = ldexp(1.0, info.config.min_exponent + (int)info.config.octaves);
    ET_CHECK_RC(et_record(rec, s, nextafter(lo, 0)), ET_OK); /* zero */
    ET_CHECK_RC(et_record(rec, s, lo), ET_OK);               /* bucket 0 */
    ET_CHECK_RC(et_record(rec, s, -lo), ET_OK);              /* negative bucket 0 */
    ET_CHECK_RC(et_record(rec, s, nextafter(top, 0)), ET_OK); /* last bucket */
    ET_CHECK_RC(et_record(rec, s, top), ET_OK);               /* above: last bucket too */
    ET_CHECK_RC(et_record(rec, s, 1e300), ET_OK);
    ET_CHECK_RC(et_record(rec, s, -DBL_MAX), ET_OK); /* negative last bucket */
    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    et_series_stats st;
    ET_CHECK_RC(et_window_series_stats(w, s, &st), ET_OK);
    ET_CHECK_EQ_U(st.count, 7);
    ET_CHECK_EQ_U(st.zero, 1);
    ET_CHECK_EQ_D(st.max, 1e300); /* exact even above the tracked range */
    ET_CHECK_EQ_D(st.min, -DBL_MAX);
    uint32_t idx[8];
    uint64_t cnt[8];
    ET_REQUIRE(et_window_buckets(w, s, idx, cnt, 8) == 4);
    ET_CHECK_EQ_U(idx[0], 0);
    ET_CHECK_EQ_U(cnt[0], 1);
    ET_CHECK_EQ_U(idx[1], bps - 1);
    ET_CHECK_EQ_U(cnt[1], 3);
    ET_CHECK_EQ_U(idx[2], bps);
    ET_CHECK_EQ_U(cnt[2], 1);
    ET_CHECK_EQ_U(idx[3], 2 * bps - 1);
    ET_CHECK_EQ_U(cnt[3], 1);
    et_window_free(w);
    et_recorder_free(rec);
}

static void *record_unknown_without_ring(void *arg) {
    /* the only ring is taken: this thread aggregates directly, and unknown ids are counted
     * there just the same */
    ET_CHECK_RC(et_record(arg, 4, 1.0), ET_OK);
    const double v[3] = {1, 2, 3};
    ET_CHECK_EQ_I(et_record_many(arg, 1000, v, 3), 3);
    const uint32_t ids[2] = {0, 9};
    ET_CHECK_EQ_I(et_record_group(arg, ids, v, 2), 2); /* series 0 gets 1.0 */
    return NULL;
}

ET_TEST(unknown_series_counted_not_written) {
    et_recorder *rec = test_recorder(64, 1, 4);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    /* registered-range-but-unregistered, past max_series, and the largest id */
    ET_CHECK_RC(et_record(rec, 1, 1.0), ET_OK);
    ET_CHECK_RC(et_record(rec, 3, 1.0), ET_OK);
    ET_CHECK_RC(et_record(rec, 4, 1.0), ET_OK);
    ET_CHECK_RC(et_record(rec, UINT32_MAX, 1.0), ET_OK);
    const double many[3] = {1, 2, 3};
    ET_CHECK_EQ_I(et_record_many(rec, 1000, many, 3), 3);
    ET_CHECK_RC(et_record(rec, s, 2.0), ET_OK);
    ET_CHECK_RC(et_collect(rec), ET_OK);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.unknown_series, 7);
    ET_CHECK_EQ_U(info.records_drained, 8);
    pthread_t th;
    ET_REQUIRE(pthread_create(&th, NULL, record_unknown_without_ring, rec) == 0);
    pthread_join(th, NULL);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.unknown_series, 7 + 1 + 3 + 1);
    ET_CHECK_EQ_U(info.direct_values, 1 + 3 + 2);
    /* the binding's counters refuse ids that are not registered */
    ET_CHECK_RC(et_count_reject(rec, 1, ET_REJECT_TYPE), ET_ENOSERIES);
    ET_CHECK_RC(et_count_drop(rec, 1, ET_DROP_CLOSED), ET_ENOSERIES);
    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_series_count(w), 1);
    et_series_stats st;
    ET_CHECK_RC(et_window_series_stats(w, s, &st), ET_OK);
    ET_CHECK_EQ_U(st.count, 2);
    ET_CHECK_EQ_D(st.sum, 3.0);
    et_window_free(w);
    et_recorder_free(rec);
}

/* No collector anywhere: the producer finds its ring full, drains it itself, and records. */
ET_TEST(full_ring_is_drained_by_its_producer) {
    et_recorder *rec = test_recorder(64, 2, 4);
    ET_REQUIRE(rec);
    const uint32_t a = test_series(rec, "a"), b = test_series(rec, "b");
    for (int i = 0; i < 64; i++) ET_CHECK_RC(et_record(rec, i < 40 ? a : b, 1.0), ET_OK);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.full_drains, 0);
    ET_CHECK_EQ_U(info.records_drained, 0);
    for (int i = 0; i < 11; i++) ET_CHECK_RC(et_record(rec, a, 2.0), ET_OK);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.full_drains, 1); /* the first of the 11 found it full */
    ET_CHECK_EQ_U(info.records_drained, 64);
    ET_CHECK_EQ_U(info.ring_high_water, 64);
    for (int i = 0; i < 5; i++) ET_CHECK_RC(et_record(rec, b, 2.0), ET_OK);
    /* an id no series has: counted as unknown, never written out of bounds */
    ET_CHECK_RC(et_record(rec, 77, 2.0), ET_OK);
    const double two[2] = {1, 2};
    ET_CHECK_EQ_I(et_record_many(rec, UINT32_MAX, two, 2), 2);

    test_totals t[2];
    test_totals_init(t, 2);
    test_close_into(rec, t, 2);
    ET_CHECK_EQ_U(t[0].count, 51);
    ET_CHECK_EQ_D(t[0].sum, 40.0 + 22.0);
    ET_CHECK_EQ_U(t[1].count, 29);
    ET_CHECK_EQ_D(t[1].sum, 24.0 + 10.0);
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < ET_DROP_REASONS; r++) ET_CHECK_EQ_U(t[k].dropped[r], 0);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.unknown_series, 3);

    /* a burst of any length from one thread, and no one else draining: nothing lost */
    const int n = TEST_SANITIZED ? 100000 : 1000000;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        ET_CHECK_RC(et_record(rec, a, (double)(i % 1000)), ET_OK);
        sum += (double)(i % 1000);
    }
    test_totals_init(t, 2);
    test_close_into(rec, t, 2);
    ET_CHECK_EQ_U(t[0].count, n);
    ET_CHECK_EQ_D(t[0].sum, sum);
    ET_CHECK_EQ_D(t[0].min, 0.0);
    ET_CHECK_EQ_D(t[0].max, 999.0);
    ET_CHECK_EQ_U(t[0].buckets_total + t[0].zero, n);
    ET_CHECK_EQ_U(t[0].dropped[ET_DROP_RING_FULL], 0);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK(info.full_drains >= 1 + (uint64_t)n / 64 - 1);
    et_recorder_free(rec);
}

ET_TEST(record_group_whole_and_never_lost) {
    et_recorder *rec = test_recorder(64, 1, 4);
    ET_REQUIRE(rec);
    const uint32_t ids[3] = {test_series(rec, "a"), test_series(rec, "b"), test_series(rec, "c")};
    const double v[3] = {1.5, 2.5, 4.0};
    ET_CHECK_EQ_I(et_record_group(rec, ids, v, 0), 0);
    ET_CHECK_EQ_I(et_record_group(rec, NULL, v, 3), ET_EINVAL);
    ET_CHECK_EQ_I(et_record_group(rec, ids, NULL, 3), ET_EINVAL);
    ET_CHECK_EQ_I(et_record_group(rec, NULL, NULL, 0), 0);
    /* 21 groups fill 63 of 64 slots; the 22nd does not fit whole: the ring is drained and
     * the group goes in whole */
    for (int i = 0; i < 22; i++) ET_CHECK_EQ_I(et_record_group(rec, ids, v, 3), 3);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.full_drains, 1);
    ET_CHECK_EQ_U(info.records_drained, 63);
    ET_CHECK_RC(et_record(rec, ids[0], 8.0), ET_OK);
    test_totals t[3];
    test_totals_init(t, 3);
    test_close_into(rec, t, 3);
    for (int k = 0; k < 3; k++) {
        ET_CHECK_EQ_U(t[k].count, k == 0 ? 23 : 22);
        ET_CHECK_EQ_D(t[k].sum, 22 * v[k] + (k == 0 ? 8.0 : 0.0));
        ET_CHECK_EQ_U(t[k].dropped[ET_DROP_RING_FULL], 0);
    }
    /* a group across the ring's wrap */
    for (int i = 0; i < 62; i++) ET_CHECK_RC(et_record(rec, ids[1], 1.0), ET_OK);
    ET_CHECK_RC(et_collect(rec), ET_OK);
    ET_CHECK_EQ_I(et_record_group(rec, ids, v, 3), 3);
    /* unknown ids are counted, never written out of bounds; a group longer than the ring
     * is aggregated whole, in one hold of the lock */
    const uint32_t odd[2] = {ids[2], UINT32_MAX};
    ET_CHECK_EQ_I(et_record_group(rec, odd, v, 2), 2);
    double big[65];
    uint32_t big_ids[65];
    for (int i = 0; i < 65; i++) big[i] = 1.0, big_ids[i] = ids[i % 2];
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    const uint64_t direct = info.direct_values;
    ET_CHECK_EQ_I(et_record_group(rec, big_ids, big, 65), 65);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.direct_values, direct + 65);
    test_totals_init(t, 3);
    test_close_into(rec, t, 3);
    ET_CHECK_EQ_U(t[0].count, 1 + 33);
    ET_CHECK_EQ_D(t[0].sum, 1.5 + 33.0);
    ET_CHECK_EQ_U(t[1].count, 62 + 1 + 32);
    ET_CHECK_EQ_U(t[2].count, 2);
    ET_CHECK_EQ_D(t[2].sum, 4.0 + 1.5);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.unknown_series, 1);
    et_recorder_free(rec);
}

static void *record_group_without_ring(void *arg) {
    const uint32_t ids[2] = {0, 9};
    const double v[2] = {1, 2};
    ET_CHECK_EQ_I(et_record_group(arg, ids, v, 2), 2); /* the only ring is taken: direct */
    return NULL;
}

ET_TEST(record_group_without_ring_is_aggregated) {
    et_recorder *rec = test_recorder(64, 1, 4);
    ET_REQUIRE(rec);
    const uint32_t a = test_series(rec, "a");
    ET_CHECK_RC(et_record(rec, a, 1.0), ET_OK);
    pthread_t th;
    ET_REQUIRE(pthread_create(&th, NULL, record_group_without_ring, rec) == 0);
    pthread_join(th, NULL);
    test_totals t;
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, 2);
    ET_CHECK_EQ_D(t.sum, 2.0);
    ET_CHECK_EQ_U(t.dropped[ET_DROP_NO_RING], 0);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.unknown_series, 1);
    et_recorder_free(rec);
}

ET_TEST(record_many_of_any_size) {
    et_recorder *rec = test_recorder(64, 1, 2);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    double v[200];
    for (int i = 0; i < 200; i++) v[i] = i + 1;
    ET_CHECK_EQ_I(et_record_many(rec, s, v, 0), 0);
    ET_CHECK_EQ_I(et_record_many(rec, s, NULL, 5), ET_EINVAL);
    ET_CHECK_EQ_I(et_record_many(rec, s, NULL, 0), 0);
    for (int i = 0; i < 50; i++) ET_CHECK_RC(et_record(rec, s, 1000.0), ET_OK);
    /* 30 do not fit in the 14 free slots: the ring is drained, the batch aggregated here */
    ET_CHECK_EQ_I(et_record_many(rec, s, v, 30), 30);
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.direct_values, 30);
    ET_CHECK_EQ_U(info.full_drains, 1);
    ET_CHECK_EQ_U(info.records_drained, 50);
    ET_CHECK_EQ_I(et_record_many(rec, s, v, 3), 3); /* fits: the ring */
    test_totals t;
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, 83);
    ET_CHECK_EQ_D(t.sum, 50 * 1000.0 + 30 * 31 / 2 + 6);
    ET_CHECK_EQ_D(t.min, 1.0);
    ET_CHECK_EQ_D(t.max, 1000.0);
    ET_CHECK_EQ_U(t.buckets_total, 83);
    for (int r = 0; r < ET_DROP_REASONS; r++) ET_CHECK_EQ_U(t.dropped[r], 0);

    /* move the ring to 37 and write across the wrap */
    for (int i = 0; i < 37 - 3; i++) ET_CHECK_RC(et_record(rec, s, 0.5), ET_OK);
    ET_CHECK_RC(et_collect(rec), ET_OK);
    ET_CHECK_EQ_I(et_record_many(rec, s, v, 64), 64); /* 27 to the end, 37 from the start */
    ET_CHECK_EQ_I(et_record_many(rec, s, v + 64, 1), 1);
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, 34 + 64 + 1);
    ET_CHECK_EQ_D(t.sum, 34 * 0.5 + 64 * 65 / 2 + 65);
    ET_CHECK_EQ_D(t.min, 0.5);
    ET_CHECK_EQ_D(t.max, 65.0);
    ET_CHECK_EQ_U(t.buckets_total, t.count);

    /* many rounds of odd sizes keep exact totals */
    uint64_t made = 0;
    double sum = 0;
    test_totals_init(&t, 1);
    for (int round = 0; round < 500; round++) {
        const size_t n = (size_t)(round * 7) % 190;
        ET_CHECK_EQ_I(et_record_many(rec, s, v, n), n);
        made += n;
        sum += (double)n * (double)(n + 1) / 2;
        if (round % 3 == 0) ET_CHECK_RC(et_collect(rec), ET_OK);
        if (round % 50 == 0) test_close_into(rec, &t, 1);
    }
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, made);
    ET_CHECK_EQ_D(t.sum, sum);

    /* a million values in one call, and a single one */
    const size_t big = 1000000;
    double *m = malloc(big * sizeof *m);
    ET_REQUIRE(m);
    double msum = 0;
    for (size_t i = 0; i < big; i++) {
        m[i] = (double)(i % 4096) + 0.25;
        msum += m[i];
    }
    ET_CHECK_EQ_I(et_record_many(rec, s, m, big), big);
    ET_CHECK_EQ_I(et_record_many(rec, s, m + 7, 1), 1);
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, big + 1);
    ET_CHECK_EQ_D(t.sum, msum + 7.25); /* quarters: exact in any order */
    ET_CHECK_EQ_D(t.min, 0.25);
    ET_CHECK_EQ_D(t.max, 4095.25);
    ET_CHECK_EQ_U(t.buckets_total, big + 1);
    ET_CHECK_EQ_U(t.coarse, 0);
    free(m);
    et_recorder_free(rec);
}

/* A batch with NaN, Inf, zeros and values beyond the range, past the ring: each value
 * counted as it would be through the ring. */
ET_TEST(record_many_direct_handles_every_kind_of_value) {
    et_recorder *rec = test_recorder(64, 1, 2);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    double v[300];
    double sum = 0;
    uint64_t finite = 0;
    for (int i = 0; i < 300; i++) {
        switch (i % 6) {
        case 0: v[i] = NAN; break;
        case 1: v[i] = -INFINITY; break;
        case 2: v[i] = 0.0; break;
        case 3: v[i] = 1e300; break;
        case 4: v[i] = -(double)i; break;
        default: v[i] = (double)i; break;
        }
        if (i % 6 > 1) {
            sum += v[i];
            finite++;
        }
    }
    ET_CHECK_EQ_I(et_record_many(rec, s, v, 300), 300);
    test_totals t;
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, finite);
    ET_CHECK_EQ_U(t.rejected[ET_REJECT_NAN], 50);
    ET_CHECK_EQ_U(t.rejected[ET_REJECT_INF], 50);
    ET_CHECK_EQ_U(t.zero, 50);
    /* a sum this ill-conditioned depends on the order: the batch path adds one partial sum
     * per ring-sized chunk (the header says so) */
    ET_CHECKF(fabs(t.sum - sum) <= 1e-14 * fabs(sum), "sum %.17g vs %.17g", t.sum, sum);
    ET_CHECK_EQ_D(t.max, 1e300);
    ET_CHECK_EQ_D(t.min, -298.0);
    ET_CHECK_EQ_U(t.buckets_total + t.zero, t.count);
    et_recorder_free(rec);
}

/* ---- windows ---- */

ET_TEST(window_seq_and_bounds_tile) {
    et_recorder *rec = test_recorder(64, 1, 2);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    const int64_t t0 = test_now_ns();
    int64_t prev_end_mono = 0, prev_end_wall = 0;
    for (uint64_t i = 0; i < 20; i++) {
        et_info info;
        ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
        ET_CHECK_EQ_U(info.window_seq, i);
        if (i % 2) ET_CHECK_RC(et_record(rec, s, (double)i), ET_OK);
        if (i % 5 == 0) test_sleep_us(200);
        et_window *w = NULL;
        ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
        ET_REQUIRE(w);
        ET_CHECK_EQ_U(et_window_seq(w), i);
        int64_t sm, em, sw, ew;
        et_window_bounds(w, &sm, &em, &sw, &ew);
        ET_CHECK(sm <= em);
        ET_CHECK(sw <= ew + 1000000); /* the wall clock may step; not by much in a test */
        if (i == 0) {
            ET_CHECK(sm > 0 && sm <= em);
            ET_CHECK(sm < t0 + 1); /* the first window opened at et_recorder_new */
        } else {
            ET_CHECK_EQ_I(sm, prev_end_mono);
            ET_CHECK_EQ_I(sw, prev_end_wall);
        }
        if (i % 5 == 0) ET_CHECKF(em - sm >= 200000, "window %" PRIu64 " too short", i);
        et_series_stats st;
        ET_CHECK_EQ_U(test_stats_of(w, s, &st), i % 2); /* listed only when recorded */
        ET_CHECK_EQ_U(st.count, i % 2);
        if (st.count) {
            ET_CHECK(st.first_mono_ns >= sm && st.last_mono_ns <= em);
            ET_CHECK(st.first_wall_ns >= sw && st.last_wall_ns <= ew);
        }
        prev_end_mono = em;
        prev_end_wall = ew;
        et_window_bounds(w, NULL, NULL, NULL, NULL); /* NULL outputs are skipped */
        et_window_free(w);
    }
    ET_CHECK_EQ_U(et_window_seq(NULL), 0);
    ET_CHECK_EQ_U(et_window_series_count(NULL), 0);
    et_window_bounds(NULL, &prev_end_mono, NULL, NULL, NULL);
    et_window_free(NULL);
    et_window *w = (et_window *)rec;
    ET_CHECK_RC(et_window_close(NULL, &w), ET_EINVAL);
    ET_CHECK_RC(et_window_close(rec, NULL), ET_EINVAL);
    ET_CHECK_RC(et_collect(NULL), ET_EINVAL);
    et_recorder_free(rec);
    et_recorder_free(NULL);
}

ET_TEST(series_stats_times_span_drains) {
    et_recorder *rec = test_recorder(64, 1, 2);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x"), quiet = test_series(rec, "quiet");
    ET_CHECK_RC(et_record(rec, s, 1.0), ET_OK);
    ET_CHECK_RC(et_collect(rec), ET_OK);
    test_sleep_us(1000);
    ET_CHECK_RC(et_collect(rec), ET_OK); /* an idle pass does not move last_* */
    ET_CHECK_RC(et_record(rec, s, 1.0), ET_OK);
    test_sleep_us(1000);
    ET_CHECK_RC(et_collect(rec), ET_OK);
    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_REQUIRE(w);
    et_series_stats st;
    ET_CHECK(test_stats_of(w, s, &st));
    ET_CHECK(st.last_mono_ns - st.first_mono_ns >= 2000000);
    ET_CHECK(st.last_wall_ns - st.first_wall_ns >= 2000000);
    ET_CHECK(!test_stats_of(w, quiet, &st)); /* no activity: not listed */
    et_window_free(w);
    et_recorder_free(rec);
}

/* ---- memory and introspection ---- */

static uint64_t memory_of(et_config c) {
    et_recorder *rec = NULL;
    if (et_recorder_new(&c, &rec) != ET_OK) return 0;
    et_info info;
    et_recorder_info(rec, &info);
    et_recorder_free(rec);
    return info.memory_bytes;
}

ET_TEST(memory_reported_and_default_fits_512k) {
    et_recorder *rec = NULL;
    ET_REQUIRE_OK(et_recorder_new(NULL, &rec));
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.config.max_threads, 4);
    ET_CHECK_EQ_U(info.config.max_series, 16);
    ET_CHECKF(info.memory_bytes <= 512 * 1024, "default recorder uses %" PRIu64 " bytes",
              info.memory_bytes);
    /* at least the rings, both sets' pages and the series' fixed parts */
    const uint64_t rings = 4ull * 2048 * 16;
    const uint64_t pool = 2ull * info.config.histogram_pages * info.page_bytes;
    ET_CHECK(info.memory_bytes >= rings + pool + 16ull * info.series_bytes);
    ET_CHECK_EQ_U(info.page_bytes, (36 + 2) * 4); /* 36 buckets and a coarse counter */
    printf("     default: %" PRIu64 " bytes; per series %u + names; per page %u (x2 sets)\n",
           info.memory_bytes, info.series_bytes, info.page_bytes);
    et_recorder_free(rec);

    /* memory follows the configuration exactly where it should */
    et_config c = test_config(1024, 4, 16);
    et_config d = c;
    d.ring_capacity = 4096;
    ET_CHECK_EQ_U(memory_of(d) - memory_of(c), 4ull * (4096 - 1024) * 16);
    c = test_config(64, 1, 1024);
    c.names_bytes = 1u << 20;
    c.histogram_pages = 800;
    d = c;
    d.histogram_pages = 1600;
    ET_CHECK_EQ_U(memory_of(d) - memory_of(c), 2ull * 800 * info.page_bytes);
    d = c;
    d.max_series = 2048;
    const uint64_t per_series = (memory_of(d) - memory_of(c)) / 1024;
    ET_CHECKF(per_series >= info.series_bytes && per_series <= info.series_bytes + 1,
              "per series %" PRIu64 " vs reported %u", per_series, info.series_bytes);
    /* thousands of series in a few MB: 1,024 with the defaults for that many */
    et_config many;
    et_config_default(&many);
    many.max_series = 1024;
    const uint64_t m1024 = memory_of(many);
    many.max_series = 4096;
    const uint64_t m4096 = memory_of(many);
    printf("     1,024 series: %.2f MB, 4,096 series: %.2f MB (defaults otherwise)\n",
           (double)m1024 / 1048576.0, (double)m4096 / 1048576.0);
    ET_CHECKF(m1024 < 8ull << 20, "1,024 series take %" PRIu64 " bytes", m1024);
    ET_CHECK_RC(et_recorder_info(NULL, &info), ET_EINVAL);
    ET_CHECK_RC(et_recorder_info(rec == NULL ? NULL : NULL, NULL), ET_EINVAL);
}

ET_TEST(info_counters) {
    et_recorder *rec = test_recorder(128, 2, 2);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.threads_active, 0);
    ET_CHECK_EQ_U(info.records_drained, 0);
    ET_CHECK_EQ_U(info.collector_period_ns, 0);
    ET_CHECK(info.relative_error > 0 && info.relative_error < 0.01);
    for (int i = 0; i < 100; i++) ET_CHECK_RC(et_record(rec, s, i), ET_OK);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.threads_active, 1); /* this thread claimed a ring */
    const uint64_t passes = info.collector_passes;
    ET_CHECK_RC(et_collect(rec), ET_OK);
    ET_CHECK_RC(et_collect(rec), ET_OK);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.records_drained, 100);
    ET_CHECK_EQ_U(info.collector_passes, passes + 2);
    ET_CHECK_EQ_U(info.ring_high_water, 100);
    ET_CHECK_EQ_U(info.series, 1);
    et_recorder_free(rec);
}

ET_TEST(edges_layout) {
    const uint32_t ks[] = {8, 13, 36, 100, 255};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        et_config c = test_config(64, 1, 1);
        c.buckets_per_octave = ks[t];
        et_recorder *rec = NULL;
        ET_REQUIRE_OK(et_recorder_new(&c, &rec));
        uint32_t edges[257];
        const uint32_t k = ks[t];
        ET_CHECK_RC(et_recorder_edges(rec, edges, k), ET_EINVAL);
        ET_CHECK_RC(et_recorder_edges(rec, NULL, 257), ET_EINVAL);
        ET_CHECK_RC(et_recorder_edges(NULL, edges, 257), ET_EINVAL);
        ET_CHECK_EQ_I(et_recorder_edges(rec, edges, 257), k + 1);
        ET_CHECK_EQ_U(edges[0], 0);
        ET_CHECK_EQ_U(edges[k], 1u << ET_MANTISSA_BITS);
        double worst = 0;
        for (uint32_t j = 0; j < k; j++) {
            ET_CHECKF(edges[j] < edges[j + 1], "k=%u: edges[%u]=%u edges[%u]=%u", k, j,
                      edges[j], j + 1, edges[j + 1]);
            /* edge j is the first mantissa step at or above 2^(j/k) */
            const double ideal = (exp2((double)j / k) - 1.0) * 4096.0;
            ET_CHECKF(edges[j] >= ideal - 1e-9 && edges[j] < ideal + 1.0, "k=%u j=%u", k, j);
            const double a = edges[j], b = edges[j + 1];
            const double err = (b - a) / (8192.0 + a + b);
            if (err > worst) worst = err;
        }
        et_info info;
        ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
        ET_CHECK_EQ_D(info.relative_error, worst);
        /* the bound is near the ideal (2^(1/k) - 1) / (2^(1/k) + 1) */
        const double r = exp2(1.0 / k), ideal = (r - 1) / (r + 1);
        ET_CHECKF(worst >= ideal * 0.999 && worst < ideal * 1.1 + 1.0 / 8192,
                  "k=%u: relative_error %g vs ideal %g", k, worst, ideal);
        if (k == 36) ET_CHECK(worst < 0.01);
        et_recorder_free(rec);
    }
}

ET_TEST(collector_thread_drains) {
    et_recorder *rec = test_recorder(256, 2, 2);
    ET_REQUIRE(rec);
    const uint32_t s = test_series(rec, "x");
    ET_CHECK_RC(et_collector_start(rec, 79999), ET_EINVAL);
    ET_CHECK_RC(et_collector_start(rec, 60ull * 1000000000ull + 1), ET_EINVAL);
    ET_CHECK_RC(et_collector_start(NULL, 1000000), ET_EINVAL);
    ET_CHECK_RC(et_collector_stop(NULL), ET_EINVAL);
    ET_CHECK_RC(et_collector_stop(rec), ET_OK); /* not running: fine */
    ET_CHECK_RC(et_collector_start(rec, 1000000), ET_OK);
    ET_CHECK_RC(et_collector_start(rec, 2000000), ET_OK); /* already running: fine */
    et_info info;
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK(info.collector_period_ns >= 1000000 / 8 && info.collector_period_ns <= 8000000);
    for (int i = 0; i < 100; i++) ET_CHECK_RC(et_record(rec, s, 1.0), ET_OK);
    const int64_t deadline = test_now_ns() + 5000000000ll;
    do {
        test_sleep_us(1000);
        ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    } while (info.records_drained < 100 && test_now_ns() < deadline);
    ET_CHECK_EQ_U(info.records_drained, 100);
    ET_CHECK(info.collector_passes >= 1);
    ET_CHECK_RC(et_collector_stop(rec), ET_OK);
    ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
    ET_CHECK_EQ_U(info.collector_period_ns, 0);
    /* start again, and free with it running */
    ET_CHECK_RC(et_collector_start(rec, 80000), ET_OK);
    test_sleep_us(2000);
    et_recorder_free(rec);
}

/* ---- threads and recorders seen from one thread ---- */

ET_TEST(one_thread_two_recorders) {
    et_recorder *a = test_recorder(64, 1, 1), *b = test_recorder(64, 1, 1);
    ET_REQUIRE(a && b);
    const uint32_t sa = test_series(a, "x"), sb = test_series(b, "x");
    for (int i = 0; i < 40; i++) {
        ET_CHECK_RC(et_record(a, sa, 1.0), ET_OK); /* alternating switches the thread cache */
        ET_CHECK_RC(et_record(b, sb, 2.0), ET_OK);
    }
    const double v[4] = {1, 1, 1, 1};
    ET_CHECK_EQ_I(et_record_many(a, sa, v, 4), 4);
    test_totals ta, tb;
    test_totals_init(&ta, 1);
    test_totals_init(&tb, 1);
    test_close_into(a, &ta, 1);
    test_close_into(b, &tb, 1);
    ET_CHECK_EQ_U(ta.count, 44);
    ET_CHECK_EQ_D(ta.sum, 44.0);
    ET_CHECK_EQ_U(tb.count, 40);
    ET_CHECK_EQ_D(tb.sum, 80.0);
    et_info info;
    ET_CHECK_RC(et_recorder_info(a, &info), ET_OK);
    ET_CHECK_EQ_U(info.threads_active, 1); /* one ring each, not one per switch */
    et_recorder_free(a);
    /* a new recorder (maybe at the same address) never sees the old ring through the cache */
    et_recorder *c = test_recorder(64, 1, 1);
    ET_REQUIRE(c);
    const uint32_t sc = test_series(c, "x");
    ET_CHECK_RC(et_record(c, sc, 5.0), ET_OK);
    ET_CHECK_RC(et_record(b, sb, 5.0), ET_OK);
    test_totals tc;
    test_totals_init(&tc, 1);
    test_close_into(c, &tc, 1);
    ET_CHECK_EQ_U(tc.count, 1);
    ET_CHECK_EQ_D(tc.sum, 5.0);
    et_recorder_free(c);
    et_recorder_free(b);
}

static void *record_then_exit(void *arg) {
    et_recorder *rec = arg;
    for (int i = 0; i < 10; i++) ET_CHECK_RC(et_record(rec, 0, 1.0), ET_OK);
    return NULL;
}

ET_TEST(thread_exit_returns_ring) {
    et_recorder *rec = test_recorder(64, 1, 1); /* one ring: reuse is required */
    ET_REQUIRE(rec);
    test_series(rec, "x");
    for (int t = 0; t < 5; t++) {
        pthread_t th;
        ET_REQUIRE(pthread_create(&th, NULL, record_then_exit, rec) == 0);
        pthread_join(th, NULL);
        et_info info;
        ET_CHECK_RC(et_recorder_info(rec, &info), ET_OK);
        ET_CHECK_EQ_U(info.threads_active, 0); /* given back at exit */
        /* drained or not: the next owner appends after whatever is still pending */
        if (t % 2) ET_CHECK_RC(et_collect(rec), ET_OK);
    }
    /* this thread now takes the only ring */
    ET_CHECK_RC(et_record(rec, 0, 1.0), ET_OK);
    test_totals t;
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, 51);
    ET_CHECK_EQ_U(t.dropped[ET_DROP_NO_RING], 0);
    et_recorder_free(rec);
}

ET_TEST(api_table) {
    const et_api *api = et_api_table();
    ET_REQUIRE(api != NULL);
    ET_CHECK_EQ_U(api->abi_version, ET_API_VERSION);
    ET_CHECK(api->record == et_record && api->record_many == et_record_many &&
             api->count_reject == et_count_reject && api->series_add == et_series_add &&
             api->strerror == et_strerror && api->record_group == et_record_group &&
             api->series_add_unit == et_series_add_unit);
    et_recorder *rec = test_recorder(64, 1, 1);
    ET_REQUIRE(rec);
    uint32_t id;
    ET_CHECK_RC(api->series_add_unit(rec, "m", "1", "x", NULL, "ms", &id), ET_OK);
    uint32_t again = 99;
    ET_CHECK_RC(api->series_add(rec, "m", "1", "x", NULL, &again), ET_OK);
    ET_CHECK_EQ_U(again, id);
    ET_CHECK_RC(api->record(rec, id, 2.0), ET_OK);
    const double v[2] = {3.0, 4.0};
    ET_CHECK_EQ_I(api->record_many(rec, id, v, 2), 2);
    const uint32_t ids[2] = {id, id};
    ET_CHECK_EQ_I(api->record_group(rec, ids, v, 2), 2);
    test_totals t;
    test_totals_init(&t, 1);
    test_close_into(rec, &t, 1);
    ET_CHECK_EQ_U(t.count, 5);
    ET_CHECK_EQ_D(t.sum, 16.0);
    et_recorder_free(rec);
}
