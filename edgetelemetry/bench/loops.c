/* For `edgetelemetry bench` only: the C record path timed where a C caller sees it, beside
 * calls of the same shape that return at once.  Its own cffi module (edgetelemetry.bench._loops),
 * not part of the core: it records the way any native module in the process does, through the
 * et_api table and the recorder of `Recorder.native_handle()` (docs/native-sdk.md).
 *
 * Every call goes through a volatile function pointer, so none can be inlined or hoisted: each
 * iteration is a real call, as a caller's call into the library. */
#include <stdint.h>

#include "edgetelemetry.h"

typedef int (*record_fn)(et_recorder *rec, uint32_t series_id, double value);

static int noop_record(et_recorder *rec, uint32_t series_id, double value) {
    (void)rec, (void)series_id, (void)value;
    return ET_OK;
}

static record_fn volatile record_ptr = noop_record;
static record_fn volatile noop_ptr = noop_record;

/* Take et_record from the process's table; ET_EINVAL for a table of another ABI. */
int bench_bind(uintptr_t api_address) {
    const et_api *api = (const et_api *)api_address;
    if (api == NULL || api->abi_version != ET_API_VERSION) return ET_EINVAL;
    record_ptr = api->record;
    return ET_OK;
}

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

/* one et_record per cffi call, and the same call of its shape that returns at once */
int bench_record_one(et_recorder *rec, uint32_t series_id, double value) {
    return record_ptr(rec, series_id, value);
}

int bench_noop_one(et_recorder *rec, uint32_t series_id, double value) {
    return noop_ptr(rec, series_id, value);
}

/* the cheapest cffi call there is: one pointer in, nothing done */
uint64_t bench_nothing(const void *p) {
    (void)p;
    return 0;
}
