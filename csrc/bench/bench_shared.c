/* What a shared recorder costs, printed (times are never asserted: they depend on the
 * machine and its load; bench/callgrind_gate.sh gates the instruction counts):
 *   - attaching (open, check, map, take a slot) and detaching;
 *   - et_record through an attached handle next to the in-process figure, the same run;
 *   - a drain per record, private against journaled (shared), the same run;
 *   - 4 producer processes flat out into one agent: records drained per second, values lost
 *     (0 expected; exit status 1 otherwise), the agent's CPU per million records;
 *   - how long the agent's collector takes to reap a killed process, default options.
 *
 *   bench_shared [scale]     scale multiplies the work (default 1) */
#include "edgetelemetry.h"

#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUNS 9

static char dir[64];

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

static void check(int rc, const char *what) {
    if (rc != ET_OK) {
        fprintf(stderr, "bench_shared: %s: %s\n", what, et_strerror(rc));
        exit(2);
    }
}

static void path_of(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/et-bench-%d-%s", dir, (int)getpid(), name);
    unlink(buf);
}

static et_recorder *agent_at(const char *path, const et_config *c, uint32_t max_processes) {
    et_shared_options o;
    et_shared_options_default(&o);
    o.max_processes = max_processes;
    et_recorder *rec = NULL;
    check(et_recorder_create_shared(path, c, &o, &rec), "create");
    return rec;
}

static double values[4096];

/* ---- attach ---- */

static void bench_attach(uint32_t series, int n) {
    char path[128];
    path_of(path, sizeof path, "attach");
    et_config c;
    et_config_default(&c);
    c.max_series = series;
    et_recorder *agent = agent_at(path, &c, 64);
    double *t = malloc((size_t)n * sizeof *t), *f = malloc((size_t)n * sizeof *f);
    for (int i = 0; i < n; i++) {
        et_recorder *p = NULL;
        const double t0 = now_ns();
        check(et_recorder_attach(path, &p), "attach");
        const double t1 = now_ns();
        et_recorder_free(p);
        t[i] = t1 - t0;
        f[i] = now_ns() - t1;
    }
    et_info info;
    et_recorder_info(agent, &info);
    printf("attach, %5u series (%5.1f MB segment)     %8.1f us   (detach %.1f us; median of %d)\n",
           series, (double)info.memory_bytes / 1e6, median(t, n) / 1e3, median(f, n) / 1e3, n);
    free(t);
    free(f);
    et_recorder_free(agent);
    unlink(path);
}

/* ---- record: in-process vs attached ---- */

static double record_ns(et_recorder *rec, uint32_t id, uint32_t n) {
    double t[RUNS];
    for (int r = 0; r < RUNS; r++) {
        const double t0 = now_ns();
        for (uint32_t i = 0; i < n; i++) et_record(rec, id, values[i & 4095]);
        t[r] = (now_ns() - t0) / n;
        et_collect(rec); /* outside the timing: the ring is empty for the next run */
    }
    return median(t, RUNS);
}

static void bench_record(uint32_t n) {
    et_config c;
    et_config_default(&c);
    c.ring_capacity = 1u << 16; /* never full (n below it): the fast path alone */
    c.max_threads = 2;
    c.max_series = 4;
    et_recorder *priv = NULL;
    check(et_recorder_new(&c, &priv), "new");
    char path[128];
    path_of(path, sizeof path, "record");
    et_recorder *agent = agent_at(path, &c, 4), *att = NULL;
    check(et_recorder_attach(path, &att), "attach");
    uint32_t a, b;
    check(et_series_add(priv, "m", "1", "x", NULL, &a), "series");
    check(et_series_add(att, "m", "1", "x", NULL, &b), "series");
    /* the attached handle's records are drained by the agent: collect through it */
    double tp[9], ta[9];
    for (int k = 0; k < 9; k++) { /* interleaved, so load changes hit both alike */
        tp[k] = record_ns(priv, a, n);
        double t[RUNS];
        for (int r = 0; r < RUNS; r++) {
            const double t0 = now_ns();
            for (uint32_t i = 0; i < n; i++) et_record(att, b, values[i & 4095]);
            t[r] = (now_ns() - t0) / n;
            et_collect(agent);
        }
        ta[k] = median(t, RUNS);
    }
    const double p = median(tp, 9), s = median(ta, 9);
    printf("et_record in-process                       %8.2f ns\n", p);
    printf("et_record attached to a shared recorder    %8.2f ns   (%.2fx in-process)\n", s,
           s / p);
    et_recorder_free(att);
    et_recorder_free(agent);
    et_recorder_free(priv);
    unlink(path);
}

/* ---- drain: private vs journaled ---- */

static double drain_ns(et_recorder *producer, et_recorder *collector, uint32_t id, uint32_t n) {
    double t[RUNS];
    for (int r = 0; r < RUNS; r++) {
        for (uint32_t i = 0; i < n; i++) et_record(producer, id, values[i & 4095]);
        const double t0 = now_ns();
        et_collect(collector);
        t[r] = (now_ns() - t0) / n;
    }
    return median(t, RUNS);
}

static void bench_drain(uint32_t n) {
    et_config c;
    et_config_default(&c);
    c.ring_capacity = 1u << 16;
    c.max_threads = 2;
    c.max_series = 4;
    et_recorder *priv = NULL;
    check(et_recorder_new(&c, &priv), "new");
    char path[128];
    path_of(path, sizeof path, "drain");
    et_recorder *agent = agent_at(path, &c, 4), *att = NULL;
    check(et_recorder_attach(path, &att), "attach");
    uint32_t a, b;
    check(et_series_add(priv, "m", "1", "x", NULL, &a), "series");
    check(et_series_add(att, "m", "1", "x", NULL, &b), "series");
    double tp[3], ts[3];
    for (int k = 0; k < 3; k++) {
        tp[k] = drain_ns(priv, priv, a, n);
        ts[k] = drain_ns(att, agent, b, n);
    }
    const double p = median(tp, 3), s = median(ts, 3);
    printf("drain per record, private                  %8.2f ns\n", p);
    printf("drain per record, shared (journaled)       %8.2f ns   (%.2fx private)\n", s, s / p);
    et_recorder_free(att);
    et_recorder_free(agent);
    et_recorder_free(priv);
    unlink(path);
}

/* ---- producer processes flat out into one agent ---- */

typedef struct flat_page {
    char path[128];
    _Atomic uint32_t go, ready;
    uint64_t made[16];
    double seconds[16];
} flat_page;

static void flat_producer(flat_page *page, int k, uint64_t n) {
    et_recorder *rec = NULL;
    check(et_recorder_attach(page->path, &rec), "attach");
    uint32_t id;
    char name[16];
    snprintf(name, sizeof name, "p%d", k);
    check(et_series_add(rec, "model", "1", name, NULL, &id), "series");
    atomic_fetch_add(&page->ready, 1);
    while (!atomic_load(&page->go)) usleep(100);
    const double t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) et_record(rec, id, values[i & 4095]);
    page->seconds[k] = (now_ns() - t0) / 1e9;
    page->made[k] = n;
    et_recorder_free(rec);
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int bench_processes(int procs, uint64_t n) {
    flat_page *page = mmap(NULL, sizeof *page, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    path_of(page->path, sizeof page->path, "flat");
    et_config c;
    et_config_default(&c); /* 2048-record rings */
    c.max_threads = (uint32_t)procs;
    c.max_series = 16;
    et_recorder *agent = agent_at(page->path, &c, 16);
    pid_t pids[16];
    fflush(stdout);
    for (int k = 0; k < procs; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            flat_producer(page, k, n);
            _exit(0);
        }
    }
    while (atomic_load(&page->ready) < (uint32_t)procs) usleep(100);
    check(et_collector_start(agent, 1000000), "collector");
    const double cpu0 = cpu_s(), t0 = now_ns();
    atomic_store(&page->go, 1);
    uint64_t counted = 0, windows = 0;
    for (int running = procs; running > 0;) {
        usleep(10000);
        et_window *w = NULL;
        if (et_window_close(agent, &w) == ET_OK) {
            for (uint32_t i = 0; i < et_window_series_count(w); i++) {
                et_series_stats st;
                et_window_series_stats(w, i, &st);
                counted += st.count;
            }
            et_window_ack(agent, et_window_seq(w));
            et_window_free(w);
            windows++;
        }
        running = 0;
        for (int k = 0; k < procs; k++)
            if (pids[k] && waitpid(pids[k], NULL, WNOHANG) == 0) running++;
            else pids[k] = 0;
    }
    const double wall = (now_ns() - t0) / 1e9;
    check(et_collector_stop(agent), "collector");
    et_window *w = NULL;
    check(et_window_close(agent, &w), "close");
    for (uint32_t i = 0; i < et_window_series_count(w); i++) {
        et_series_stats st;
        et_window_series_stats(w, i, &st);
        counted += st.count;
    }
    et_window_ack(agent, et_window_seq(w));
    et_window_free(w);
    const double cpu = cpu_s() - cpu0;
    uint64_t made = 0;
    double slowest = 0;
    for (int k = 0; k < procs; k++) {
        made += page->made[k];
        if (page->seconds[k] > slowest) slowest = page->seconds[k];
    }
    et_info info;
    et_recorder_info(agent, &info);
    printf("%d producer processes flat out, one agent: %" PRIu64 " records in %.2f s (%.1f M/s "
           "recorded by the slowest), %.1f M records/s drained, %" PRIu64 " lost; agent CPU "
           "%.1f ms per million records (collector thread + closes); %" PRIu64
           " drained by their producers (full rings), %" PRIu64 " windows\n",
           procs, made, wall, (double)n / slowest / 1e6, (double)made / wall / 1e6,
           made - counted, cpu * 1e3 / ((double)made / 1e6),
           info.full_drains, windows);
    et_recorder_free(agent);
    unlink(page->path);
    munmap(page, sizeof *page);
    return made == counted ? 0 : 1;
}

/* ---- reap latency, default options ---- */

static void bench_reap(void) {
    char path[128];
    path_of(path, sizeof path, "reap");
    et_recorder *agent = agent_at(path, NULL, 64);
    double lat[5];
    for (int r = 0; r < 5; r++) {
        fflush(stdout);
        const pid_t pid = fork();
        if (pid == 0) {
            et_recorder *p = NULL;
            if (et_recorder_attach(path, &p) != ET_OK) _exit(1);
            pause();
            _exit(0);
        }
        et_shared_info si;
        do {
            usleep(200);
            et_recorder_shared_info(agent, &si);
        } while (si.processes == 0);
        check(et_collector_start(agent, 2000000), "collector");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        const double t0 = now_ns();
        do {
            usleep(100);
            et_recorder_shared_info(agent, &si);
        } while (si.processes != 0);
        lat[r] = now_ns() - t0;
        check(et_collector_stop(agent), "collector");
    }
    printf("reap a killed process, default options     %8.1f ms   (collector period 2 ms, "
           "reap_period_ns 100 ms; median of 5)\n",
           median(lat, 5) / 1e6);
    et_recorder_free(agent);
    unlink(path);
}

int main(int argc, char **argv) {
    const double scale = argc > 1 ? atof(argv[1]) : 1.0;
    snprintf(dir, sizeof dir, "%s", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    unsigned long long x = 88172645463325252ull;
    for (int i = 0; i < 4096; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const double u = (double)(x >> 11) * 0x1.0p-53;
        values[i] = i % 4 == 1 ? u : 0.05 * __builtin_exp(u * 10.6);
    }
    bench_attach(16, 200);
    bench_attach(1024, 50);
    bench_record(60000);
    bench_drain((uint32_t)(65536));
    const int lost = bench_processes(4, (uint64_t)(20000000 * scale));
    bench_reap();
    return lost;
}
