/* ns per record for the C core's hot paths.  Prints, never asserts: times depend on the
 * machine and its load (bench/callgrind_gate.sh is the gate).  Each figure is the median of
 * several runs, next to a baseline measured in the same run: the same (series, value) stores
 * into a plain array, the least any recorder could do.
 *
 *   bench [scale]     scale multiplies the work (default 1) */
#include "edgetelemetry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 9
#define SERIES 4

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

static double values[4096];

static void make_values(void) {
    unsigned long long x = 88172645463325252ull;
    for (int i = 0; i < 4096; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const double u = (double)(x >> 11) * 0x1.0p-53;
        values[i] = i % 4 == 1 ? u : 0.05 * __builtin_exp(u * 10.6); /* 0.05 ms .. 2 s */
    }
}

static et_recorder *new_recorder(uint32_t ring, uint32_t threads, uint32_t *ids) {
    et_config c;
    et_config_default(&c);
    c.ring_capacity = ring;
    c.max_threads = threads;
    c.max_series = SERIES;
    et_recorder *rec = NULL;
    if (et_recorder_new(&c, &rec) != ET_OK) {
        fprintf(stderr, "bench: et_recorder_new failed\n");
        exit(1);
    }
    const char *names[SERIES] = {"latency_ms", "confidence", "tokens", "queue_ms"};
    for (int s = 0; s < SERIES; s++) et_series_add(rec, "model", "1", names[s], NULL, &ids[s]);
    return rec;
}

typedef struct {
    uint32_t series, pad;
    double value;
} slot;

/* baseline: the stores a record must make at least, into a plain array */
static double bench_baseline(uint32_t n) {
    slot *a = malloc(n * sizeof *a);
    double t[RUNS];
    for (int r = 0; r < RUNS; r++) {
        const double t0 = now_ns();
        for (uint32_t i = 0; i < n; i++) {
            a[i].series = i & (SERIES - 1);
            a[i].value = values[i & 4095];
            __asm__ volatile("" ::: "memory"); /* one record at a time, as callers make them */
        }
        t[r] = (now_ns() - t0) / n;
    }
    free(a);
    return median(t, RUNS);
}

/* et_record into a ring that never fills; drained outside the timed region */
static double bench_record(uint32_t n, double *drain_ns) {
    uint32_t ids[SERIES];
    et_recorder *rec = new_recorder(n, 1, ids);
    double t[RUNS], d[RUNS];
    et_record(rec, ids[0], 1.0); /* claim the ring */
    et_collect(rec);
    for (int r = 0; r < RUNS; r++) {
        const double t0 = now_ns();
        for (uint32_t i = 0; i < n; i++) et_record(rec, ids[i & (SERIES - 1)], values[i & 4095]);
        const double t1 = now_ns();
        et_collect(rec);
        d[r] = (now_ns() - t1) / n;
        t[r] = (t1 - t0) / n;
    }
    et_recorder_free(rec);
    *drain_ns = median(d, RUNS);
    return median(t, RUNS);
}

static double bench_record_many(uint32_t n, uint32_t batch) {
    uint32_t ids[SERIES];
    et_recorder *rec = new_recorder(n, 1, ids);
    double t[RUNS];
    for (int r = 0; r < RUNS; r++) {
        const double t0 = now_ns();
        for (uint32_t i = 0; i + batch <= n; i += batch)
            et_record_many(rec, ids[(i / batch) & (SERIES - 1)], values + (i & (4095 & ~(batch - 1))),
                           batch);
        t[r] = (now_ns() - t0) / n;
        et_collect(rec);
    }
    et_recorder_free(rec);
    return median(t, RUNS);
}

/* producers recording as fast as they can against the background collector (200 us period,
 * 64k rings): what a producer pays, and how much a collector thread drains per second */
typedef struct {
    et_recorder *rec;
    uint32_t *ids;
    uint64_t n, ok;
    double ns;
} producer;

static void *producer_main(void *arg) {
    producer *p = arg;
    const double t0 = now_ns();
    for (uint64_t i = 0; i < p->n; i++)
        p->ok += et_record(p->rec, p->ids[i & (SERIES - 1)], values[i & 4095]) == ET_OK;
    p->ns = (now_ns() - t0) / (double)p->n;
    return NULL;
}

static void bench_threads(unsigned threads, uint64_t n) {
    uint32_t ids[SERIES];
    et_recorder *rec = new_recorder(1u << 16, threads, ids);
    et_collector_start(rec, 200000);
    producer p[16];
    pthread_t th[16];
    const double t0 = now_ns();
    for (unsigned k = 0; k < threads; k++) {
        p[k] = (producer){rec, ids, n, 0, 0};
        pthread_create(&th[k], NULL, producer_main, &p[k]);
    }
    double ns = 0;
    uint64_t ok = 0;
    for (unsigned k = 0; k < threads; k++) {
        pthread_join(th[k], NULL);
        ns += p[k].ns / threads;
        ok += p[k].ok;
    }
    const double elapsed = now_ns() - t0;
    et_collector_stop(rec);
    et_info info;
    et_recorder_info(rec, &info);
    printf("  %u producer%s flat out + collector thread: %6.2f ns/record, collector drained "
           "%5.1f M records/s, %4.1f%% dropped\n",
           threads, threads > 1 ? "s" : " ", ns, (double)info.records_drained / elapsed * 1e3,
           100.0 * (double)(threads * n - ok) / (double)(threads * n));
    et_recorder_free(rec);
}

int main(int argc, char **argv) {
    const unsigned scale = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    const uint32_t n = 1u << 16;
    make_values();
    double drain;
    const double base = bench_baseline(n);
    const double rec = bench_record(n, &drain);
    printf("edgetelemetry C core, median of %d runs of %u records (not asserted)\n", RUNS, n);
    printf("  baseline: plain array store            %6.2f ns/record\n", base);
    printf("  et_record (ring never full)            %6.2f ns/record  (%.1fx baseline)\n", rec,
           rec / base);
    for (uint32_t b = 16; b <= 256; b *= 4)
        printf("  et_record_many, %3u per call           %6.2f ns/value\n", b,
               bench_record_many(n, b));
    printf("  drain + aggregate (et_collect)         %6.2f ns/record\n", drain);
    for (unsigned t = 1; t <= 2; t++) bench_threads(t, (uint64_t)scale * 2000000);
    return 0;
}
