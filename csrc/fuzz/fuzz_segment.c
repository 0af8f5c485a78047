/* libFuzzer target: a producer that scribbles over the shared segment must cost its own
 * records, never the agent's memory safety (issue 14).
 *
 * Each input is a program run against one real segment (a file on tmpfs, mapped by an agent
 * and by a producer handle in this process), restored to the same starting state first:
 * arbitrary writes to any byte of the file (header, process table, rings, registry, names,
 * both aggregate sets, page pools, the journal) interleaved with what the agent does (drain,
 * close and read a window, ack, reap, recover after a steal: replay the journal and fold),
 * what producers do (record through the ring and past it, groups, registration, counts), and
 * attaching or inspecting the scribbled file anew.  ASan and UBSan turn any out-of-bounds
 * access or undefined operation into a crash; the agent's calls must return an error code
 * at worst.
 *
 * The three lock words are not scribbled: a process that writes them can make the others
 * wait (the agent gives up after lock_timeout_ns: test_shared_procs.c), which would only
 * slow the fuzzer down.  `make -C csrc fuzz` runs it for FUZZ_SECONDS (20; CI), longer with
 * FUZZ_SECONDS=600. */
#include "edgetelemetry.h"
#include "../src/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[256];
static et_recorder *agent, *producer;
static unsigned char *pristine;
static uint64_t map_bytes;
static uint64_t lock_off[3];

static void die(const char *what, int rc) {
    fprintf(stderr, "fuzz_segment: %s: %s\n", what, et_strerror(rc));
    abort();
}

static void remove_segment(void) {
    if (path[0]) unlink(path);
}

static void setup(void) {
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/et-fuzz-%d", dir, (int)getpid());
    unlink(path);
    atexit(remove_segment);
    et_config c;
    memset(&c, 0, sizeof c);
    c.ring_capacity = 64;
    c.max_threads = 2;
    c.max_series = 4;
    c.buckets_per_octave = 8;
    c.octaves = 16;
    c.min_exponent = -8;
    c.names_bytes = 256;
    c.histogram_pages = 12;
    et_shared_options o;
    et_shared_options_default(&o);
    o.max_processes = 3;
    o.lock_timeout_ns = 1000000;
    o.steal_after_ns = 1000000;
    o.reap_period_ns = 1000000;
    o.mode = 0600;
    int rc = et_recorder_create_shared(path, &c, &o, &agent);
    if (rc != ET_OK) die("create", rc);
    rc = et_recorder_attach(path, &producer);
    if (rc != ET_OK) die("attach", rc);
    uint32_t id;
    if ((rc = et_series_add_unit(producer, "model", "1", "latency", "gpu", "ms", &id)) != ET_OK ||
        (rc = et_series_add(agent, "model", "1", "confidence", NULL, &id)) != ET_OK)
        die("series", rc);
    /* a ring claimed, pages taken, a window closed and pending, records waiting */
    for (int i = 0; i < 40; i++) et_record(producer, (uint32_t)(i % 2), 0.5 + i);
    et_window *w = NULL;
    if ((rc = et_window_close(agent, &w)) != ET_OK) die("close", rc);
    et_window_free(w);
    for (int i = 0; i < 20; i++) et_record(producer, (uint32_t)(i % 3), -1.5 * i);
    map_bytes = agent->map_bytes;
    pristine = malloc(map_bytes);
    if (pristine == NULL) abort();
    memcpy(pristine, agent->seg, map_bytes);
    const uint64_t region = (uint64_t)((char *)agent->region - (char *)agent->seg);
    lock_off[0] = region + offsetof(et_region, agg_lock);
    lock_off[1] = region + offsetof(et_region, registry_lock);
    lock_off[2] = region + offsetof(et_region, close_lock);
}

/* Read everything a window offers (what a binding does). */
static void walk_window(const et_window *w) {
    const uint32_t n = et_window_series_count(w);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id, back;
        if (et_window_series_id(w, i, &id) == ET_OK) et_window_series_find(w, id, &back);
        const char *m, *v, *me, *d, *u;
        if (et_window_series_names(w, i, &m, &v, &me, &d) == ET_OK)
            if (strlen(m) + strlen(v) + strlen(me) + strlen(d) > 1u << 20) abort();
        if (et_window_series_unit(w, i, &u) == ET_OK && strlen(u) > 1u << 20) abort();
        et_series_stats st;
        if (et_window_series_stats(w, i, &st) != ET_OK || st.buckets > 1u << 20) continue;
        uint32_t *idx = malloc((st.buckets + 1) * sizeof *idx);
        uint64_t *cnt = malloc((st.buckets + 1) * sizeof *cnt);
        if (idx && cnt) et_window_buckets(w, i, idx, cnt, st.buckets);
        free(idx);
        free(cnt);
    }
    int64_t a, b, c, d;
    et_window_bounds(w, &a, &b, &c, &d);
}

static bool is_lock_byte(uint64_t at) {
    for (int k = 0; k < 3; k++)
        if (at >= lock_off[k] && at < lock_off[k] + sizeof(et_lock)) return true;
    return false;
}

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint64_t take(reader *r, size_t bytes) {
    uint64_t v = 0;
    for (size_t i = 0; i < bytes && r->n > 0; i++, r->p++, r->n--) v |= (uint64_t)*r->p << (8 * i);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (agent == NULL) setup();
    memcpy(agent->seg, pristine, map_bytes); /* the same starting state every time */
    reader r = {data, size};
    uint64_t last_seq = 0;
    unsigned char *map = (unsigned char *)agent->seg;
    for (int steps = 0; r.n > 0 && steps < 64; steps++) {
        const unsigned op = (unsigned)take(&r, 1) % 16;
        switch (op) {
        case 0:
        case 1: { /* a scribble: up to 32 bytes anywhere in the file */
            const uint64_t at = take(&r, 4) % map_bytes;
            const size_t n = (size_t)take(&r, 1) % 33;
            for (size_t i = 0; i < n && at + i < map_bytes; i++) {
                const uint8_t b = (uint8_t)take(&r, 1);
                if (!is_lock_byte(at + i)) map[at + i] = b;
            }
            break;
        }
        case 2: { /* a word over something that is an index or a count, 8-aligned */
            const uint64_t at = (take(&r, 4) % map_bytes) & ~7ull;
            const uint64_t v = take(&r, 8);
            if (at + 8 <= map_bytes && !is_lock_byte(at) && !is_lock_byte(at + 4))
                memcpy(map + at, &v, 8);
            break;
        }
        case 3: { /* records: enough of them fill the ring, and the producer drains it */
            const uint32_t id = (uint32_t)take(&r, 1) % 6;
            const unsigned n = (unsigned)take(&r, 1) % 100;
            uint64_t bits = take(&r, 8);
            double v;
            memcpy(&v, &bits, sizeof v);
            for (unsigned i = 0; i < n; i++) et_record(producer, id, v + i);
            break;
        }
        case 4: { /* a batch past the ring, or a group */
            double v[150];
            uint32_t ids[150];
            const unsigned n = (unsigned)take(&r, 1) % 150;
            for (unsigned i = 0; i < n; i++) {
                v[i] = (double)(int8_t)take(&r, 1) * 0.37;
                ids[i] = (uint32_t)i % 5;
            }
            if (take(&r, 1) & 1)
                et_record_many(producer, (uint32_t)take(&r, 1) % 5, v, n);
            else
                et_record_group(producer, ids, v, n);
            break;
        }
        case 5:
            et_collect(agent);
            break;
        case 6: {
            et_window *w = NULL;
            if (et_window_close(agent, &w) == ET_OK && w != NULL) {
                walk_window(w);
                last_seq = et_window_seq(w);
                et_window_free(w);
            }
            break;
        }
        case 7:
            et_window_ack(agent, take(&r, 1) & 1 ? last_seq : take(&r, 2));
            break;
        case 8:
            et_shared_reap(agent);
            break;
        case 9: { /* what a thief of the lock does: redo the journal, fold everything */
            uint64_t previous;
            if (et__agg_enter_timed(agent, &previous)) {
                et__journal_replay(agent);
                et__fold_all(agent);
                et__agg_leave(agent, previous);
            }
            break;
        }
        case 10: { /* registration, by either side, with names from the input */
            char name[8];
            for (int i = 0; i < 7; i++) name[i] = (char)('a' + take(&r, 1) % 26);
            name[7] = '\0';
            uint32_t id;
            et_series_add_unit(take(&r, 1) & 1 ? agent : producer, "model", "1", name, NULL,
                               "ms", &id);
            break;
        }
        case 11: {
            et_info info;
            et_recorder_info(agent, &info);
            et_recorder_info(producer, &info);
            et_shared_info si;
            et_recorder_shared_info(agent, &si);
            char buf[ET_SERIES_NAMES_MAX];
            for (uint32_t id = 0; id < 6; id++) et_series_names(agent, id, buf, sizeof buf);
            break;
        }
        case 12: { /* a new producer attaches to the scribbled file, records, detaches */
            et_recorder *p = NULL;
            if (et_recorder_attach(path, &p) == ET_OK) {
                et_record(p, 0, 1.0);
                et_recorder_free(p);
            }
            et_segment_info si;
            et_segment_inspect(path, &si);
            break;
        }
        case 13:
            et_count_reject(producer, (uint32_t)take(&r, 1) % 6, ET_REJECT_TYPE);
            et_count_drop(producer, (uint32_t)take(&r, 1) % 6, ET_DROP_CLOSED);
            break;
        case 14: { /* the ring's own fields, the likeliest target of a buggy producer */
            et_ring *ring = et__ring(agent, (uint32_t)take(&r, 1) % agent->config.max_threads);
            const uint64_t v = take(&r, 8);
            switch (take(&r, 1) % 4) {
            case 0: atomic_store(&ring->head, v); break;
            case 1: atomic_store(&ring->tail, v); break;
            case 2: atomic_store(&ring->own, v); break;
            default: ring->cached_limit = v; break;
            }
            break;
        }
        default: { /* the journal's state and slots, then a replay */
            et_journal *j = &agent->region->journal;
            const uint64_t v = take(&r, 8);
            switch (take(&r, 1) % 3) {
            case 0: atomic_store(&j->state, v); break;
            case 1: j->ring = (uint32_t)v; break;
            default: {
                const uint64_t at = take(&r, 2) % sizeof j->slot;
                if (at + 8 <= sizeof j->slot) memcpy((char *)j->slot + at, &v, 8);
            }
            }
            uint64_t previous;
            if (et__agg_enter_timed(agent, &previous)) {
                et__journal_replay(agent);
                et__agg_leave(agent, previous);
            }
            break;
        }
        }
    }
    /* the agent keeps serving: a close and a walk of whatever it returns */
    et_window *w = NULL;
    if (et_window_close(agent, &w) == ET_OK && w != NULL) {
        walk_window(w);
        et_window_free(w);
    }
    return 0;
}
