/* cffi declarations of loops.c (edgetelemetry.bench._loops, for `edgetelemetry bench`). */
typedef struct et_recorder et_recorder;
int bench_bind(uintptr_t api_address);
uint32_t bench_record_loop(et_recorder *rec, uint32_t series_id, double value, uint32_t n);
uint32_t bench_noop_loop(et_recorder *rec, uint32_t series_id, double value, uint32_t n);
int bench_record_one(et_recorder *rec, uint32_t series_id, double value);
int bench_noop_one(et_recorder *rec, uint32_t series_id, double value);
uint64_t bench_nothing(const void *p);
