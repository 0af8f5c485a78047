/* cffi declarations of csrc/include/edgetelemetry.h, read by build_core.py.
 * Constants are "..." so the compiler supplies them; structs end in "...;" so cffi takes
 * their layout from the real header.  tests/test_cdef.py checks every declaration here
 * against the header, because cffi silently converts mis-declared integer widths. */

#define ET_OK ...
#define ET_EINVAL ...
#define ET_ENOMEM ...
#define ET_ESERIESFULL ...
#define ET_ENAME ...
#define ET_ENOSERIES ...
#define ET_ETHREAD ...
#define ET_ERINGFULL ...
#define ET_ENORING ...
#define ET_EUNIT ...
#define ET_ENAMESFULL ...
#define ET_ENAMECLASH ...
#define ET_ENOSEGMENT ...
#define ET_ENOTSEGMENT ...
#define ET_ELAYOUT ...
#define ET_EACCES ...
#define ET_EPROCFULL ...
#define ET_ENOTOWNER ...
#define ET_EBUSY ...
#define ET_ECONFIG ...
#define ET_ETRUNCATED ...
#define ET_ETIMEDOUT ...
#define ET_ESYSTEM ...
#define ET_DROP_RING_FULL ...
#define ET_DROP_NO_RING ...
#define ET_DROP_CLOSED ...
#define ET_DROP_REASONS ...
#define ET_REJECT_NAN ...
#define ET_REJECT_INF ...
#define ET_REJECT_TYPE ...
#define ET_REJECT_REASONS ...
#define ET_NAME_MAX ...
#define ET_DIMENSION_MAX ...
#define ET_MANTISSA_BITS ...
#define ET_API_VERSION ...
#define ET_SERIES_NAMES_MAX ...
#define ET_SEGMENT_LAYOUT ...
#define ET_SHARED_REPLACE ...

typedef struct et_recorder et_recorder;
typedef struct et_window et_window;

typedef struct et_config {
    uint32_t ring_capacity;
    uint32_t max_threads;
    uint32_t max_series;
    uint32_t buckets_per_octave;
    int32_t min_exponent;
    uint32_t octaves;
    uint32_t names_bytes;
    uint32_t histogram_pages;
    ...;
} et_config;

typedef struct et_info {
    et_config config;
    uint64_t memory_bytes;
    double relative_error;
    uint32_t series;
    uint32_t threads_active;
    uint32_t ring_high_water;
    uint64_t records_drained;
    uint64_t collector_passes;
    uint64_t unknown_series;
    uint64_t window_seq;
    uint64_t collector_period_ns;
    uint64_t full_drains;
    uint64_t direct_values;
    uint64_t pool_exhausted;
    uint32_t pages_high_water;
    uint32_t series_bytes;
    uint32_t page_bytes;
    uint32_t reserved;
    uint64_t integrity_errors;
    ...;
} et_info;

typedef struct et_series_stats {
    uint64_t count;
    double sum;
    double min;
    double max;
    uint64_t zero;
    uint64_t rejected[...];
    uint64_t dropped[...];
    int64_t first_mono_ns;
    int64_t last_mono_ns;
    int64_t first_wall_ns;
    int64_t last_wall_ns;
    uint32_t buckets;
    uint32_t reserved;
    uint64_t coarse;
    ...;
} et_series_stats;

typedef struct et_api et_api;

typedef struct et_shared_options {
    uint32_t mode;
    int32_t gid;
    uint32_t flags;
    uint32_t max_processes;
    uint64_t lock_timeout_ns;
    uint64_t steal_after_ns;
    uint64_t reap_period_ns;
    ...;
} et_shared_options;

typedef struct et_shared_info {
    uint8_t segment_id[16];
    uint64_t generation;
    uint64_t segment_bytes;
    uint32_t layout_version;
    uint32_t owner;
    uint32_t truncated;
    uint32_t max_processes;
    uint32_t processes;
    int32_t process_slot;
    int32_t agent_pid;
    uint32_t reserved;
    uint64_t attaches;
    uint64_t attach_refusals;
    uint64_t slotless;
    uint64_t processes_reaped;
    uint64_t lock_steals;
    uint64_t journal_replays;
    uint64_t lock_timeouts;
    uint64_t truncations;
    uint64_t integrity_errors;
    uint64_t pending_seq;
    ...;
} et_shared_info;

typedef struct et_segment_info {
    uint32_t layout_version;
    uint32_t library_layout_version;
    uint64_t file_bytes;
    uint64_t expected_bytes;
    et_config config;
    uint32_t max_processes;
    int32_t agent_pid;
    uint32_t agent_running;
    uint32_t reserved;
    uint8_t segment_id[16];
    uint64_t generation;
    ...;
} et_segment_info;

void et_config_default(et_config *cfg);
int et_recorder_new(const et_config *cfg, et_recorder **out);
void et_recorder_free(et_recorder *rec);
int et_series_add_unit(et_recorder *rec, const char *model, const char *version,
                       const char *metric, const char *dimension, const char *unit,
                       uint32_t *series_id);
int et_series_add(et_recorder *rec, const char *model, const char *version,
                  const char *metric, const char *dimension, uint32_t *series_id);
int et_series_names(et_recorder *rec, uint32_t series_id, char *buf, size_t capacity);
int et_record(et_recorder *rec, uint32_t series_id, double value);
int64_t et_record_many(et_recorder *rec, uint32_t series_id, const double *values, size_t n);
int64_t et_record_group(et_recorder *rec, const uint32_t *series_ids, const double *values,
                        size_t n);
int et_count_reject(et_recorder *rec, uint32_t series_id, int reason);
int et_count_drop(et_recorder *rec, uint32_t series_id, int reason);
int et_collect(et_recorder *rec);
int et_collector_start(et_recorder *rec, uint64_t period_ns);
int et_collector_stop(et_recorder *rec);
int et_window_close(et_recorder *rec, et_window **out);
void et_window_free(et_window *w);
uint64_t et_window_seq(const et_window *w);
void et_window_bounds(const et_window *w, int64_t *start_mono_ns, int64_t *end_mono_ns,
                      int64_t *start_wall_ns, int64_t *end_wall_ns);
uint32_t et_window_series_count(const et_window *w);
int et_window_series_id(const et_window *w, uint32_t i, uint32_t *series_id);
int et_window_series_find(const et_window *w, uint32_t series_id, uint32_t *i);
int et_window_series_names(const et_window *w, uint32_t i, const char **model,
                           const char **version, const char **metric, const char **dimension);
int et_window_series_unit(const et_window *w, uint32_t i, const char **unit);
int et_window_series_stats(const et_window *w, uint32_t i, et_series_stats *out);
int et_window_buckets(const et_window *w, uint32_t i, uint32_t *indexes, uint64_t *counts,
                      uint32_t capacity);
int et_recorder_info(et_recorder *rec, et_info *out);
int et_recorder_edges(const et_recorder *rec, uint32_t *edges, uint32_t capacity);
void et_shared_options_default(et_shared_options *opts);
int et_recorder_create_shared(const char *path, const et_config *cfg,
                              const et_shared_options *opts, et_recorder **out);
int et_recorder_attach(const char *path, et_recorder **out);
int et_window_ack(et_recorder *rec, uint64_t seq);
int et_shared_reap(et_recorder *rec);
int et_recorder_shared_info(et_recorder *rec, et_shared_info *out);
int et_segment_inspect(const char *path, et_segment_info *out);
const et_api *et_api_table(void);
const char *et_strerror(int code);
