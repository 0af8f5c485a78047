/*
 * An inference loop instrumented with edgetelemetry: the C SDK from end to end.
 *
 *   make -C examples run                 install the SDK into examples/build/sdk, build, run
 *   cc infer_loop.c $(pkg-config --cflags --libs edgetelemetry) -pthread -lm
 *   cc infer_loop.c -DET_DISABLE -pthread -lm      the same program, telemetry compiled out
 *
 * Worker threads each run a small "model" (two dense layers and a softmax, a few us of work)
 * and record two series per inference: latency in milliseconds and the top-1 confidence.  A
 * background collector drains their rings; the main thread closes a window every 50 ms and
 * prints each series' count, mean and p50/p99 estimated from the histogram's buckets.  At the
 * end it checks that every record made is in a window or was counted as dropped: the exit
 * status is 0 only if that holds.
 *
 * Usage: infer_loop [inferences per worker (20000)] [workers (2)]
 */
#define _POSIX_C_SOURCE 200809L
#include <edgetelemetry.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define INPUTS 128
#define HIDDEN 128
#define CLASSES 10
#define MAX_WORKERS 16

/* ---- a stand-in for a model ---- */

static float w1[HIDDEN][INPUTS], w2[CLASSES][HIDDEN];

static float random_weight(uint32_t *x) {
    *x = *x * 1103515245u + 12345u;
    return (float)((*x >> 8) % 2001) / 4000.0f - 0.25f;
}

static void model_init(void) {
    uint32_t x = 12345;
    for (int h = 0; h < HIDDEN; h++)
        for (int i = 0; i < INPUTS; i++) w1[h][i] = random_weight(&x);
    for (int c = 0; c < CLASSES; c++)
        for (int h = 0; h < HIDDEN; h++) w2[c][h] = random_weight(&x);
}

/* One inference: hidden = relu(W1 x), logits = W2 hidden, softmax; returns the top-1
 * probability. */
static double model_run(const float *input) {
    float hidden[HIDDEN], logits[CLASSES], top = -INFINITY;
    for (int h = 0; h < HIDDEN; h++) {
        float acc = 0.0f;
        for (int i = 0; i < INPUTS; i++) acc += w1[h][i] * input[i];
        hidden[h] = acc > 0.0f ? acc : 0.0f;
    }
    for (int c = 0; c < CLASSES; c++) {
        float acc = 0.0f;
        for (int h = 0; h < HIDDEN; h++) acc += w2[c][h] * hidden[h];
        logits[c] = acc;
        if (acc > top) top = acc;
    }
    double sum = 0.0;
    for (int c = 0; c < CLASSES; c++) sum += exp((double)(logits[c] - top));
    return 1.0 / sum; /* exp(top - top) / sum */
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the instrumented loop ---- */

typedef struct worker {
    pthread_t thread;
    et_recorder *rec;
    uint32_t latency_id, confidence_id;
    long iterations;
    unsigned seed;
} worker;

static _Atomic uint64_t records_made; /* what the workers asked to record */

static void *worker_main(void *arg) {
    worker *w = arg;
    float input[INPUTS];
    uint32_t x = w->seed;
    for (long n = 0; n < w->iterations; n++) {
        for (int i = 0; i < INPUTS; i++) {
            x = x * 1664525u + 1013904223u;
            input[i] = (float)(x >> 9) / (float)(1u << 23);
        }
        ET_INSTRUMENT(const int64_t t0 = now_ns();)
        const double confidence = model_run(input);
        /* one inference's metrics with one ring update: they land in the same window (a full
         * ring is drained by this thread first); the one drop left, from a signal handler,
         * is counted, so the return code needs no handling */
        double latency_ms = 0.0;
        ET_INSTRUMENT(latency_ms = (double)(now_ns() - t0) / 1e6;)
        const uint32_t ids[2] = {w->latency_id, w->confidence_id};
        const double values[2] = {latency_ms, confidence};
        et_record_group(w->rec, ids, values, 2);
        atomic_fetch_add_explicit(&records_made, 2, memory_order_relaxed);
    }
    return NULL;
}

/* ---- reading a closed window ---- */

typedef struct layout {
    uint32_t per_octave;
    int32_t min_exponent;
    uint32_t edges[256];
} layout;

/* The value reported for positive bucket b: the point of least relative error to both of its
 * edges (see et_window_buckets in the header for the bucket bounds). */
static double bucket_value(const layout *l, uint32_t b) {
    const int e = l->min_exponent + (int)(b / l->per_octave);
    const uint32_t j = b % l->per_octave;
    const double unit = (double)(1u << ET_MANTISSA_BITS);
    const double lo = ldexp(1.0 + l->edges[j] / unit, e);
    const double hi = ldexp(1.0 + l->edges[j + 1] / unit, e);
    return 2.0 * lo * hi / (lo + hi);
}

/* The q-quantile of a series of non-negative values: walk the zero bucket, then the buckets
 * in increasing order (et_window_buckets lists positive buckets first, ascending). */
static double quantile(const layout *l, const et_series_stats *st, const uint32_t *indexes,
                       const uint64_t *counts, double q) {
    uint64_t rank = (uint64_t)ceil(q * (double)st->count);
    if (rank == 0) rank = 1;
    if (rank <= st->zero) return 0.0;
    uint64_t seen = st->zero;
    for (uint32_t k = 0; k < st->buckets; k++) {
        seen += counts[k];
        if (seen >= rank) return bucket_value(l, indexes[k]);
    }
    return st->max;
}

typedef struct totals {
    uint64_t kept, dropped, windows;
} totals;

static int report_window(et_recorder *rec, const layout *l, totals *t, int verbose) {
    et_window *w = NULL;
    int rc = et_window_close(rec, &w);
    if (rc != ET_OK) {
        fprintf(stderr, "et_window_close: %s\n", et_strerror(rc));
        return rc;
    }
    if (w == NULL) return ET_OK; /* compiled out */
    t->windows++;
    for (uint32_t i = 0; i < et_window_series_count(w); i++) {
        const char *model, *version, *metric, *dimension;
        et_series_stats st;
        et_window_series_names(w, i, &model, &version, &metric, &dimension);
        et_window_series_stats(w, i, &st);
        uint64_t dropped = 0;
        for (int r = 0; r < ET_DROP_REASONS; r++) dropped += st.dropped[r];
        t->kept += st.count;
        t->dropped += dropped;
        if (!verbose || st.count == 0) continue;
        uint32_t *indexes = malloc(st.buckets * sizeof *indexes);
        uint64_t *counts = malloc(st.buckets * sizeof *counts);
        if (indexes == NULL || counts == NULL ||
            et_window_buckets(w, i, indexes, counts, st.buckets) < 0) {
            free(indexes);
            free(counts);
            continue;
        }
        printf("window %3llu  %s %s %-13s n=%-6llu mean=%-9.4g p50=%-9.4g p99=%-9.4g "
               "max=%-9.4g dropped=%llu\n",
               (unsigned long long)et_window_seq(w), model, version, metric,
               (unsigned long long)st.count, st.sum / (double)st.count,
               quantile(l, &st, indexes, counts, 0.50), quantile(l, &st, indexes, counts, 0.99),
               st.max, (unsigned long long)dropped);
        free(indexes);
        free(counts);
    }
    et_window_free(w);
    return ET_OK;
}

int main(int argc, char **argv) {
    const long iterations = argc > 1 ? atol(argv[1]) : 20000;
    const int workers = argc > 2 ? atoi(argv[2]) : 2;
    if (iterations <= 0 || workers <= 0 || workers > MAX_WORKERS) {
        fprintf(stderr, "usage: %s [inferences per worker > 0] [workers 1..%d]\n", argv[0],
                MAX_WORKERS);
        return 2;
    }
    model_init();

    /* Fixed memory, sized for the workers: one ring each, 8192 records deep. */
    et_config cfg;
    et_config_default(&cfg);
    cfg.max_threads = (uint32_t)workers;
    cfg.ring_capacity = 8192;
    et_recorder *rec = NULL;
    int rc = et_recorder_new(&cfg, &rec);
    uint32_t latency_id = 0, confidence_id = 0;
    if (rc == ET_OK)
        rc = et_series_add(rec, "resnet18-int8", "1.0", "latency-ms", NULL, &latency_id);
    if (rc == ET_OK)
        rc = et_series_add(rec, "resnet18-int8", "1.0", "confidence", NULL, &confidence_id);
    if (rc == ET_OK) rc = et_collector_start(rec, 2000000); /* drain every 2 ms at most */
    if (rc != ET_OK) {
        fprintf(stderr, "edgetelemetry set-up: %s\n", et_strerror(rc));
        et_recorder_free(rec);
        return 1;
    }
    layout l = {0};
    et_info info;
    et_recorder_info(rec, &info);
    l.per_octave = info.config.buckets_per_octave;
    l.min_exponent = info.config.min_exponent;
    et_recorder_edges(rec, l.edges, 256);

    worker w[MAX_WORKERS];
    for (int i = 0; i < workers; i++) {
        w[i] = (worker){.rec = rec, .latency_id = latency_id, .confidence_id = confidence_id,
                        .iterations = iterations, .seed = 7u + (unsigned)i};
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }

    /* Close a window every 50 ms while the workers run: they never wait for it. */
    totals t = {0, 0, 0};
    const int64_t start = now_ns();
    while (atomic_load(&records_made) < (uint64_t)iterations * (uint64_t)workers * 2) {
        nanosleep(&(struct timespec){0, 50000000}, NULL);
        if (report_window(rec, &l, &t, 1) != ET_OK) return 1;
    }
    for (int i = 0; i < workers; i++) pthread_join(w[i].thread, NULL);
    if (report_window(rec, &l, &t, 1) != ET_OK) return 1;
    const double seconds = (double)(now_ns() - start) / 1e9;
    et_recorder_free(rec);

    const uint64_t made = atomic_load(&records_made);
#if defined(ET_DISABLE)
    printf("infer_loop: telemetry compiled out (ET_DISABLE): %llu inferences in %.3f s\n",
           (unsigned long long)(made / 2), seconds);
    return 0;
#else
    const int exact = t.kept + t.dropped == made;
    printf("infer_loop: %s: %llu records made, %llu in %llu windows, %llu dropped (counted), "
           "%.3f s\n",
           exact ? "ok" : "MISMATCH", (unsigned long long)made, (unsigned long long)t.kept,
           (unsigned long long)t.windows, (unsigned long long)t.dropped, seconds);
    return exact ? 0 : 1;
#endif
}
