/* cffi declarations of _bench_loops.c (binding-private, for `edgetelemetry bench`). */
uint32_t bench_record_loop(et_recorder *rec, uint32_t series_id, double value, uint32_t n);
uint32_t bench_noop_loop(et_recorder *rec, uint32_t series_id, double value, uint32_t n);
