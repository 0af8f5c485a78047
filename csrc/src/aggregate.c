/* Aggregation into the active set, under the aggregate lock: draining a ring (the collector,
 * or a producer that found its own ring full), a batch or a group aggregated by its producer,
 * the lock-free counters folded in.  Histogram buckets live in pages taken from the set's
 * pool on first use; a value that finds no page, or a bucket about to pass 2^32, is counted
 * at octave precision ("coarse") and never lost. */
#include "internal.h"

#include <string.h>

/* The recorder whose aggregate lock this thread holds or is taking (0: none).  A signal
 * handler that records reads it to drop (counted) rather than wait for a lock its own
 * thread holds. */
static _Thread_local uint64_t agg_holder __attribute__((tls_model("initial-exec")));

uint64_t et__agg_enter(et_recorder *rec) {
    const uint64_t previous = agg_holder;
    agg_holder = rec->id; /* before taking it: a handler may run while we wait */
    atomic_signal_fence(memory_order_seq_cst);
    et__lock(&rec->region->agg_lock);
    return previous;
}

void et__agg_leave(et_recorder *rec, uint64_t previous) {
    et__unlock(&rec->region->agg_lock);
    atomic_signal_fence(memory_order_seq_cst);
    agg_holder = previous;
}

bool et__agg_held(const et_recorder *rec) { return agg_holder == rec->id; }

/* ---- the set's bookkeeping ---- */

/* List the series in the set's touched list (once), so that the window built from the set
 * visits it and the reset after clears it. */
static void touch(et_recorder *rec, uint32_t set, et_aggregate *agg, uint32_t id) {
    if (agg->touched) return;
    et_set *s = rec->sets[set];
    if (ET_UNLIKELY(s->touched_count >= rec->config.max_series)) {
        rec->region->integrity_errors++; /* more touched than series: the list was written over */
        return;
    }
    agg->touched = 1;
    rec->touched[set][s->touched_count++] = id;
    const uint32_t len = rec->series[id].name_len;
    s->names_bytes += len <= rec->config.names_bytes ? len : rec->config.names_bytes;
}

/* The slot's page, taken from the pool and zeroed; when the pool is used up the slot goes
 * coarse for the rest of the window. */
static uint64_t take_page(et_recorder *rec, uint32_t set, et_aggregate *agg, uint32_t slot) {
    et_set *s = rec->sets[set];
    et_region *r = rec->region;
    const uint32_t p = s->pages_used;
    if (p >= rec->layout.pages) {
        agg->pages[slot] = ET_COARSE;
        s->coarse_slots++;
        r->pool_exhausted++;
        return ET_COARSE;
    }
    s->pages_used = p + 1;
    if (p + 1 > r->pages_high_water) r->pages_high_water = p + 1;
    const uint64_t off = (uint64_t)p * rec->layout.page_words;
    memset(rec->pools[set] + off, 0, (size_t)rec->layout.page_words * sizeof(uint32_t));
    agg->pages[slot] = off;
    return off;
}

/* A page's octave-precision counter, after its buckets (page_words is even: 8-aligned). */
static inline uint64_t *page_coarse(const et_recorder *rec, uint32_t *page) {
    return (uint64_t *)(page + rec->layout.page_words - 2);
}

/* Everything but a value whose slot already has a page: the series' first value in the
 * window (touch, first time), zero and subnormal magnitudes, values above the tracked range
 * (the sign's top bucket), slots without a page yet, coarse slots, NaN and Inf (rejected:
 * returns false).  Places a finite value in the histogram and returns true; count, sum and
 * extremes are the caller's. */
static __attribute__((noinline)) bool place_slow(et_recorder *rec, uint32_t set,
                                                 et_aggregate *agg, uint32_t id,
                                                 uint64_t bits, int64_t now) {
    touch(rec, set, agg, id);
    if (agg->first_mono_ns == 0) agg->first_mono_ns = now;
    const uint32_t exponent = (uint32_t)(bits >> 52) & 0x7ff;
    if (exponent == 0x7ff) {
        if (bits & 0xfffffffffffffull)
            agg->rejected_nan++;
        else
            agg->rejected_inf++;
        agg->last_mono_ns = now;
        return false;
    }
    if (exponent < rec->exponent_lo) {
        agg->zero++;
        return true;
    }
    uint32_t slot = rec->slot_of[bits >> 52], sub;
    if (slot == rec->outlier_slot) { /* above the range: the sign's top bucket */
        const uint32_t octaves = rec->config.octaves;
        slot = (uint32_t)(bits >> 63) * octaves + octaves - 1;
        sub = rec->config.buckets_per_octave - 1;
    } else {
        sub = rec->sub_bucket_of[(bits >> (52 - ET_MANTISSA_BITS)) &
                                 ((1u << ET_MANTISSA_BITS) - 1)];
    }
    uint64_t e = agg->pages[slot];
    if (e == ET_NO_PAGE) e = take_page(rec, set, agg, slot);
    if (!(e & ET_COARSE) && e >= rec->page_limit) {
        /* an entry no page has: written over.  The slot goes coarse, the value is kept */
        rec->region->integrity_errors++;
        e = ET_COARSE;
        rec->sets[set]->coarse_slots++;
    }
    if (e & ET_COARSE) {
        agg->pages[slot] = e + 1;
        agg->coarse++;
        return true;
    }
    uint32_t *page = rec->pools[set] + e;
    if (page[sub] == UINT32_MAX) { /* a full bucket: the octave's coarse counter */
        ++*page_coarse(rec, page);
        agg->coarse++;
    } else {
        page[sub]++;
    }
    return true;
}

/* A double's top 12 bits (sign and exponent) and the next ET_MANTISSA_BITS, from the value
 * in memory: on a little-endian machine, the halfwords that hold them, one load each, rather
 * than shifting two copies of the whole word. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && ET_MANTISSA_BITS == 12
static inline uint32_t top_bits(const double *v) {
    uint16_t h;
    memcpy(&h, (const char *)v + 6, sizeof h); /* bits 48..63 */
    const uint32_t wide = h;
    return wide >> 4;
}
static inline uint32_t mantissa_bits(const double *v) {
    uint16_t h;
    memcpy(&h, (const char *)v + 5, sizeof h); /* bits 40..55 */
    return h & 0xfffu;
}
#else
static inline uint32_t top_bits(const double *v) {
    uint64_t bits;
    memcpy(&bits, v, sizeof bits);
    return (uint32_t)(bits >> 52);
}
static inline uint32_t mantissa_bits(const double *v) {
    uint64_t bits;
    memcpy(&bits, v, sizeof bits);
    return (uint32_t)(bits >> (52 - ET_MANTISSA_BITS)) & ((1u << ET_MANTISSA_BITS) - 1);
}
#endif

/* The per-value work.  The top 12 bits (sign, exponent) find the slot and the next
 * ET_MANTISSA_BITS the bucket within it, by two table lookups: no log(), no branch on the
 * sign.  One compare sends everything unusual to place_slow (see ET_NO_PAGE).  careful: a
 * bucket may reach 2^32 - 1 in this run, check it (the set's fill says when). */
static inline __attribute__((always_inline)) void aggregate_one(
    et_recorder *rec, uint32_t set, uint32_t *pool, et_aggregate *agg, uint32_t id,
    const double *at, int64_t now, bool careful) {
    const double value = *at;
    const uint32_t slot = rec->slot_of[top_bits(at)];
    const size_t sub = rec->sub_bucket_of[mantissa_bits(at)];
    const uint64_t off = agg->pages[slot];
    if (ET_LIKELY(off < rec->page_limit)) {
        uint32_t *bucket = pool + off + sub;
        if (careful && ET_UNLIKELY(*bucket == UINT32_MAX)) {
            ++*page_coarse(rec, pool + off);
            agg->coarse++;
        } else {
            ++*bucket;
        }
    } else {
        uint64_t bits;
        memcpy(&bits, at, sizeof bits);
        if (!place_slow(rec, set, agg, id, bits, now)) return; /* rejected */
    }
    agg->count++;
    /* New extremes are rare: two predictable branches beat two min/max stores.  Written as
     * !(>=) since value is never NaN here, which lets the compare take min from memory.
     * The sum comes last so the addition may consume value. */
    if (!(value >= agg->min)) agg->min = value;
    if (value > agg->max) agg->max = value;
    agg->last_mono_ns = now;
    agg->sum += value;
}

/* Aggregate n consecutive entries.  *series_io is the registered series count, refreshed
 * when an entry names a series past it: the series may have been registered after this run
 * loaded the count but before the record was made, and the acquire on the ring's head makes
 * the newer count visible. */
static inline __attribute__((always_inline)) void drain_run(et_recorder *rec, uint32_t set,
                                                            const et_entry *e, uint64_t n,
                                                            uint32_t *series_io, int64_t now,
                                                            bool careful) {
    uint32_t *const pool = rec->pools[set];
    char *const aggregates = rec->aggregates[set];
    const uint64_t stride = rec->layout.agg_stride;
    uint32_t series = *series_io;
    for (const et_entry *end = e + n; e != end; e++) {
        const uint32_t id = e->series;
        if (ET_UNLIKELY(id >= series)) {
            series = et__series_count(rec);
            *series_io = series;
            if (id >= series) {
                rec->region->unknown_series++;
                continue;
            }
        }
        aggregate_one(rec, set, pool, (et_aggregate *)(aggregates + id * stride), id, &e->value,
                      now, careful);
    }
}

/* Free rings are drained too: an exited thread's last records wait there for us.  The
 * pending records are at most a ring's capacity; more means head or tail was written over,
 * and the ring is resynchronised rather than read out of bounds. */
uint64_t et__drain_ring(et_recorder *rec, et_ring *ring, int64_t now) {
    et_region *r = rec->region;
    const uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
    const uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
    const uint64_t pending = head - tail;
    const uint64_t capacity = rec->config.ring_capacity;
    if (pending == 0) return 0;
    if (ET_UNLIKELY(pending > capacity)) {
        r->integrity_errors++;
        atomic_store_explicit(&ring->tail, head, memory_order_release);
        return 0;
    }
    if (pending > r->ring_high_water) r->ring_high_water = (uint32_t)pending;
    const uint32_t set = r->active & 1;
    et_set *s = rec->sets[set];
    const bool careful = s->fill + pending >= UINT32_MAX;
    s->fill += pending;
    uint32_t series = et__series_count(rec);
    /* two straight runs instead of a mask per entry: the pending records wrap at most once */
    const et_entry *entries = et__ring_entries(ring);
    const uint64_t start = tail & (capacity - 1);
    const uint64_t first = pending < capacity - start ? pending : capacity - start;
    if (ET_LIKELY(!careful)) {
        drain_run(rec, set, entries + start, first, &series, now, false);
        drain_run(rec, set, entries, pending - first, &series, now, false);
    } else {
        drain_run(rec, set, entries + start, first, &series, now, true);
        drain_run(rec, set, entries, pending - first, &series, now, true);
    }
    r->records_drained += pending;
    atomic_store_explicit(&ring->tail, head, memory_order_release);
    return pending;
}

void et__aggregate_group(et_recorder *rec, const uint32_t *series_ids, const double *values,
                         size_t n, int64_t now) {
    et_region *r = rec->region;
    const uint32_t set = r->active & 1;
    et_set *s = rec->sets[set];
    const bool careful = s->fill + n >= UINT32_MAX;
    s->fill += n;
    r->direct_values += n;
    const uint32_t series = et__series_count(rec);
    for (size_t i = 0; i < n; i++) {
        const uint32_t id = series_ids[i];
        if (id >= series) {
            r->unknown_series++;
            continue;
        }
        aggregate_one(rec, set, rec->pools[set], et__agg(rec, set, id), id, &values[i], now,
                      careful);
    }
}

/* A value's histogram placement alone (the batch path keeps the rest in registers); false
 * when it is NaN or Inf (counted as rejected by place_slow). */
static inline __attribute__((always_inline)) bool place_one(et_recorder *rec, uint32_t set,
                                                            uint32_t *pool, et_aggregate *agg,
                                                            uint32_t id, const double *at,
                                                            int64_t now) {
    const uint64_t off = agg->pages[rec->slot_of[top_bits(at)]];
    const size_t sub = rec->sub_bucket_of[mantissa_bits(at)];
    if (ET_LIKELY(off < rec->page_limit)) {
        pool[off + sub]++;
        return true;
    }
    uint64_t bits;
    memcpy(&bits, at, sizeof bits);
    return place_slow(rec, set, agg, id, bits, now);
}

/* Sum and extremes of the finite values only: a batch that held NaN or Inf (rare). */
static void finite_stats(const double *values, size_t n, double *sum, double *lo, double *hi) {
    for (size_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        if (((bits >> 52) & 0x7ff) == 0x7ff) continue;
        *sum += values[i];
        if (values[i] < *lo) *lo = values[i];
        if (values[i] > *hi) *hi = values[i];
    }
}

/* A batch of one series.  Placement stays value by value (a table walk and an increment);
 * count is added once, and the sum and extremes are kept in four independent accumulators
 * each, so that no addition waits for the previous one.  The sum is therefore the sum of
 * four interleaved partial sums (values 0, 4, 8... then 1, 5, 9... and so on), added to the
 * window's sum at the end of the chunk: exact for integers, and for other data no further
 * from the true sum than one running sum.  NaN and Inf are found by the placement (their
 * slot has no page) and, when there were any, the sum and extremes are taken again over the
 * finite values.  A set close to 2^32 values in the window (a bucket may fill) takes the
 * per-value path. */
void et__aggregate_batch(et_recorder *rec, uint32_t id, const double *values, size_t n,
                         int64_t now) {
    et_region *r = rec->region;
    r->direct_values += n;
    if (id >= et__series_count(rec)) {
        r->unknown_series += n;
        return;
    }
    const uint32_t set = r->active & 1;
    et_aggregate *agg = et__agg(rec, set, id);
    et_set *s = rec->sets[set];
    const bool careful = s->fill + n >= UINT32_MAX;
    s->fill += n;
    uint32_t *const pool = rec->pools[set];
    if (careful) {
        for (size_t i = 0; i < n; i++)
            aggregate_one(rec, set, pool, agg, id, &values[i], now, true);
        return;
    }
    size_t placed = n;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    double lo0 = agg->min, lo1 = lo0, lo2 = lo0, lo3 = lo0;
    double hi0 = agg->max, hi1 = hi0, hi2 = hi0, hi3 = hi0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        placed -= !place_one(rec, set, pool, agg, id, values + i, now);
        placed -= !place_one(rec, set, pool, agg, id, values + i + 1, now);
        placed -= !place_one(rec, set, pool, agg, id, values + i + 2, now);
        placed -= !place_one(rec, set, pool, agg, id, values + i + 3, now);
        const double v0 = values[i], v1 = values[i + 1], v2 = values[i + 2], v3 = values[i + 3];
        s0 += v0;
        s1 += v1;
        s2 += v2;
        s3 += v3;
        lo0 = v0 < lo0 ? v0 : lo0;
        lo1 = v1 < lo1 ? v1 : lo1;
        lo2 = v2 < lo2 ? v2 : lo2;
        lo3 = v3 < lo3 ? v3 : lo3;
        hi0 = v0 > hi0 ? v0 : hi0;
        hi1 = v1 > hi1 ? v1 : hi1;
        hi2 = v2 > hi2 ? v2 : hi2;
        hi3 = v3 > hi3 ? v3 : hi3;
    }
    for (; i < n; i++) {
        placed -= !place_one(rec, set, pool, agg, id, values + i, now);
        const double v = values[i];
        s0 += v;
        lo0 = v < lo0 ? v : lo0;
        hi0 = v > hi0 ? v : hi0;
    }
    lo0 = lo1 < lo0 ? lo1 : lo0;
    lo2 = lo3 < lo2 ? lo3 : lo2;
    hi0 = hi1 > hi0 ? hi1 : hi0;
    hi2 = hi3 > hi2 ? hi3 : hi2;
    double sum = (s0 + s1) + (s2 + s3), lo = lo2 < lo0 ? lo2 : lo0, hi = hi2 > hi0 ? hi2 : hi0;
    if (ET_UNLIKELY(placed != n)) { /* rejected values: what they did to the stats is void */
        sum = 0;
        lo = agg->min;
        hi = agg->max;
        finite_stats(values, n, &sum, &lo, &hi);
    }
    agg->count += placed;
    agg->sum += sum;
    agg->min = lo;
    agg->max = hi;
    agg->last_mono_ns = now;
}

/* ---- the lock-free counters ---- */

void et__count_lock_free(et_recorder *rec, uint32_t series, int what, uint64_t n) {
    et_region *r = rec->region;
    if (series >= rec->config.max_series) {
        atomic_fetch_add_explicit(&r->unknown_pending, n, memory_order_relaxed);
    } else {
        et_shared_counters *c = &rec->shared[series];
        atomic_fetch_add_explicit(what == ET_COUNT_REJECT_TYPE ? &c->rejected_type
                                                               : &c->dropped[what],
                                  n, memory_order_relaxed);
        /* release: whoever sees the bit sees the count */
        atomic_fetch_or_explicit(&rec->dirty[series / 64], 1ull << (series % 64),
                                 memory_order_release);
    }
    atomic_store_explicit(&r->pending, 1, memory_order_release);
}

void et__fold_pending(et_recorder *rec) {
    et_region *r = rec->region;
    if (!atomic_load_explicit(&r->pending, memory_order_relaxed)) return;
    atomic_exchange_explicit(&r->pending, 0, memory_order_acquire);
    r->unknown_series += atomic_exchange_explicit(&r->unknown_pending, 0, memory_order_relaxed);
    const uint32_t set = r->active & 1;
    const uint32_t registered = et__series_count(rec);
    const uint32_t words = (rec->config.max_series + 63) / 64;
    for (uint32_t w = 0; w < words; w++) {
        if (!atomic_load_explicit(&rec->dirty[w], memory_order_relaxed)) continue;
        uint64_t bits = atomic_exchange_explicit(&rec->dirty[w], 0, memory_order_acquire);
        while (bits) {
            const uint32_t id = w * 64 + (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (id >= rec->config.max_series) break;
            et_shared_counters *c = &rec->shared[id];
            const uint64_t type =
                atomic_exchange_explicit(&c->rejected_type, 0, memory_order_relaxed);
            uint64_t dropped[ET_DROP_REASONS], any = type;
            for (int k = 0; k < ET_DROP_REASONS; k++) {
                dropped[k] = atomic_exchange_explicit(&c->dropped[k], 0, memory_order_relaxed);
                any |= dropped[k];
            }
            if (!any) continue;
            if (id >= registered) { /* counted for a series that does not exist (yet) */
                r->unknown_series += type + dropped[0] + dropped[1] + dropped[2];
                continue;
            }
            et_aggregate *agg = et__agg(rec, set, id);
            touch(rec, set, agg, id);
            agg->rejected_type += type;
            for (int k = 0; k < ET_DROP_REASONS; k++) agg->dropped[k] += dropped[k];
        }
    }
}

/* ---- reset ---- */

void et__reset_set(et_recorder *rec, uint32_t set) {
    et_set *s = rec->sets[set];
    const uint32_t n =
        s->touched_count <= rec->config.max_series ? s->touched_count : rec->config.max_series;
    const uint32_t *touched = rec->touched[set];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t id = touched[i];
        if (id >= rec->config.max_series) continue;
        et__agg_clear(rec, et__agg(rec, set, id));
    }
    s->pages_used = 0;
    s->touched_count = 0;
    s->coarse_slots = 0;
    s->fill = 0;
    s->names_bytes = 0;
}
