/* For `edgetelemetry bench` only (binding-private, not part of the core's API): the C record
 * path timed where a C caller sees it, in a loop in C, beside the same loop calling a no-op of
 * the same shape.  Both go through a volatile function pointer, so neither call can be
 * inlined or hoisted: each iteration is a real call, as a caller's call into the library. */
#include "edgetelemetry.h"

typedef int (*record_fn)(et_recorder *rec, uint32_t series_id, double value);

static int noop_record(et_recorder *rec, uint32_t series_id, double value) {
    (void)rec, (void)series_id, (void)value;
    return ET_OK;
}

static record_fn volatile record_ptr = et_record;
static record_fn volatile noop_ptr = noop_record;

static uint32_t loop(record_fn fn, et_recorder *rec, uint32_t series_id, double value,
                     uint32_t n) {
    uint32_t failed = 0;
    for (uint32_t i = 0; i < n; i++) failed += fn(rec, series_id, value) != ET_OK;
    return failed;
}

/* n records through et_record; returns how many were not kept (dropped) */
uint32_t bench_record_loop(et_recorder *rec, uint32_t series_id, double value, uint32_t n) {
    return loop(record_ptr, rec, series_id, value, n);
}

/* the same loop through a function that returns at once */
uint32_t bench_noop_loop(et_recorder *rec, uint32_t series_id, double value, uint32_t n) {
    return loop(noop_ptr, rec, series_id, value, n);
}
