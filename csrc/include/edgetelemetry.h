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
 *   - et_record / et_record_many (producer side): any thread, concurrently, wait-free; each
 *     thread writes to its own ring, claimed on its first record and reclaimed after it exits.
 *   - et_collect, et_window_close, et_collector_*: any thread; serialised by an internal lock
 *     (the single consumer), never blocking producers.
 *   - et_series_add: any thread; takes the registry lock (not the hot path).
 *   - et_recorder_free: exactly once, after every other call on the recorder has returned.
 *
 * fork(): in the child every recorder forgets what was recorded before the fork (the parent
 * reports it), keeps the forking thread's ring, and has no collector thread: call
 * et_collector_start again in the child if you use one.  Handled by pthread_atfork.
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

/* Default configuration into *cfg. */
ET_API void et_config_default(et_config *cfg);

/* Create a recorder; cfg NULL means defaults.  Returns ET_EINVAL for a bad config. */
ET_API int et_recorder_new(const et_config *cfg, et_recorder **out);

/* Stop the collector thread and free everything.  NULL is ignored. */
ET_API void et_recorder_free(et_recorder *rec);

/* Register (or find) a series; model, version and metric must be non-empty, dimension may be
 * NULL or "".  The same names give the same id.  Not for the hot path. */
ET_API int et_series_add(et_recorder *rec, const char *model, const char *version,
                         const char *metric, const char *dimension, uint32_t *series_id);

/* ---- hot path (any thread, wait-free) ---- */

/* Record one value.  ET_OK, or ET_ERINGFULL / ET_ENORING when the record was dropped and
 * counted.  NaN and +-Inf are accepted here and counted as rejected by the collector.  An
 * unregistered series id is counted (et_info.unknown_series), never written out of bounds. */
ET_API int et_record(et_recorder *rec, uint32_t series_id, double value);

/* Record n values of one series; returns how many entered the ring (the rest are dropped and
 * counted) or a negative code. */
ET_API int64_t et_record_many(et_recorder *rec, uint32_t series_id, const double *values,
                              size_t n);

/* Count a value that a binding could not even convert (reason ET_REJECT_*), or a record made
 * after the binding closed (reason ET_DROP_CLOSED via et_count_drop).  Atomic, lock-free. */
ET_API int et_count_reject(et_recorder *rec, uint32_t series_id, int reason);
ET_API int et_count_drop(et_recorder *rec, uint32_t series_id, int reason);

/* ---- collector side ---- */

/* Drain every ring into the current window's aggregates. */
ET_API int et_collect(et_recorder *rec);

/* Start / stop a background thread that drains every period_ns (adapting between period_ns/8
 * and period_ns*8 to the rings' fill, so an idle device wakes rarely). */
ET_API int et_collector_start(et_recorder *rec, uint64_t period_ns);
ET_API int et_collector_stop(et_recorder *rec);

/* Drain, close the current window into a new et_window (caller frees with et_window_free),
 * and open the next window.  Producers are never stopped. */
ET_API int et_window_close(et_recorder *rec, et_window **out);
ET_API void et_window_free(et_window *w);

/* Closed window accessors. */
ET_API uint64_t et_window_seq(const et_window *w);
ET_API void et_window_bounds(const et_window *w, int64_t *start_mono_ns, int64_t *end_mono_ns,
                             int64_t *start_wall_ns, int64_t *end_wall_ns);
ET_API uint32_t et_window_series_count(const et_window *w);
/* Names of series i (pointers valid until et_window_free; dimension is "" when none). */
ET_API int et_window_series_names(const et_window *w, uint32_t i, const char **model,
                                  const char **version, const char **metric,
                                  const char **dimension);
ET_API int et_window_series_stats(const et_window *w, uint32_t i, et_series_stats *out);
/* Non-zero buckets of series i: indexes (negative values' buckets are offset by
 * buckets_per_octave * octaves) and counts, each array stats.buckets long. */
ET_API int et_window_buckets(const et_window *w, uint32_t i, uint32_t *indexes,
                             uint64_t *counts, uint32_t capacity);

/* ---- introspection ---- */

ET_API int et_recorder_info(et_recorder *rec, et_info *out);
/* The histogram's mantissa edges: buckets_per_octave + 1 increasing values from 0 to
 * 2^ET_MANTISSA_BITS, so bucket j of an octave holds mantissas [edges[j], edges[j+1]). */
ET_API int et_recorder_edges(const et_recorder *rec, uint32_t *edges, uint32_t capacity);

/* ---- sharing one recorder across modules of one process ----
 * A module that cannot link this library (a second Python extension, a plugin) records into a
 * recorder it was handed through this table, so both feed the same rings and windows.
 * Check abi_version == ET_API_VERSION before use; fields are only ever appended. */
#define ET_API_VERSION 1
typedef struct et_api {
    uint32_t abi_version;
    int (*record)(et_recorder *rec, uint32_t series_id, double value);
    int64_t (*record_many)(et_recorder *rec, uint32_t series_id, const double *values,
                           size_t n);
    int (*count_reject)(et_recorder *rec, uint32_t series_id, int reason);
    int (*series_add)(et_recorder *rec, const char *model, const char *version,
                      const char *metric, const char *dimension, uint32_t *series_id);
    const char *(*strerror)(int code);
} et_api;
ET_API const et_api *et_api_table(void);

/* A static, human-readable name for any return code. */
ET_API const char *et_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif /* EDGETELEMETRY_H */
