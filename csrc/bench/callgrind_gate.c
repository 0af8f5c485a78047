/* Workloads for the instruction-count gate (bench/callgrind_gate.sh runs each under callgrind
 * with --toggle-collect on one entry point, twice with different sizes, and divides the
 * difference: fixed costs such as the first record's ring claim cancel out).
 *
 *   callgrind_gate record N   N x et_record into a ring big enough never to fill
 *   callgrind_gate many N     N values through et_record_many, 256 per call
 *   callgrind_gate batch N    N values through et_record_many, 65536 per call, on a default
 *                             recorder: aggregated by the caller, past its 2048-record ring
 *   callgrind_gate group N    N values through et_record_group, one per series (4) per call
 *   callgrind_gate drain N    N records drained by et_collect, a full ring per pass
 *   callgrind_gate record-attached N   record, through a handle attached to a shared
 *                             recorder (another mapping of it in the same process)
 *   callgrind_gate drain-shared N      drain, by the agent of a shared recorder: every
 *                             record journaled (what a crash-safe drain costs)
 *
 * Producing the records for `drain` is outside the measured function, and so is draining
 * for `record`/`many` (the ring is sized so that none is needed). */
#include "edgetelemetry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RING (1u << 16)
#define BATCH 256
#define SERIES 4

static int fail(const char *what, int rc) {
    fprintf(stderr, "callgrind_gate: %s: %s\n", what, et_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s record|many|batch|group|drain|record-attached|drain-shared N\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    const unsigned long n = strtoul(argv[2], NULL, 10);
    et_config cfg;
    et_config_default(&cfg);
    cfg.max_threads = 1;
    cfg.max_series = SERIES;
    /* record/many: room for every record of the run, so no drain is ever needed */
    cfg.ring_capacity = RING;
    while (strncmp(mode, "drain", 5) != 0 && cfg.ring_capacity < n + BATCH)
        cfg.ring_capacity *= 2;
    if (!strcmp(mode, "batch")) cfg.ring_capacity = 2048; /* the default */
    if (cfg.ring_capacity > (1u << 24)) return fail("N too large", ET_EINVAL);
    /* shared modes: the agent's recorder in a file, and a producer's handle attached to it */
    const int shared = !strcmp(mode, "record-attached") || !strcmp(mode, "drain-shared");
    char path[256] = "";
    et_recorder *agent = NULL, *rec = NULL;
    int rc;
    if (shared) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/et-callgrind-%d", dir, (int)getpid());
        rc = et_recorder_create_shared(path, &cfg, NULL, &agent);
        if (rc != ET_OK) return fail("et_recorder_create_shared", rc);
        rc = et_recorder_attach(path, &rec);
        if (rc != ET_OK) return fail("et_recorder_attach", rc);
        mode = !strcmp(mode, "record-attached") ? "record" : "drain";
    } else {
        rc = et_recorder_new(&cfg, &rec);
        if (rc != ET_OK) return fail("et_recorder_new", rc);
    }
    et_recorder *collector = agent != NULL ? agent : rec;
    uint32_t ids[SERIES];
    const char *metrics[SERIES] = {"latency_ms", "confidence", "tokens", "queue_ms"};
    for (int s = 0; s < SERIES; s++) {
        rc = et_series_add(rec, "model", "1", metrics[s], NULL, &ids[s]);
        if (rc != ET_OK) return fail("et_series_add", rc);
    }
    /* realistic values: latencies from 0.05 ms to 2 s, confidences, token counts */
    static double values[4096];
    unsigned long long x = 88172645463325252ull;
    for (int i = 0; i < 4096; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const double u = (double)(x >> 11) * 0x1.0p-53;
        values[i] = i % 4 == 1 ? u : 0.05 * __builtin_exp(u * 10.6);
    }

    unsigned long done = 0;
    if (!strcmp(mode, "record")) {
        for (unsigned long i = 0; i < n; i++)
            done += et_record(rec, ids[i & (SERIES - 1)], values[i & 4095]) == ET_OK;
    } else if (!strcmp(mode, "many")) {
        for (unsigned long i = 0; i < n; i += BATCH) {
            const int64_t k = et_record_many(rec, ids[(i / BATCH) & (SERIES - 1)],
                                             values + (i & (4096 - BATCH)), BATCH);
            if (k > 0) done += (unsigned long)k;
        }
    } else if (!strcmp(mode, "batch")) {
        static double big[65536];
        for (unsigned i = 0; i < 65536; i++) big[i] = values[i & 4095];
        for (unsigned long i = 0; i < n; i += 65536) {
            const size_t m = n - i < 65536 ? n - i : 65536;
            const int64_t k = et_record_many(rec, ids[0], big, m);
            if (k > 0) done += (unsigned long)k;
        }
    } else if (!strcmp(mode, "group")) {
        for (unsigned long i = 0; i < n; i += SERIES) {
            const int64_t k = et_record_group(rec, ids, values + (i & (4096 - SERIES)), SERIES);
            if (k > 0) done += (unsigned long)k;
        }
    } else if (!strcmp(mode, "drain")) {
        for (unsigned long i = 0; i < n;) {
            for (unsigned j = 0; j < RING && i < n; j++, i++)
                done += et_record(rec, ids[i & (SERIES - 1)], values[i & 4095]) == ET_OK;
            rc = et_collect(collector);
            if (rc != ET_OK) return fail("et_collect", rc);
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    et_info info;
    et_recorder_info(collector, &info);
    if (agent != NULL) {
        et_recorder_free(rec);
        rec = agent;
        unlink(path);
    }
    et_recorder_free(rec);
    if (done < n) {
        fprintf(stderr, "callgrind_gate: only %lu of %lu records entered the ring\n", done, n);
        return 1;
    }
    printf("%s %lu records, %llu drained\n", mode, n, (unsigned long long)info.records_drained);
    return 0;
}
