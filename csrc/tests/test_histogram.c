/* Histogram accuracy against an exact oracle (sketches-go's assertRelativelyAccurate): every
 * rank of a sorted sample, read back from the buckets, is within relative_error of the true
 * value at that rank.  Bucket representatives are computed from et_recorder_edges alone. */
#include "support.h"

typedef struct layout {
    uint32_t k, octaves, bps, edges[257];
    int32_t min_exp;
    double rel;
} layout;

static bool get_layout(et_recorder *rec, layout *l) {
    et_info info;
    if (et_recorder_info(rec, &info) != ET_OK) return false;
    l->k = info.config.buckets_per_octave;
    l->octaves = info.config.octaves;
    l->min_exp = info.config.min_exponent;
    l->bps = l->k * l->octaves;
    l->rel = info.relative_error;
    return et_recorder_edges(rec, l->edges, 257) == (int)(l->k + 1);
}

/* Bucket index -> the bounds of the magnitudes it holds, and its representative. */
static void bucket_bounds(const layout *l, uint32_t index, double *lo, double *hi) {
    const uint32_t rest = index % l->bps;
    const int e = l->min_exp + (int)(rest / l->k);
    const uint32_t j = rest % l->k;
    *lo = ldexp(1.0 + l->edges[j] / 4096.0, e);
    *hi = ldexp(1.0 + l->edges[j + 1] / 4096.0, e);
}

static double bucket_value(const layout *l, uint32_t index) {
    const uint32_t rest = index % l->bps;
    const int e = l->min_exp + (int)(rest / l->k);
    const uint32_t j = rest % l->k;
    const double a = 1.0 + l->edges[j] / 4096.0, b = 1.0 + l->edges[j + 1] / 4096.0;
    /* the harmonic mean 2*lo*hi/(lo+hi) of the bounds is equally far, relatively, from both
     * ends; computed on the mantissas so that the top octave's hi = 2^1024 cannot overflow */
    const double rep = ldexp(2.0 * a * b / (a + b), e);
    return index >= l->bps ? -rep : rep;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Record values (in chunks, several windows), merge the windows' buckets, then check every
 * rank.  Values must be inside the tracked range or exact zeros. */
static void check_accuracy(const char *what, et_config cfg, double *values, size_t n) {
    et_recorder *rec = NULL;
    ET_REQUIRE_OK(et_recorder_new(&cfg, &rec));
    layout l;
    ET_REQUIRE(get_layout(rec, &l));
    const uint32_t s = test_series(rec, "x");
    uint64_t *dense = calloc(2 * (size_t)l.bps, sizeof *dense);
    ET_REQUIRE(dense);
    uint64_t zero = 0, count = 0;
    const size_t chunk = cfg.ring_capacity;
    size_t windows = 0;
    double wsum = 0, wmin = INFINITY, wmax = -INFINITY;
    for (size_t at = 0; at < n; at += chunk) {
        const size_t m = n - at < chunk ? n - at : chunk;
        ET_CHECK_EQ_I(et_record_many(rec, s, values + at, m), m);
        for (size_t i = at; i < at + m; i++) {
            wsum += values[i];
            wmin = fmin(wmin, values[i]);
            wmax = fmax(wmax, values[i]);
        }
        /* close every fourth chunk: windows hold several drains */
        ET_CHECK_RC(et_collect(rec), ET_OK);
        if ((at / chunk) % 4 != 3 && at + m < n) continue;
        et_window *w = NULL;
        ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
        if (!w) break;
        windows++;
        et_series_stats st;
        ET_CHECK_RC(et_window_series_stats(w, s, &st), ET_OK);
        /* the collector adds in record order, as this loop did: exact, overflow included */
        ET_CHECKF(st.sum == wsum || (isnan(st.sum) && isnan(wsum)), "%s: sum %.17g vs %.17g",
                  what, st.sum, wsum);
        ET_CHECK_EQ_D(st.min, wmin);
        ET_CHECK_EQ_D(st.max, wmax);
        wsum = 0;
        wmin = INFINITY;
        wmax = -INFINITY;
        uint32_t *idx = malloc((st.buckets + 1) * sizeof *idx);
        uint64_t *cnt = malloc((st.buckets + 1) * sizeof *cnt);
        ET_CHECK(idx && cnt);
        if (idx && cnt) {
            ET_CHECK_EQ_I(et_window_buckets(w, s, idx, cnt, st.buckets), st.buckets);
            for (uint32_t b = 0; b < st.buckets; b++) {
                ET_CHECK(idx[b] < 2 * l.bps);
                if (idx[b] < 2 * l.bps) dense[idx[b]] += cnt[b];
            }
        }
        free(idx);
        free(cnt);
        zero += st.zero;
        count += st.count;
        et_window_free(w);
    }
    ET_CHECK(windows >= 1);
    ET_CHECK_EQ_U(count, n);

    qsort(values, n, sizeof *values, cmp_double);
    /* walk the buckets in value order: negatives from the largest magnitude down, the zero
     * count, then positives upwards */
    size_t rank = 0, worst_rank = 0;
    double worst = 0;
    uint64_t failures = 0;
    for (uint32_t step = 0; step < 2 * l.bps + 1; step++) {
        uint64_t c;
        double rep;
        if (step < l.bps) {
            const uint32_t index = 2 * l.bps - 1 - step;
            c = dense[index];
            rep = bucket_value(&l, index);
        } else if (step == l.bps) {
            c = zero;
            rep = 0.0;
        } else {
            const uint32_t index = step - l.bps - 1;
            c = dense[index];
            rep = bucket_value(&l, index);
        }
        for (uint64_t i = 0; i < c && rank < n; i++, rank++) {
            const double v = values[rank];
            const double err = v == 0 ? fabs(rep) : fabs(rep - v) / fabs(v);
            if (err > worst) {
                worst = err;
                worst_rank = rank;
            }
            if (!(err <= l.rel * (1 + 1e-12))) failures++;
        }
    }
    ET_CHECK_EQ_U(rank, n);
    ET_CHECKF(failures == 0,
              "%s: %" PRIu64 " of %zu ranks off by more than %g; worst %g at rank %zu (%g)",
              what, failures, n, l.rel, worst, worst_rank, values[worst_rank]);
    /* the bound is tight: a large sample gets close to it */
    if (n >= 100000) ET_CHECKF(worst > 0.5 * l.rel, "%s: worst %g, bound %g", what, worst, l.rel);
    free(dense);
    et_recorder_free(rec);
}

/* n values, log-uniform magnitude in [lo, hi), random sign if signed_, some exact zeros. */
static double *sample(size_t n, double lo, double hi, bool signed_, uint64_t seed) {
    double *v = malloc(n * sizeof *v);
    if (!v) return NULL;
    const double a = log2(lo), b = log2(hi);
    for (size_t i = 0; i < n; i++) {
        double x = exp2(a + (b - a) * test_rand_unit(&seed));
        if (x < lo) x = lo;
        if (x >= hi) x = nextafter(hi, 0);
        if (signed_ && (test_rand(&seed) & 1)) x = -x;
        v[i] = (i % 997 == 5) ? 0.0 : x;
    }
    return v;
}

ET_TEST(accuracy_default_layout_vs_oracle) {
    const size_t n = 200000;
    double *v = sample(n, 1e-9, 1e12, true, 42);
    ET_REQUIRE(v);
    et_config c = test_config(4096, 1, 1);
    check_accuracy("defaults, +-[1e-9, 1e12)", c, v, n);
    free(v);
    /* the default layout must cover that range and promise < 1% */
    et_recorder *rec = NULL;
    ET_REQUIRE_OK(et_recorder_new(NULL, &rec));
    layout l;
    ET_REQUIRE(get_layout(rec, &l));
    ET_CHECK(ldexp(1.0, l.min_exp) <= 1e-9);
    ET_CHECK(ldexp(1.0, l.min_exp + (int)l.octaves) > 1e12);
    ET_CHECKF(l.rel < 0.01, "default relative_error %g", l.rel);
    et_recorder_free(rec);
}

ET_TEST(accuracy_other_layouts_vs_oracle) {
    struct {
        const char *what;
        uint32_t k, octaves;
        int32_t min_exp;
        double lo, hi;
        bool signed_;
    } rows[] = {
        {"k=8", 8, 0, 0, 1e-9, 1e12, true},
        {"k=255", 255, 0, 0, 1e-9, 1e12, true},
        {"k=13 narrow", 13, 20, -10, 0x1p-10, 0x1p10, true},
        {"k=36 one octave", 36, 1, 3, 8.0, 16.0, false},
        {"k=36 whole double range", 36, 2046, -1022, 0x1p-1022, DBL_MAX, true},
        {"k=100 latency ms", 100, 30, -10, 0.01, 60000, false},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        const size_t n = 60000;
        double *v = sample(n, rows[r].lo, rows[r].hi, rows[r].signed_, 7 + r);
        ET_REQUIRE(v);
        et_config c = test_config(2048, 1, 1);
        c.buckets_per_octave = rows[r].k;
        c.octaves = rows[r].octaves;
        c.min_exponent = rows[r].min_exp;
        check_accuracy(rows[r].what, c, v, n);
        free(v);
    }
}

/* Values exactly on a bucket's lower edge open that bucket; the double just below closes the
 * previous one.  Checked for every edge of a few octaves, both signs. */
ET_TEST(bucket_edges_are_exact) {
    const uint32_t ks[] = {8, 36, 255};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        et_config c = test_config(64, 1, 1);
        c.buckets_per_octave = ks[t];
        et_recorder *rec = NULL;
        ET_REQUIRE_OK(et_recorder_new(&c, &rec));
        layout l;
        ET_REQUIRE(get_layout(rec, &l));
        const uint32_t s = test_series(rec, "x");
        const uint32_t octaves[] = {0, 30, l.octaves - 1};
        for (size_t o = 0; o < 3; o++) {
            for (uint32_t j = 0; j < l.k; j++) {
                const uint32_t index = octaves[o] * l.k + j;
                double lo, hi;
                bucket_bounds(&l, index, &lo, &hi);
                const double probes[4] = {lo, -lo, nextafter(hi, 0), -nextafter(hi, 0)};
                for (int p = 0; p < 4; p++) {
                    ET_CHECK_RC(et_record(rec, s, probes[p]), ET_OK);
                    et_window *w = NULL;
                    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
                    if (!w) continue;
                    uint32_t got = UINT32_MAX;
                    uint64_t cnt = 0;
                    ET_CHECK_EQ_I(et_window_buckets(w, s, &got, &cnt, 1), 1);
                    const uint32_t want = index + (p & 1 ? l.bps : 0);
                    ET_CHECKF(got == want, "k=%u value %a: bucket %u, want %u", l.k, probes[p],
                              got, want);
                    et_window_free(w);
                }
            }
        }
        et_recorder_free(rec);
    }
}
