/*
 * edgetelemetry: per-inference metric recording for edge devices.
 *
 * Data flows one way: producer threads record (series, value) pairs into their own
 * single-producer ring; one collector (a background thread, or the caller of et_collect /
 * et_window_close) drains the rings into per-series aggregates; closing a window hands those
 * aggregates to the caller and starts the next window.  This library knows nothing of Python,
 * msgpack or AWS.
 *
 * Error model: every fallible function returns int, ET_OK (0) or a negative ET_E* code, and
 * et_strerror() names every code.  Nothing here calls exit() or prints.
 *
 * Thread-safety, in the names:
 *   - et_record / et_record_many / et_record_group (producer side): any thread, concurrently, wait-free; each
 *     thread writes to its own ring, claimed on its first record and reclaimed after it exits.
 *   - et_collect, et_window_close, et_collector_*: any thread; serialised by an internal lock
 *     (the single consumer), never blocking producers.
 *   - et_series_add: any thread; takes the registry lock (not the hot path).
 *   - et_recorder_free: exactly once, after every other call on the recorder has returned.
 *
 * fork(): in the child every recorder forgets what was recorded before the fork (the parent
 * reports it), keeps the forking thread's ring, and has no collector thread: call
 * et_collector_start again in the child if you use one.  Handled by pthread_atfork.
 *
 * Using it from C or C++ (docs/native-sdk.md):
 *   cc app.c $(pkg-config --cflags --libs edgetelemetry)     after `make -C csrc install`
 *   cc app.c -DET_DISABLE                                      instrumentation compiled out
 * A module loaded into a process whose recorder someone else created (a Python extension next
 * to the edgetelemetry package) records through the et_api table below, not by linking.
 *
 * Pointers: a function given a NULL recorder, window or output pointer returns ET_EINVAL (or
 * does nothing, where it returns void), except the hot path: et_record, et_record_many and
 * et_record_group take a valid recorder on trust, as a ring push cannot afford the check.
 */
#ifndef EDGETELEMETRY_H
#define EDGETELEMETRY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ET_BUILDING) && defined(__GNUC__)
#define ET_API __attribute__((visibility("default")))
#else
#define ET_API
#endif

#define ET_VERSION_MAJOR 0
#define ET_VERSION_MINOR 1
#define ET_VERSION_PATCH 0

/* Error codes. */
#define ET_OK 0
#define ET_EINVAL (-1)      /* an argument is out of range or NULL */
#define ET_ENOMEM (-2)      /* allocation failed (only at creation or window close) */
#define ET_ESERIESFULL (-3) /* the series limit is reached */
#define ET_ENAME (-4)       /* a series name is empty, too long or has a control character */
#define ET_ENOSERIES (-5)   /* no series has this id */
#define ET_ETHREAD (-6)     /* the collector thread could not be started or stopped */
#define ET_ERINGFULL (-7)   /* et_record: the record was dropped (and counted); never fatal */
#define ET_ENORING (-8)     /* et_record: no ring was free for this thread; dropped, counted */

/* Drop reasons: a dropped record never enters the aggregates but is counted per series. */
#define ET_DROP_RING_FULL 0 /* the thread's ring was full: the collector fell behind */
#define ET_DROP_NO_RING 1   /* every ring was owned by another live thread */
#define ET_DROP_CLOSED 2    /* recorded after the binding closed the recorder */
#define ET_DROP_REASONS 3

/* Rejection reasons: a rejected value was recorded but is not a number we can aggregate. */
#define ET_REJECT_NAN 0
#define ET_REJECT_INF 1
#define ET_REJECT_TYPE 2 /* a binding could not convert the argument to a double */
#define ET_REJECT_REASONS 3

/* Series name limits (bytes, excluding the terminating NUL). */
#define ET_NAME_MAX 255
#define ET_DIMENSION_MAX 1000

/* Histogram layout: magnitudes in [2^min_exponent, 2^(min_exponent + octaves)) fall into
 * octaves of buckets_per_octave buckets, chosen by the top ET_MANTISSA_BITS bits of the
 * mantissa; smaller magnitudes count as zero, larger ones in the top bucket.  Each sign has
 * its own buckets.  See et_recorder_info().relative_error for the bound this gives. */
#define ET_MANTISSA_BITS 12

typedef struct et_recorder et_recorder;
typedef struct et_window et_window;

/* Creation-time configuration; memory is fixed from these.  Zero fields take the default. */
typedef struct et_config {
    uint32_t ring_capacity;      /* records per producer ring; power of two >= 64 (2048) */
    uint32_t max_threads;        /* producer rings, one per live recording thread (4) */
    uint32_t max_series;         /* registered series (16) */
    uint32_t buckets_per_octave; /* histogram accuracy, 8..255 (36: relative error < 1%) */
    int32_t min_exponent;        /* smallest tracked magnitude 2^min_exponent (-30) */
    uint32_t octaves;            /* tracked octaves (70: up to 2^40, about 1.1e12) */
    uint32_t names_bytes;        /* bytes for series names (ET_NAME_MAX-ish per series) */
} et_config;

/* What a recorder is and holds; see et_recorder_info. */
typedef struct et_info {
    et_config config;       /* effective configuration (defaults filled in) */
    uint64_t memory_bytes;  /* every byte the recorder allocated */
    double relative_error;  /* bound on a reported bucket value vs any value in it */
    uint32_t series;        /* series registered */
    uint32_t threads_active;/* rings owned by a live thread */
    uint32_t ring_high_water;/* most records ever pending in one ring at a drain */
    uint64_t records_drained;/* records moved from rings into aggregates, ever */
    uint64_t collector_passes;/* drain passes, ever */
    uint64_t unknown_series;/* records whose series id was never registered (dropped) */
    uint64_t window_seq;    /* sequence number of the current (open) window, from 0 */
    uint64_t collector_period_ns; /* current background drain period (0: not running) */
} et_info;

/* One series' aggregate over a closed window. */
typedef struct et_series_stats {
    uint64_t count;        /* accepted values (finite doubles) */
    double sum, min, max;  /* exact over accepted values; min/max undefined if count == 0 */
    uint64_t zero;         /* values with magnitude below 2^min_exponent, zero included */
    uint64_t rejected[ET_REJECT_REASONS];
    uint64_t dropped[ET_DROP_REASONS];
    int64_t first_mono_ns, last_mono_ns; /* drain times bounding the series' records */
    int64_t first_wall_ns, last_wall_ns; /* the same on the wall clock (CLOCK_REALTIME) */
    uint32_t buckets;      /* non-zero histogram buckets, see et_window_buckets */
} et_series_stats;

/* ---- lifecycle ---- */

/* Fill *cfg with the defaults (the values in et_config's comments).  Thread-safe; no errors;
 * cfg must not be NULL. */
ET_API void et_config_default(et_config *cfg);

/* Create a recorder: every byte it will ever use is allocated here (et_info.memory_bytes).
 * cfg NULL, or zero fields, mean defaults.  Sets *out, or NULL on failure.  Thread-safe.
 * Errors: ET_EINVAL (out NULL, or a config outside the documented ranges: ring_capacity not
 * a power of two in 64..2^24, max_threads > 1024, max_series > 65536, buckets_per_octave
 * outside 8..255, a range outside normal doubles, names_bytes outside 16..64 MiB),
 * ET_ENOMEM, ET_ETHREAD (the process-wide thread-exit key could not be created). */
ET_API int et_recorder_new(const et_config *cfg, et_recorder **out);

/* Stop the collector thread and free everything; records still in the rings are discarded
 * (close a window first to keep them).  NULL is ignored.  Exactly once, after every other
 * call on this recorder, from any thread, has returned: no thread may record into it any
 * more.  No errors. */
ET_API void et_recorder_free(et_recorder *rec);

/* Register (or find) a series and set *series_id, a small dense id (0, 1, 2, ...) to record
 * with.  model, version and metric must be non-empty, dimension may be NULL or "" (none); the
 * same four names always give the same id, whoever registered them first (C, C++ or Python).
 * Any thread; takes the registry lock, so not for the hot path: register once, keep the id.
 * Errors: ET_EINVAL (rec or series_id NULL), ET_ENAME (a name empty, longer than ET_NAME_MAX /
 * ET_DIMENSION_MAX bytes, or with a control character), ET_ESERIESFULL (max_series or
 * names_bytes used up). */
ET_API int et_series_add(et_recorder *rec, const char *model, const char *version,
                         const char *metric, const char *dimension, uint32_t *series_id);

/* ---- hot path (any thread, wait-free) ---- */

/* Record one value: about 18 instructions, no lock, no allocation, no syscall (the first
 * record of a thread claims it a ring: a few atomics, once).  Any thread, concurrently;
 * wait-free.  rec must be a live recorder (not checked).
 * Returns ET_OK, or ET_ERINGFULL (this thread's ring is full: the collector fell behind) or
 * ET_ENORING (max_threads other live threads own every ring): the record was dropped and
 * counted in its series' et_series_stats.dropped; nothing to handle, never fatal.  NaN and
 * +-Inf are accepted here and counted as rejected by the collector.  An unregistered series
 * id is counted (et_info.unknown_series), never written out of bounds. */
ET_API int et_record(et_recorder *rec, uint32_t series_id, double value);

/* Record n values of one series with one ring update.  Same contract as et_record.  Returns
 * how many entered the ring (0..n; the rest were dropped and counted), ET_ENORING (all n
 * dropped, counted), or ET_EINVAL (values NULL with n > 0). */
ET_API int64_t et_record_many(et_recorder *rec, uint32_t series_id, const double *values,
                              size_t n);

/* Record one value into each of n series (the metrics of one inference: values[i] into
 * series_ids[i]) with one ring update, so the collector sees all n or none: they land in the
 * same window, and a full ring drops all n (each counted in its own series).  Same contract
 * as et_record otherwise.  Returns n, ET_ERINGFULL or ET_ENORING (all n dropped and counted),
 * or ET_EINVAL (series_ids or values NULL with n > 0; n larger than ring_capacity can never
 * fit and is always dropped). */
ET_API int64_t et_record_group(et_recorder *rec, const uint32_t *series_ids,
                               const double *values, size_t n);

/* For bindings: count a value that could not even be converted to a double (reason
 * ET_REJECT_TYPE; NaN and Inf are counted by the collector), or a record made after the
 * binding closed its side (et_count_drop, reason ET_DROP_CLOSED or ET_DROP_NO_RING).  Any
 * thread; one relaxed atomic add.  Errors: ET_ENOSERIES (rec NULL or series_id >= max_series),
 * ET_EINVAL (another reason). */
ET_API int et_count_reject(et_recorder *rec, uint32_t series_id, int reason);
ET_API int et_count_drop(et_recorder *rec, uint32_t series_id, int reason);

/* ---- collector side ---- */

/* Drain every ring into the current window's aggregates now.  Not needed with a collector
 * thread; without one, call it often enough that rings (ring_capacity records each) do not
 * fill.  Any thread; serialised with the other collector-side calls by the collector lock;
 * producers never wait.  Errors: ET_EINVAL (rec NULL). */
ET_API int et_collect(et_recorder *rec);

/* Start a background thread that drains every period_ns at most (it adapts between
 * period_ns/8 and period_ns to the rings' fill, so an idle device wakes rarely); starting a
 * running collector does nothing.  Stop joins it; stopping a stopped one does nothing.  Any
 * thread; start and stop are serialised.  Errors: ET_EINVAL (rec NULL, period_ns outside
 * 80 us..60 s), ET_ETHREAD (pthread_create / pthread_join failed). */
ET_API int et_collector_start(et_recorder *rec, uint64_t period_ns);
ET_API int et_collector_stop(et_recorder *rec);

/* Drain, close the current window into a new et_window that the caller owns (free it with
 * et_window_free), and open the next window where this one ended (windows tile time).
 * Producers are never stopped; a record is in exactly one window or counted as dropped.  Any
 * thread; serialised with other collector-side calls.  Errors: ET_EINVAL (a NULL argument),
 * ET_ENOMEM (the window stays open, nothing is lost: try again later). */
ET_API int et_window_close(et_recorder *rec, et_window **out);
/* Free a closed window.  NULL is ignored.  No errors. */
ET_API void et_window_free(et_window *w);

/* Closed window accessors: read-only, so any number of threads may read one window.  The
 * value-returning ones return 0 for a NULL window. */
/* Sequence number of the window (0, 1, 2, ... per recorder). */
ET_API uint64_t et_window_seq(const et_window *w);
/* Start and end of the window on CLOCK_MONOTONIC and CLOCK_REALTIME (ns); any output pointer
 * may be NULL. */
ET_API void et_window_bounds(const et_window *w, int64_t *start_mono_ns, int64_t *end_mono_ns,
                             int64_t *start_wall_ns, int64_t *end_wall_ns);
/* Series in the window: every series registered when it closed, ids 0..count-1. */
ET_API uint32_t et_window_series_count(const et_window *w);
/* Names of series i (pointers valid until et_window_free; dimension is "" when none); any
 * output pointer may be NULL.  Errors: ET_ENOSERIES (w NULL or i >= the series count). */
ET_API int et_window_series_names(const et_window *w, uint32_t i, const char **model,
                                  const char **version, const char **metric,
                                  const char **dimension);
/* Aggregates of series i into *out.  Errors: ET_EINVAL (NULL), ET_ENOSERIES (no series i). */
ET_API int et_window_series_stats(const et_window *w, uint32_t i, et_series_stats *out);
/* Non-zero buckets of series i: indexes (negative values' buckets are offset by
 * buckets_per_octave * octaves) and counts, each array stats.buckets long.  Returns the
 * number written.  Errors: ET_EINVAL (NULL, or capacity < stats.buckets), ET_ENOSERIES.
 * Bucket index b of a positive value covers magnitudes
 *   [2^(min_exponent + b / k) * (1 + edges[b % k] / 2^ET_MANTISSA_BITS),
 *    2^(min_exponent + b / k) * (1 + edges[b % k + 1] / 2^ET_MANTISSA_BITS))
 * with k = buckets_per_octave and edges from et_recorder_edges. */
ET_API int et_window_buckets(const et_window *w, uint32_t i, uint32_t *indexes,
                             uint64_t *counts, uint32_t capacity);

/* ---- introspection ---- */

/* What the recorder is and holds (configuration, memory, counters) into *out.  Any thread;
 * takes the collector lock briefly.  Errors: ET_EINVAL (a NULL argument). */
ET_API int et_recorder_info(et_recorder *rec, et_info *out);
/* The histogram's mantissa edges: buckets_per_octave + 1 increasing values from 0 to
 * 2^ET_MANTISSA_BITS, so bucket j of an octave holds mantissas [edges[j], edges[j+1]).
 * Returns the number written; fixed at creation, so any thread.  Errors: ET_EINVAL (NULL, or
 * capacity < buckets_per_octave + 1). */
ET_API int et_recorder_edges(const et_recorder *rec, uint32_t *edges, uint32_t capacity);

/* ---- sharing one recorder across modules of one process ----
 * A module that cannot link this library (a second Python extension, a plugin) records into a
 * recorder it was handed through this table, so both feed the same rings and windows.
 * Fields are only ever appended: check abi_version >= the version that added the last field
 * you use (1: record .. strerror; 2: record_group).
 *
 * The handle is two addresses: the table (et_api_table()) and the recorder.  From Python, the
 * edgetelemetry package hands them out (docs/native-sdk.md); the receiving module casts them
 * back, registers its series with api->series_add and records with api->record, from any
 * thread, for as long as the owner keeps the recorder open.  The entries behave exactly as
 * the functions of the same names. */
#define ET_API_VERSION 2
typedef struct et_api {
    uint32_t abi_version;
    int (*record)(et_recorder *rec, uint32_t series_id, double value);
    int64_t (*record_many)(et_recorder *rec, uint32_t series_id, const double *values,
                           size_t n);
    int (*count_reject)(et_recorder *rec, uint32_t series_id, int reason);
    int (*series_add)(et_recorder *rec, const char *model, const char *version,
                      const char *metric, const char *dimension, uint32_t *series_id);
    const char *(*strerror)(int code);
    int64_t (*record_group)(et_recorder *rec, const uint32_t *series_ids, const double *values,
                            size_t n); /* version 2 */
} et_api;
/* The process's table: static, never NULL, the same for every recorder.  Thread-safe. */
ET_API const et_api *et_api_table(void);

/* A static, human-readable name for any return code ("unknown error code" for others).
 * Thread-safe; never NULL. */
ET_API const char *et_strerror(int code);

/* ---- compiling instrumentation out ----
 * Build a C or C++ program with -DET_DISABLE and every call above becomes an inline no-op
 * that succeeds (no library to link, no code left after inlining): et_recorder_new gives a
 * NULL recorder, et_series_add id 0, et_record ET_OK, et_record_many and et_record_group n,
 * et_window_close a NULL window whose accessors return 0 / ET_ENOSERIES, et_api_table a table
 * of no-ops.
 * Arguments are still evaluated, as for any call; code that exists only to measure (reading
 * a clock) goes inside ET_INSTRUMENT(...), which keeps its argument when instrumentation is
 * on and drops it with ET_DISABLE:
 *     ET_INSTRUMENT(const int64_t t0 = now_ns();)
 *     run_model(input);
 *     ET_INSTRUMENT(et_record(rec, latency_id, (now_ns() - t0) / 1e6);)
 */
#if defined(ET_DISABLE)
#if defined(ET_BUILDING)
#error "ET_DISABLE is for programs that use edgetelemetry, not for building the library"
#endif
#define ET_INSTRUMENT(...)
#if defined(__GNUC__)
#define ET__OFF(type) static inline __attribute__((always_inline, unused)) type
#else
#define ET__OFF(type) static inline type
#endif
#if defined(__cplusplus)
#define ET__ZERO(type) type()
#else
#define ET__ZERO(type) (type){0}
#endif
ET__OFF(void) et__off_config_default(et_config *cfg) { *cfg = ET__ZERO(et_config); }
ET__OFF(int) et__off_recorder_new(const et_config *cfg, et_recorder **out) {
    (void)cfg;
    if (out != NULL) *out = NULL;
    return ET_OK;
}
ET__OFF(void) et__off_recorder_free(et_recorder *rec) { (void)rec; }
ET__OFF(int) et__off_series_add(et_recorder *rec, const char *model, const char *version,
                               const char *metric, const char *dimension, uint32_t *series_id) {
    (void)rec, (void)model, (void)version, (void)metric, (void)dimension;
    if (series_id != NULL) *series_id = 0;
    return ET_OK;
}
ET__OFF(int) et__off_record(et_recorder *rec, uint32_t series_id, double value) {
    (void)rec, (void)series_id, (void)value;
    return ET_OK;
}
ET__OFF(int64_t) et__off_record_many(et_recorder *rec, uint32_t series_id,
                                    const double *values, size_t n) {
    (void)rec, (void)series_id, (void)values;
    return (int64_t)n;
}
ET__OFF(int64_t) et__off_record_group(et_recorder *rec, const uint32_t *series_ids,
                                     const double *values, size_t n) {
    (void)rec, (void)series_ids, (void)values;
    return (int64_t)n;
}
ET__OFF(int) et__off_count(et_recorder *rec, uint32_t series_id, int reason) {
    (void)rec, (void)series_id, (void)reason;
    return ET_OK;
}
ET__OFF(int) et__off_rec(et_recorder *rec) {
    (void)rec;
    return ET_OK;
}
ET__OFF(int) et__off_collector_start(et_recorder *rec, uint64_t period_ns) {
    (void)rec, (void)period_ns;
    return ET_OK;
}
ET__OFF(int) et__off_window_close(et_recorder *rec, et_window **out) {
    (void)rec;
    if (out != NULL) *out = NULL;
    return ET_OK;
}
ET__OFF(void) et__off_window_free(et_window *w) { (void)w; }
ET__OFF(uint64_t) et__off_window_seq(const et_window *w) {
    (void)w;
    return 0;
}
ET__OFF(void) et__off_window_bounds(const et_window *w, int64_t *start_mono_ns,
                                   int64_t *end_mono_ns, int64_t *start_wall_ns,
                                   int64_t *end_wall_ns) {
    (void)w;
    if (start_mono_ns != NULL) *start_mono_ns = 0;
    if (end_mono_ns != NULL) *end_mono_ns = 0;
    if (start_wall_ns != NULL) *start_wall_ns = 0;
    if (end_wall_ns != NULL) *end_wall_ns = 0;
}
ET__OFF(uint32_t) et__off_window_series_count(const et_window *w) {
    (void)w;
    return 0;
}
ET__OFF(int) et__off_window_series_names(const et_window *w, uint32_t i, const char **model,
                                        const char **version, const char **metric,
                                        const char **dimension) {
    (void)w, (void)i, (void)model, (void)version, (void)metric, (void)dimension;
    return ET_ENOSERIES;
}
ET__OFF(int) et__off_window_series_stats(const et_window *w, uint32_t i, et_series_stats *out) {
    (void)w, (void)i, (void)out;
    return ET_ENOSERIES;
}
ET__OFF(int) et__off_window_buckets(const et_window *w, uint32_t i, uint32_t *indexes,
                                   uint64_t *counts, uint32_t capacity) {
    (void)w, (void)i, (void)indexes, (void)counts, (void)capacity;
    return ET_ENOSERIES;
}
ET__OFF(int) et__off_recorder_info(et_recorder *rec, et_info *out) {
    (void)rec;
    if (out != NULL) *out = ET__ZERO(et_info);
    return ET_OK;
}
ET__OFF(int) et__off_recorder_edges(const et_recorder *rec, uint32_t *edges,
                                   uint32_t capacity) {
    (void)rec, (void)edges, (void)capacity;
    return 0;
}
ET__OFF(const char *) et__off_strerror(int code) {
    (void)code;
    return "edgetelemetry is compiled out (ET_DISABLE)";
}
ET__OFF(const et_api *) et__off_api_table(void) {
    static const et_api table = {ET_API_VERSION, et__off_record, et__off_record_many,
                                 et__off_count, et__off_series_add, et__off_strerror,
                                 et__off_record_group};
    return &table;
}
#define et_config_default et__off_config_default
#define et_recorder_new et__off_recorder_new
#define et_recorder_free et__off_recorder_free
#define et_series_add et__off_series_add
#define et_record et__off_record
#define et_record_many et__off_record_many
#define et_record_group et__off_record_group
#define et_count_reject et__off_count
#define et_count_drop et__off_count
#define et_collect et__off_rec
#define et_collector_start et__off_collector_start
#define et_collector_stop et__off_rec
#define et_window_close et__off_window_close
#define et_window_free et__off_window_free
#define et_window_seq et__off_window_seq
#define et_window_bounds et__off_window_bounds
#define et_window_series_count et__off_window_series_count
#define et_window_series_names et__off_window_series_names
#define et_window_series_stats et__off_window_series_stats
#define et_window_buckets et__off_window_buckets
#define et_recorder_info et__off_recorder_info
#define et_recorder_edges et__off_recorder_edges
#define et_strerror et__off_strerror
#define et_api_table et__off_api_table
#else
#define ET_INSTRUMENT(...) __VA_ARGS__
#endif

#ifdef __cplusplus
}
#endif
#endif /* EDGETELEMETRY_H */
