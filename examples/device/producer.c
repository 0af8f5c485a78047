/* A C inference process of the device scenario: it attaches to the device agent's recorder by
 * path and records, with the same et_record as into a recorder of its own.
 *
 *   cc -std=c11 producer.c $(pkg-config --cflags --libs edgetelemetry) -o producer_c
 *   producer_c SEGMENT MODEL COUNT SECONDS PROGRESS
 *
 * Records COUNT values of 1.0 (0: until killed) into MODEL's "latency" in milliseconds, in
 * bursts spread over about SECONDS, then detaches and prints "MODEL COUNT".  PROGRESS is a
 * file it maps shared and keeps current: the values recorded so far, and whether it is inside
 * an et_record call right now.  Another process reads it, even after this one is killed with
 * SIGKILL: stopped (SIGSTOP) outside a call, the count is exact (run.sh kills it that way).
 */
#define _POSIX_C_SOURCE 200809L
#include <edgetelemetry.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* The progress record: what run.sh (check.py progress) reads. */
typedef struct {
    _Atomic uint64_t recorded; /* values et_record has taken */
    _Atomic uint32_t busy;     /* 1 while inside et_record */
    uint32_t pid;
} progress;

static progress *map_progress(const char *path) {
    const int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, sizeof(progress)) != 0) return NULL;
    void *p = mmap(NULL, sizeof(progress), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static void pause_ns(long ns) {
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s SEGMENT MODEL COUNT SECONDS PROGRESS\n", argv[0]);
        return 2;
    }
    const char *segment = argv[1], *model = argv[2];
    const uint64_t count = strtoull(argv[3], NULL, 10);
    const double seconds = atof(argv[4]);
    progress *prog = map_progress(argv[5]);
    if (prog == NULL) {
        perror(argv[5]);
        return 1;
    }
    prog->pid = (uint32_t)getpid();

    et_recorder *rec = NULL;
    int rc = et_recorder_attach(segment, &rec);
    if (rc != ET_OK) {
        fprintf(stderr, "attach %s: %s\n", segment, et_strerror(rc));
        return 1;
    }
    uint32_t latency;
    rc = et_series_add_unit(rec, model, "1.0", "latency", NULL, "ms", &latency);
    if (rc != ET_OK) {
        fprintf(stderr, "register: %s\n", et_strerror(rc));
        return 1;
    }
    /* 100 bursts over SECONDS (or bursts of 10,000 every 20 ms until killed) */
    const uint64_t burst = count ? (count + 99) / 100 : 10000;
    const long gap_ns = count ? (long)(seconds * 1e9 / 100) : 20000000L;
    uint64_t done = 0;
    while (count == 0 || done < count) {
        for (uint64_t i = 0; i < burst && (count == 0 || done < count); i++) {
            atomic_store_explicit(&prog->busy, 1, memory_order_relaxed);
            atomic_signal_fence(memory_order_seq_cst); /* busy before the record */
            et_record(rec, latency, 1.0);
            atomic_signal_fence(memory_order_seq_cst); /* the record before the count */
            atomic_store_explicit(&prog->recorded, ++done, memory_order_relaxed);
            atomic_store_explicit(&prog->busy, 0, memory_order_relaxed);
        }
        pause_ns(gap_ns);
    }
    et_recorder_free(rec); /* detach: what it recorded stays for the agent */
    printf("%s %llu\n", model, (unsigned long long)done);
    return 0;
}
