/*
 * edgetelemetry: per-inference metric recording for edge devices.
 *
 * Data flows one way: producer threads record (series, value) pairs into their own
 * single-producer ring; one collector (a background thread, or the caller of et_collect /
 * et_window_close) drains the rings into per-series aggregates; closing a window hands those
 * aggregates to the caller and starts the next window.  This library knows nothing of Python,
 * msgpack or AWS.
 *
 * Nothing is lost for lack of ring space: a producer that finds its ring full drains it into
 * the aggregates itself (taking the aggregate lock for one ring's worth of records), a thread
 * beyond max_threads aggregates its records directly, and a batch too large for the ring is
 * aggregated by its caller in ring-sized chunks.  The one record still dropped (and counted)
 * is one made by a signal handler while its thread is inside such a drain.  docs/core.md
 * explains the full-ring path, its cost and the bound on how long it waits.
 *
 * Error model: every fallible function returns int, ET_OK (0) or a negative ET_E* code, and
 * et_strerror() names every code.  Nothing here calls exit() or prints.
 *
 * Thread-safety, in the names:
 *   - et_record / et_record_many / et_record_group (producer side): any thread, concurrently.
 *     Each thread writes to its own ring, claimed on its first record and reclaimed after it
 *     exits: wait-free while the ring has room.  A full ring, a batch that does not fit and a
 *     thread without a ring take the aggregate lock for at most ring_capacity values at a
 *     time (a group longer than the ring: its length, so it stays whole); docs/core.md has
 *     the bound on the wait.  Nothing is dropped.
 *   - et_collect, et_window_close, et_window_ack, et_collector_*: any thread; they drain one
 *     ring per hold of the aggregate lock, and closes are serialised among themselves.
 *     Building a closed window happens outside the aggregate lock: producers keep recording
 *     into the next one.  On a shared recorder only its agent may call them.
 *   - et_series_add / et_series_add_unit: any thread; take the registry lock (not the hot
 *     path).
 *   - et_recorder_free: exactly once, after every other call on the recorder has returned
 *     (on an attached recorder: detach; other processes and the agent go on).
 *   - Signal handlers may call et_record, et_record_many, et_record_group, et_count_reject
 *     and et_count_drop (nothing else), as long as the interrupted code is not itself
 *     recording into the same recorder from that thread; a record that would have to wait for
 *     the aggregate lock its own thread holds is dropped and counted (ET_DROP_RING_FULL)
 *     instead of deadlocking.
 *
 * fork(): in the child every private recorder forgets what was recorded before the fork (the
 * parent reports it), keeps the forking thread's ring, and has no collector thread: call
 * et_collector_start again in the child if you use one.  A shared recorder (below) is the
 * device's, not the process's: the child keeps recording into it as a new process.  Handled
 * by pthread_atfork.
 *
 * One recorder for every process of a device: an agent creates a *shared recorder* in a file
 * (et_recorder_create_shared), and any process, in any language, attaches to it by path
 * (et_recorder_attach) and records with the same calls and the same cost.  See the section
 * "shared recorders" below and docs/shared-recorder.md.
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
#define ET_VERSION_MINOR 2
#define ET_VERSION_PATCH 0

/* Error codes. */
#define ET_OK 0
#define ET_EINVAL (-1)      /* an argument is out of range or NULL */
#define ET_ENOMEM (-2)      /* allocation failed (only at creation or window close) */
#define ET_ESERIESFULL (-3) /* max_series series are registered */
#define ET_ENAME (-4)       /* a series name is empty, too long or has a control character */
#define ET_ENOSERIES (-5)   /* no series has this id */
#define ET_ETHREAD (-6)     /* the collector thread could not be started or stopped */
#define ET_ERINGFULL (-7)   /* a record from a signal handler found its thread inside a drain:
                             * dropped and counted (ET_DROP_RING_FULL); never fatal */
#define ET_ENORING (-8)     /* no longer returned by the core (a thread without a ring
                             * aggregates directly); kept for bindings that count their own */
#define ET_EUNIT (-9)       /* et_series_add_unit: the series exists with another unit */
#define ET_ENAMESFULL (-10) /* the series' names do not fit in names_bytes */
#define ET_ENAMECLASH (-11) /* another series of the model, version and dimension has the same
                             * display name, metric-unit (see et_series_add_unit) */
/* Shared recorders (see "one recorder for every process of a device" below): */
#define ET_ENOSEGMENT (-12) /* no shared recorder at the path (nothing there) */
#define ET_ENOTSEGMENT (-13)/* the path is not a shared recorder, or its header is damaged */
#define ET_ELAYOUT (-14)    /* the segment has another layout version than this library's
                             * (ET_SEGMENT_LAYOUT); et_segment_inspect names the file's */
#define ET_EACCES (-15)     /* permission denied: the segment's owner, group and mode */
#define ET_EPROCFULL (-16)  /* every process slot of the segment is taken */
#define ET_ENOTOWNER (-17)  /* only the agent (et_recorder_create_shared's caller) may do this */
#define ET_EBUSY (-18)      /* another live agent owns the segment */
#define ET_ECONFIG (-19)    /* the segment exists with another configuration */
#define ET_ETRUNCATED (-20) /* the segment's file is shorter than its layout: truncated on
                             * disk (attach), or under a running agent (its handle is dead) */
#define ET_ETIMEDOUT (-21)  /* the agent: a live process held a lock past lock_timeout_ns;
                             * nothing changed, try again (counted in lock_timeouts) */
#define ET_ESYSTEM (-22)    /* a system call failed for another reason: errno says which */

/* Drop reasons: a dropped record never enters the aggregates but is counted per series.
 * With no loss for lack of ring space, the core itself drops only RING_FULL records: made by
 * a signal handler while its thread held the aggregate lock (a deadlock otherwise). */
#define ET_DROP_RING_FULL 0 /* re-entrant record during its own thread's drain */
#define ET_DROP_NO_RING 1   /* counted by a binding (et_count_drop), never by the core */
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
 * its own buckets.  See et_recorder_info().relative_error for the bound this gives.
 *
 * Memory: an octave's buckets (a "page") are taken from a pool of histogram_pages pages when
 * a window first needs them, so a series costs what it uses, not 2 x octaves pages.  When the
 * pool is used up in a window, or one bucket would pass 2^32 values in a window, values are
 * still counted, exactly in count/sum/min/max and with octave precision in the histogram: at
 * the middle bucket of their octave, and in et_series_stats.coarse.  Never lost. */
#define ET_MANTISSA_BITS 12

typedef struct et_recorder et_recorder;
typedef struct et_window et_window;

/* Creation-time configuration; memory is fixed from these.  Zero fields take the default
 * (the value in parentheses). */
typedef struct et_config {
    uint32_t ring_capacity;      /* records per producer ring; power of two >= 64 (2048) */
    uint32_t max_threads;        /* producer rings, one per live recording thread; more
                                  * threads still record, through the aggregate lock (4) */
    uint32_t max_series;         /* registered series (16) */
    uint32_t buckets_per_octave; /* histogram accuracy, 8..255 (36: relative error < 1%) */
    int32_t min_exponent;        /* smallest tracked magnitude 2^min_exponent (-30) */
    uint32_t octaves;            /* tracked octaves (70: up to 2^40, about 1.1e12) */
    uint32_t names_bytes;        /* bytes for the series' names and units, each series taking
                                  * their lengths + 5 (256 x max_series) */
    uint32_t histogram_pages;    /* histogram pages per window, each one octave of one series
                                  * (8 x max_series + 2 x octaves) */
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
    uint64_t collector_passes;/* drain passes (et_collect, the collector thread, window
                               * closes), ever */
    uint64_t unknown_series;/* records whose series id was never registered: counted here,
                             * aggregated nowhere */
    uint64_t window_seq;    /* sequence number of the current (open) window, from 0 */
    uint64_t collector_period_ns; /* current background drain period (0: not running) */
    uint64_t full_drains;   /* times a producer found its ring full and drained it, ever */
    uint64_t direct_values; /* values aggregated by their producer past the ring (batches,
                             * groups too large for it, threads without a ring), ever */
    uint64_t pool_exhausted;/* histogram slots that went coarse for want of a page, ever */
    uint32_t pages_high_water; /* most histogram pages one window used (of histogram_pages) */
    uint32_t series_bytes;  /* memory each of max_series costs, without names and pages */
    uint32_t page_bytes;    /* memory of one page; the pool is 2 x histogram_pages of them */
    uint32_t reserved;
    uint64_t integrity_errors; /* indexes found out of bounds in the recorder's memory and
                                * refused: 0 unless something wrote over it */
} et_info;

/* One series' aggregate over a closed window. */
typedef struct et_series_stats {
    uint64_t count;        /* accepted values (finite doubles) */
    double sum, min, max;  /* over accepted values; min/max exact, 0 when count == 0; sum
                            * in double precision (docs/core.md: the order it is taken in) */
    uint64_t zero;         /* values with magnitude below 2^min_exponent, zero included */
    uint64_t rejected[ET_REJECT_REASONS];
    uint64_t dropped[ET_DROP_REASONS];
    int64_t first_mono_ns, last_mono_ns; /* times of the aggregations (drains, batches)
                                          * bounding the series' records (CLOCK_MONOTONIC) */
    int64_t first_wall_ns, last_wall_ns; /* the same on the wall clock: the monotonic times
                                          * shifted by the window end's wall - monotonic,
                                          * kept inside the window's wall bounds */
    uint32_t buckets;      /* non-zero histogram buckets, see et_window_buckets */
    uint32_t reserved;
    uint64_t coarse;       /* values (of count) placed with octave precision only: the page
                            * pool was used up or a bucket was full; they are in the middle
                            * bucket of their octave */
} et_series_stats;

/* ---- lifecycle ---- */

/* Fill *cfg with the defaults (the values in et_config's comments); names_bytes and
 * histogram_pages are left 0, which means "scaled to max_series", so that a caller who only
 * raises max_series gets room for that many series.  Thread-safe; no errors; NULL is
 * ignored. */
ET_API void et_config_default(et_config *cfg);

/* Create a recorder: every byte it will ever use is allocated here, in one block
 * (et_info.memory_bytes; docs/core.md has the figures per series and per page).  cfg NULL,
 * or zero fields, mean defaults.  Sets *out, or NULL on failure.  Thread-safe.
 * Errors: ET_EINVAL (out NULL, or a config outside the documented ranges: ring_capacity not
 * a power of two in 64..2^24, max_threads > 1024, max_series > 65536, buckets_per_octave
 * outside 8..255, a range outside normal doubles, names_bytes outside 16..64 MiB,
 * histogram_pages > 2^24), ET_ENOMEM, ET_ETHREAD (the process-wide thread-exit key could not
 * be created). */
ET_API int et_recorder_new(const et_config *cfg, et_recorder **out);

/* Stop the collector thread and free everything; records still in the rings are discarded
 * (close a window first to keep them).  NULL is ignored.  Exactly once, after every other
 * call on this recorder, from any thread, has returned: no thread may record into it any
 * more.  No errors.
 * A shared recorder's handle: this process detaches (its slot and its threads' rings are
 * given back; what they hold stays in the segment for the agent), the mapping and the file
 * descriptor are closed, the file stays.  The agent's handle leaves the segment to the next
 * agent (a window closed and not acknowledged is returned again by its first close). */
ET_API void et_recorder_free(et_recorder *rec);

/* Register (or find) a series with a unit and set *series_id, a small dense id (0, 1, 2, ...)
 * to record with.  model, version and metric must be non-empty; dimension and unit may be
 * NULL or "" (none).  The same four names always give the same id, whoever registered them
 * first (C, C++ or Python); asking for them with another unit is an error, so one series
 * never carries two units.  Lookup is by hash, so registering thousands of series is linear.
 * Any thread; takes the registry lock, so not for the hot path: register once, keep the id.
 * A series' display name is "metric-unit", or "metric" without a unit: it is what a report
 * names the series by (the heartbeat's "latency-ms-p99").  Two series of one model, version
 * and dimension may not share it: "latency" in "ms" and "latency-ms" without a unit would
 * report under one name, so the second is refused with ET_ENAMECLASH, whoever registers it.
 * Errors: ET_EINVAL (rec or series_id NULL), ET_ENAME (a name empty, longer than ET_NAME_MAX
 * (unit too) / ET_DIMENSION_MAX bytes, or with a control character), ET_EUNIT (the series
 * exists with another unit), ET_ENAMECLASH (*series_id is set to the series that has the
 * display name: et_series_names names it), ET_ESERIESFULL (max_series series exist),
 * ET_ENAMESFULL (the names do not fit in what is left of names_bytes).  *series_id is
 * untouched on any other error.
 * A shared recorder's registry is the segment's: every process gets the same ids, and the
 * display-name check covers every series of the segment, whoever registered it.  The
 * agent's call waits for the registry lock at most lock_timeout_ns (ET_ETIMEDOUT); a dead
 * holder's lock is taken over and the registry repaired; ET_ETRUNCATED (the file shrank). */
ET_API int et_series_add_unit(et_recorder *rec, const char *model, const char *version,
                              const char *metric, const char *dimension, const char *unit,
                              uint32_t *series_id);

/* et_series_add_unit without a unit, except that an existing series is found whatever its
 * unit: a module that records into a series someone else registered (another language,
 * through et_api) need not know the unit.  A new series gets no unit.  Same errors but
 * ET_EUNIT. */
ET_API int et_series_add(et_recorder *rec, const char *model, const char *version,
                         const char *metric, const char *dimension, uint32_t *series_id);

/* The five names of registered series series_id (model, version, metric, dimension, unit;
 * "" for none), copied into buf one after another, each NUL-terminated.  Returns the bytes
 * used; ET_SERIES_NAMES_MAX always suffices.  Any recorder, any thread; no lock.  A copy,
 * not pointers: in a shared recorder the names lie in memory other processes can write, so
 * they are checked once, as they are copied (a binding names the series an ET_ENAMECLASH
 * is about, or checks its names against those another process registered).
 * Errors: ET_EINVAL (NULL, or capacity too small), ET_ENOSERIES (no such series, or its
 * names were written over), ET_ETRUNCATED (a shared recorder's file shrank). */
#define ET_SERIES_NAMES_MAX (4 * (ET_NAME_MAX + 1) + ET_DIMENSION_MAX + 1)
ET_API int et_series_names(et_recorder *rec, uint32_t series_id, char *buf, size_t capacity);

/* ---- hot path (any thread) ---- */

/* Record one value: about 18 instructions, no lock, no allocation, no syscall while the
 * thread's ring has room (the first record of a thread claims it a ring: a few atomics,
 * once).  Any thread, concurrently.  rec must be a live recorder (not checked).
 * When the ring is full the thread drains it into the aggregates itself, under the
 * aggregate lock (see "Thread-safety" above), and then records; a thread beyond max_threads
 * aggregates the value directly under that lock.  Nothing is dropped for lack of space.
 * Returns ET_OK, or ET_ERINGFULL only from a signal handler whose thread holds the lock
 * (the record is dropped and counted in et_series_stats.dropped[ET_DROP_RING_FULL]); never
 * fatal.  NaN and +-Inf are accepted here and counted as rejected when aggregated.  An
 * unregistered series id is counted (et_info.unknown_series), never written out of
 * bounds. */
ET_API int et_record(et_recorder *rec, uint32_t series_id, double value);

/* Record n values of one series, in order.  A batch that fits in the thread's ring is one
 * ring update; a larger one is aggregated by the caller under the aggregate lock (its ring
 * drained first, so order is kept), in chunks of at most ring_capacity values with the lock
 * released between chunks, about 1-2 ns per value.  Returns n, or from a signal handler
 * whose thread holds the lock, how many fitted in the ring (the rest dropped and counted);
 * ET_EINVAL (values NULL with n > 0).  Same contract as et_record otherwise. */
ET_API int64_t et_record_many(et_recorder *rec, uint32_t series_id, const double *values,
                              size_t n);

/* Record one value into each of n series (the metrics of one inference: values[i] into
 * series_ids[i]) at once: one ring update, or when the ring cannot take them, one hold of
 * the aggregate lock, so all n land in the same window.  Returns n; ET_ERINGFULL from a
 * signal handler whose thread holds the lock (all n dropped, each counted in its series);
 * ET_EINVAL (series_ids or values NULL with n > 0).  Same contract as et_record otherwise. */
ET_API int64_t et_record_group(et_recorder *rec, const uint32_t *series_ids,
                               const double *values, size_t n);

/* For bindings: count a value that could not even be converted to a double (reason
 * ET_REJECT_TYPE; NaN and Inf are counted when aggregated), or a record made after the
 * binding closed its side (et_count_drop, reason ET_DROP_CLOSED or ET_DROP_NO_RING).  Any
 * thread, signal handlers included; a few relaxed atomics, no lock; the count lands in the
 * window open when the aggregate lock is next taken.  Errors: ET_ENOSERIES (rec NULL or
 * series_id not registered), ET_EINVAL (another reason). */
ET_API int et_count_reject(et_recorder *rec, uint32_t series_id, int reason);
ET_API int et_count_drop(et_recorder *rec, uint32_t series_id, int reason);

/* ---- collector side ---- */

/* Drain every ring into the current window's aggregates now, one ring per hold of the
 * aggregate lock.  Not needed with a collector thread; without one, rings that fill are
 * drained by their producers.  Any thread.  A shared recorder's agent also reaps dead
 * processes here when reap_period_ns has passed.  Errors: ET_EINVAL (rec NULL), and on a
 * shared recorder ET_ENOTOWNER (an attached one), ET_ETIMEDOUT (a live process held the
 * aggregate lock past lock_timeout_ns: the pass stopped there; later passes go on),
 * ET_ETRUNCATED (the file shrank: this handle is dead). */
ET_API int et_collect(et_recorder *rec);

/* Start a background thread that drains every period_ns at most (it adapts between
 * period_ns/8 and period_ns to the rings' fill, so an idle device wakes rarely); starting a
 * running collector does nothing.  Stop joins it; stopping a stopped one does nothing.  Any
 * thread; start and stop are serialised.  A shared recorder's collector also reaps dead
 * processes (every reap_period_ns), waits a bounded time for its lock, and stops touching a
 * segment that shrank under it (et_recorder_shared_info says so: truncated).
 * Errors: ET_EINVAL (rec NULL, period_ns outside 80 us..60 s), ET_ETHREAD (pthread_create /
 * pthread_join failed), ET_ENOTOWNER (an attached recorder). */
ET_API int et_collector_start(et_recorder *rec, uint64_t period_ns);
ET_API int et_collector_stop(et_recorder *rec);

/* Drain, close the current window into a new et_window that the caller owns (free it with
 * et_window_free), and open the next window where this one ended (windows tile time).  The
 * aggregates flip between two sets: the switch is one short hold of the aggregate lock, and
 * the window is built from the closed set outside it, at a cost that grows with the series
 * that had activity, not with the series registered.  Producers are never stopped; a record
 * is in exactly one window or counted as dropped.  Any thread; closes are serialised among
 * themselves.  Errors: ET_EINVAL (a NULL argument), ET_ENOMEM (the window stays open,
 * nothing is lost: try again later).
 * A shared recorder (the agent only): the closed window's aggregates stay in the segment
 * until et_window_ack(rec, its seq); until then every close returns that window again, the
 * same seq, bounds and values, also after the agent restarted, and producers record into the
 * next one.  More errors: ET_ENOTOWNER (an attached recorder), ET_ETIMEDOUT (a live process
 * held the aggregate lock past lock_timeout_ns: nothing changed, close again next tick),
 * ET_ETRUNCATED (the file shrank: this handle is dead, create a fresh segment). */
ET_API int et_window_close(et_recorder *rec, et_window **out);
/* Free a closed window.  A window holds copies of everything it reports, so it may outlive
 * its recorder.  NULL is ignored.  No errors. */
ET_API void et_window_free(et_window *w);

/* Closed window accessors: read-only, so any number of threads may read one window.  The
 * value-returning ones return 0 for a NULL window. */
/* Sequence number of the window (0, 1, 2, ... per recorder). */
ET_API uint64_t et_window_seq(const et_window *w);
/* Start and end of the window on CLOCK_MONOTONIC and CLOCK_REALTIME (ns); any output pointer
 * may be NULL. */
ET_API void et_window_bounds(const et_window *w, int64_t *start_mono_ns, int64_t *end_mono_ns,
                             int64_t *start_wall_ns, int64_t *end_wall_ns);
/* Series listed in the window: those with activity in it (a value counted, rejected,
 * dropped), in increasing id order.  A series registered but idle is not listed: the
 * window's cost follows the active series.  The accessors below take i, a position in this
 * list (0..count-1), not a series id: et_window_series_id and et_window_series_find map the
 * two. */
ET_API uint32_t et_window_series_count(const et_window *w);
/* The series id of listed series i into *series_id.  Errors: ET_EINVAL (series_id NULL),
 * ET_ENOSERIES (w NULL or i >= the count). */
ET_API int et_window_series_id(const et_window *w, uint32_t i, uint32_t *series_id);
/* The position of series series_id in the window's list into *i.  Errors: ET_EINVAL (i
 * NULL), ET_ENOSERIES (w NULL, or the series had no activity in the window). */
ET_API int et_window_series_find(const et_window *w, uint32_t series_id, uint32_t *i);
/* Names of listed series i (pointers valid until et_window_free; dimension is "" when none);
 * any output pointer may be NULL.  Errors: ET_ENOSERIES (w NULL or i >= the count). */
ET_API int et_window_series_names(const et_window *w, uint32_t i, const char **model,
                                  const char **version, const char **metric,
                                  const char **dimension);
/* Unit of listed series i ("" when it has none; valid until et_window_free).  Errors:
 * ET_EINVAL (unit NULL), ET_ENOSERIES (w NULL or i >= the count). */
ET_API int et_window_series_unit(const et_window *w, uint32_t i, const char **unit);
/* Aggregates of listed series i into *out.  Errors: ET_EINVAL (NULL), ET_ENOSERIES (no
 * series i). */
ET_API int et_window_series_stats(const et_window *w, uint32_t i, et_series_stats *out);
/* Non-zero buckets of listed series i: indexes (negative values' buckets are offset by
 * buckets_per_octave * octaves), increasing, and counts, each array stats.buckets long.
 * Returns the number written.  Errors: ET_EINVAL (NULL, or capacity < stats.buckets),
 * ET_ENOSERIES.
 * Bucket index b of a positive value covers magnitudes
 *   [2^(min_exponent + b / k) * (1 + edges[b % k] / 2^ET_MANTISSA_BITS),
 *    2^(min_exponent + b / k) * (1 + edges[b % k + 1] / 2^ET_MANTISSA_BITS))
 * with k = buckets_per_octave and edges from et_recorder_edges. */
ET_API int et_window_buckets(const et_window *w, uint32_t i, uint32_t *indexes,
                             uint64_t *counts, uint32_t capacity);

/* ---- introspection ---- */

/* What the recorder is and holds (configuration, memory, counters) into *out.  Any thread;
 * takes the aggregate lock briefly (a shared recorder's: at most lock_timeout_ns, then it
 * reads the counters without it).  On a shared recorder the figures are the segment's, from
 * every process; memory_bytes is this process's (handle and mapping).  Errors: ET_EINVAL (a
 * NULL argument), ET_ETRUNCATED (a shared recorder whose file shrank under it). */
ET_API int et_recorder_info(et_recorder *rec, et_info *out);
/* The histogram's mantissa edges: buckets_per_octave + 1 increasing values from 0 to
 * 2^ET_MANTISSA_BITS, so bucket j of an octave holds mantissas [edges[j], edges[j+1]).
 * Returns the number written; fixed at creation, so any thread.  Errors: ET_EINVAL (NULL, or
 * capacity < buckets_per_octave + 1). */
ET_API int et_recorder_edges(const et_recorder *rec, uint32_t *edges, uint32_t capacity);

/* ---- shared recorders: one recorder for every process of a device ----
 * The agent (one process per device, e.g. `edgetelemetry agent`) creates the recorder in a
 * file on tmpfs, /run/edgetelemetry/recorder by default in the daemon; producers attach to it
 * by path.  The file holds everything producers and the agent touch (rings, registry,
 * aggregates, locks); each process maps it.  A producer's et_record is the same call, with
 * the same fast path and cost, as in a private recorder: no syscall, no lock, no socket.
 *
 * Who may call what:
 *   - both sides: et_series_add / et_series_add_unit (the registry is the segment's: a series
 *     registered by any process is the same id for all), et_series_names, et_record,
 *     et_record_many, et_record_group, et_count_reject, et_count_drop, et_recorder_info,
 *     et_recorder_edges, et_recorder_shared_info, et_recorder_free;
 *   - the agent only (ET_ENOTOWNER from an attached recorder): et_collect,
 *     et_collector_start / et_collector_stop, et_window_close, et_window_ack, et_shared_reap.
 *
 * The window hand-over, so that an agent that crashes or restarts loses nothing and sends
 * nothing twice: on a shared recorder et_window_close keeps the closed window's aggregates in
 * the segment until et_window_ack(rec, seq) says it is stored durably (spooled).  Until then
 * every et_window_close, also by a new agent after a restart, returns that same window again
 * (same seq, same bounds, same values): store windows idempotently by (segment id, seq), then
 * ack.  Producers keep recording into the next window meanwhile.
 *
 * Processes come and go: each attached process holds a slot of the segment's process table,
 * with an advisory lock on the file that the kernel drops when the process dies, however it
 * dies.  The agent reaps the slots of dead processes (its collector every reap_period_ns, or
 * et_shared_reap): their rings are drained like everyone's and given to new threads, the slot
 * to a new process.  A process killed inside a drain it made (holding the aggregate lock)
 * leaves the aggregates consistent: a per-value redo journal is replayed by whoever takes the
 * lock next (docs/shared-recorder.md).  A fork child of an attached process is a new process:
 * it takes a slot of its own on its first record (none free: it records through the lock,
 * losing nothing; counted in slotless).
 *
 * Security: the file is created with opts.mode (0660) and opts.gid; whoever can open it for
 * writing can attach, and can also corrupt what other producers record, or truncate the file.
 * The agent bounds-checks everything it reads from the segment, waits a bounded time for its
 * locks, and guards its accesses against a file truncated under it (SIGBUS): it then reports
 * ET_ETRUNCATED and should create a fresh segment.  Producers attached to a truncated file
 * fault when they next record: keep the directory to the agent's user and group (0750).
 *
 * Pid namespaces: processes in other pid namespaces (containers) attach, record, are reaped
 * and have the locks they die holding recovered: liveness is the file locks', not pids'.
 * Only a fork child that has no slot yet holds a lock under its thread id, checked with
 * kill(); such a child's lock left in another namespace waits for the child's reaping. */

#define ET_SEGMENT_LAYOUT 2 /* the segment's layout version; a segment of another is refused */

/* et_recorder_create_shared's options; et_shared_options_default fills the defaults. */
typedef struct et_shared_options {
    uint32_t mode;            /* permission bits of the file (0660) */
    int32_t gid;              /* its group (-1: the agent's own) */
    uint32_t flags;           /* ET_SHARED_* below (0) */
    uint32_t max_processes;   /* process slots, 1..4096 (64): attaches beyond are refused */
    uint64_t lock_timeout_ns; /* the agent's longest wait for a lock a live process holds;
                               * a pass or close that waited so long gives up (100 ms) */
    uint64_t steal_after_ns;  /* a lock unchanged this long is checked for a dead holder, by
                               * every process (10 ms; stored in the segment) */
    uint64_t reap_period_ns;  /* the collector reaps dead processes this often (100 ms) */
} et_shared_options;

/* Replace a segment that is there but cannot be opened as asked (another configuration,
 * layout version, a damaged or truncated file) with a fresh one, instead of returning its
 * error.  Producers attached to the old one record into nothing from then on. */
#define ET_SHARED_REPLACE 1u

/* What a shared recorder is and has seen; see et_recorder_shared_info. */
typedef struct et_shared_info {
    uint8_t segment_id[16];      /* random at creation: the snapshots' recorder id */
    uint64_t generation;         /* agents that have owned the segment, this one included */
    uint64_t segment_bytes;      /* the file's size */
    uint32_t layout_version;     /* ET_SEGMENT_LAYOUT */
    uint32_t owner;              /* 1: this is the agent's handle */
    uint32_t truncated;          /* 1: the file shrank under this handle; it is dead (every
                                  * agent call returns ET_ETRUNCATED): create a fresh one */
    uint32_t max_processes;
    uint32_t processes;          /* process slots in use */
    int32_t process_slot;        /* this process's slot, -1 when it has none yet */
    int32_t agent_pid;           /* the agent's pid, 0 when no agent is running */
    uint32_t reserved;
    uint64_t attaches;           /* slots taken, ever */
    uint64_t attach_refusals;    /* attaches refused for a full process table */
    uint64_t slotless;           /* processes (fork children) that found no slot and record
                                  * through the lock */
    uint64_t processes_reaped;   /* slots of dead processes given back by the agent */
    uint64_t lock_steals;        /* locks taken from a dead holder (and repaired) */
    uint64_t journal_replays;    /* journaled steps redone after a steal */
    uint64_t lock_timeouts;      /* agent waits that gave up on a live holder */
    uint64_t truncations;        /* this handle: times the file was found shorter (0 or 1) */
    uint64_t integrity_errors;   /* as et_info.integrity_errors */
    uint64_t pending_seq;        /* the closed window awaiting et_window_ack, or UINT64_MAX */
} et_shared_info;

/* What a segment file holds, read without attaching; see et_segment_inspect. */
typedef struct et_segment_info {
    uint32_t layout_version;     /* the file's (0 when it is not a segment at all) */
    uint32_t library_layout_version; /* this library's: ET_SEGMENT_LAYOUT */
    uint64_t file_bytes;         /* its size on disk */
    uint64_t expected_bytes;     /* the size its header says it has (0 if unreadable) */
    et_config config;            /* the rest only when the header checks out (ET_OK) */
    uint32_t max_processes;
    int32_t agent_pid;           /* the last agent's pid (0: it left cleanly) */
    uint32_t agent_running;      /* 1: a live process holds the agent's lock */
    uint32_t reserved;
    uint8_t segment_id[16];
    uint64_t generation;
} et_segment_info;

/* Fill *opts with the defaults (in et_shared_options' comments).  NULL is ignored. */
ET_API void et_shared_options_default(et_shared_options *opts);

/* The agent's side: create the shared recorder at path, or open and recover the one there.
 *   - nothing at path: a fresh segment, written at path.tmp (sized with posix_fallocate, so
 *     that a full tmpfs is ET_ESYSTEM/ENOSPC now rather than a fault later), given
 *     opts->mode and opts->gid, then renamed into place;
 *   - a segment of this layout and this configuration (cfg resolved as et_recorder_new does,
 *     and opts->max_processes): opened and recovered.  Producers may have gone on recording
 *     while no agent ran; a lock left by a dead holder is stolen and its journal replayed,
 *     dead processes are reaped, and a window closed but not acknowledged is returned by the
 *     next et_window_close.  Its generation is incremented;
 *   - anything else: its error (ET_ECONFIG, ET_ELAYOUT, ET_ENOTSEGMENT, ET_ETRUNCATED), or
 *     with ET_SHARED_REPLACE a fresh segment in its place.
 * One agent per segment: while one lives, another gets ET_EBUSY.  The directory is not
 * created: make it (0750, the agent's user and the producers' group; systemd's
 * RuntimeDirectory=).  cfg and opts may be NULL (defaults).  Sets *out, or NULL on failure.
 * Thread-safe.  Errors: ET_EINVAL (out or path NULL, an option or cfg out of range),
 * ET_EBUSY, ET_ECONFIG, ET_ELAYOUT, ET_ENOTSEGMENT, ET_ETRUNCATED, ET_EACCES (the directory
 * or file, or opts->gid is not a group the agent may give), ET_ENOMEM, ET_ESYSTEM (errno). */
ET_API int et_recorder_create_shared(const char *path, const et_config *cfg,
                                     const et_shared_options *opts, et_recorder **out);

/* A producer's side: attach to the shared recorder at path.  Checks the file (a regular file
 * holding a segment header of this layout version, a sane configuration, the size the header
 * says) before mapping it, and takes a process slot.  The agent need not be running: records
 * wait in the rings (a full ring is drained by its producer as always) until one runs.
 * The handle records like any recorder; it is freed (detached) with et_recorder_free, which
 * gives back the slot and this process's rings; records still pending stay for the agent.
 * Thread-safe.  Errors: ET_EINVAL (NULL), ET_ENOSEGMENT (nothing at path), ET_EACCES (not
 * allowed to open it for writing), ET_ENOTSEGMENT (not a segment, or a damaged header),
 * ET_ELAYOUT (another layout version: et_segment_inspect says which), ET_ETRUNCATED (the
 * file is shorter than its header says), ET_EPROCFULL (every slot taken; counted in
 * attach_refusals), ET_ENOMEM, ET_ESYSTEM (errno). */
ET_API int et_recorder_attach(const char *path, et_recorder **out);

/* The agent: the closed window seq is stored durably; its aggregates may go.  Acknowledging
 * a window acknowledged before does nothing (ET_OK), so a restarted agent may repeat it.
 * Private recorders acknowledge at close: any closed seq is ET_OK.  Errors: ET_EINVAL (rec
 * NULL, or seq not closed yet), ET_ENOTOWNER, ET_ETRUNCATED. */
ET_API int et_window_ack(et_recorder *rec, uint64_t seq);

/* The agent: reap the slots of processes that are gone now, rather than at the collector's
 * next reap.  Returns how many were reaped (>= 0).  Errors: ET_EINVAL (NULL, or a private
 * recorder), ET_ENOTOWNER, ET_ETRUNCATED. */
ET_API int et_shared_reap(et_recorder *rec);

/* What a shared recorder is and has seen into *out (the figures for the agent's metrics).
 * Any thread, either side.  Errors: ET_EINVAL (NULL, or a private recorder).  A dead handle
 * (the file shrank) returns ET_OK with truncated = 1 and only this handle's own fields. */
ET_API int et_recorder_shared_info(et_recorder *rec, et_shared_info *out);

/* Read a segment's header without attaching (read permission is enough): what a producer's
 * error was about, e.g. the file's layout version next to this library's for ET_ELAYOUT.
 * Fills what it could read even on error.  Errors: those of et_recorder_attach but
 * ET_EPROCFULL. */
ET_API int et_segment_inspect(const char *path, et_segment_info *out);

/* ---- sharing one recorder across modules of one process ----
 * A module that cannot link this library (a second Python extension, a plugin) records into a
 * recorder it was handed through this table, so both feed the same rings and windows.
 * Fields are only ever appended: check abi_version >= the version that added the last field
 * you use (1: record .. strerror; 2: record_group; 3: series_add_unit).
 *
 * The handle is two addresses: the table (et_api_table()) and the recorder.  From Python, the
 * edgetelemetry package hands them out (docs/native-sdk.md); the receiving module casts them
 * back, registers its series with api->series_add and records with api->record, from any
 * thread, for as long as the owner keeps the recorder open.  The entries behave exactly as
 * the functions of the same names. */
#define ET_API_VERSION 3
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
    int (*series_add_unit)(et_recorder *rec, const char *model, const char *version,
                           const char *metric, const char *dimension, const char *unit,
                           uint32_t *series_id); /* version 3 */
} et_api;
/* The process's table: static, never NULL, the same for every recorder.  Thread-safe. */
ET_API const et_api *et_api_table(void);

/* A static, human-readable name for any return code ("unknown error code" for others).
 * Thread-safe; never NULL. */
ET_API const char *et_strerror(int code);

/* ---- compiling instrumentation out ----
 * Build a C or C++ program with -DET_DISABLE and every call above becomes an inline no-op
 * that succeeds (no library to link, no code left after inlining): et_recorder_new,
 * et_recorder_create_shared and et_recorder_attach give a NULL recorder, et_series_add and
 * et_series_add_unit id 0, et_record ET_OK, et_record_many and et_record_group n,
 * et_window_close a NULL window whose accessors return 0 / ET_ENOSERIES, the info calls
 * zeroes, et_series_names ET_ENOSERIES, et_api_table a table of no-ops.
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
ET__OFF(int) et__off_series_add_unit(et_recorder *rec, const char *model, const char *version,
                                    const char *metric, const char *dimension,
                                    const char *unit, uint32_t *series_id) {
    (void)rec, (void)model, (void)version, (void)metric, (void)dimension, (void)unit;
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
ET__OFF(int) et__off_window_series_id(const et_window *w, uint32_t i, uint32_t *series_id) {
    (void)w, (void)i, (void)series_id;
    return ET_ENOSERIES;
}
ET__OFF(int) et__off_window_series_find(const et_window *w, uint32_t series_id, uint32_t *i) {
    (void)w, (void)series_id, (void)i;
    return ET_ENOSERIES;
}
ET__OFF(int) et__off_window_series_unit(const et_window *w, uint32_t i, const char **unit) {
    (void)w, (void)i, (void)unit;
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
ET__OFF(void) et__off_shared_options_default(et_shared_options *opts) {
    if (opts != NULL) *opts = ET__ZERO(et_shared_options);
}
ET__OFF(int) et__off_recorder_create_shared(const char *path, const et_config *cfg,
                                           const et_shared_options *opts, et_recorder **out) {
    (void)path, (void)cfg, (void)opts;
    if (out != NULL) *out = NULL;
    return ET_OK;
}
ET__OFF(int) et__off_recorder_attach(const char *path, et_recorder **out) {
    (void)path;
    if (out != NULL) *out = NULL;
    return ET_OK;
}
ET__OFF(int) et__off_window_ack(et_recorder *rec, uint64_t seq) {
    (void)rec, (void)seq;
    return ET_OK;
}
ET__OFF(int) et__off_recorder_shared_info(et_recorder *rec, et_shared_info *out) {
    (void)rec;
    if (out != NULL) *out = ET__ZERO(et_shared_info);
    return ET_OK;
}
ET__OFF(int) et__off_segment_inspect(const char *path, et_segment_info *out) {
    (void)path;
    if (out != NULL) *out = ET__ZERO(et_segment_info);
    return ET_OK;
}
ET__OFF(int) et__off_series_names(et_recorder *rec, uint32_t series_id, char *buf,
                                 size_t capacity) {
    (void)rec, (void)series_id, (void)buf, (void)capacity;
    return ET_ENOSERIES;
}
ET__OFF(const char *) et__off_strerror(int code) {
    (void)code;
    return "edgetelemetry is compiled out (ET_DISABLE)";
}
ET__OFF(const et_api *) et__off_api_table(void) {
    static const et_api table = {ET_API_VERSION, et__off_record, et__off_record_many,
                                 et__off_count, et__off_series_add, et__off_strerror,
                                 et__off_record_group, et__off_series_add_unit};
    return &table;
}
#define et_config_default et__off_config_default
#define et_recorder_new et__off_recorder_new
#define et_recorder_free et__off_recorder_free
#define et_series_add et__off_series_add
#define et_series_add_unit et__off_series_add_unit
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
#define et_window_series_id et__off_window_series_id
#define et_window_series_find et__off_window_series_find
#define et_window_series_names et__off_window_series_names
#define et_window_series_unit et__off_window_series_unit
#define et_window_series_stats et__off_window_series_stats
#define et_window_buckets et__off_window_buckets
#define et_recorder_info et__off_recorder_info
#define et_recorder_edges et__off_recorder_edges
#define et_strerror et__off_strerror
#define et_shared_options_default et__off_shared_options_default
#define et_recorder_create_shared et__off_recorder_create_shared
#define et_recorder_attach et__off_recorder_attach
#define et_window_ack et__off_window_ack
#define et_shared_reap et__off_rec
#define et_recorder_shared_info et__off_recorder_shared_info
#define et_segment_inspect et__off_segment_inspect
#define et_series_names et__off_series_names
#define et_api_table et__off_api_table
#else
#define ET_INSTRUMENT(...) __VA_ARGS__
#endif

#ifdef __cplusplus
}
#endif
#endif /* EDGETELEMETRY_H */
