/* Aggregation into the active set, under the aggregate lock: draining a ring (the collector,
 * or a producer that found its own ring full), a batch or a group aggregated by its producer,
 * the lock-free counters folded in.  Histogram buckets live in pages taken from the set's
 * pool on first use; a value that finds no page, or a bucket about to pass 2^32, is counted
 * at octave precision ("coarse") and never lost. */
#include "internal.h"

#include <stddef.h>
#include <string.h>

/* The recorder whose aggregate lock this thread holds or is taking (0: none).  A signal
 * handler that records reads it to drop (counted) rather than wait for a lock its own
 * thread holds. */
static _Thread_local uint64_t agg_holder __attribute__((tls_model("initial-exec")));

/* The lock was taken from a holder that died inside its section: redo its journaled step and
 * fold everything (the dirty marks it had taken may have died with it). */
static void after_steal(et_recorder *rec) {
    atomic_fetch_add_explicit(&rec->seg->lock_steals, 1, memory_order_relaxed);
    et__journal_replay(rec);
    et__fold_all(rec);
}

uint64_t et__agg_enter(et_recorder *rec) {
    const uint64_t previous = agg_holder;
    agg_holder = rec->id; /* before taking it: a handler may run while we wait */
    atomic_signal_fence(memory_order_seq_cst);
    if (ET_LIKELY(!rec->shared))
        et__lock(&rec->region->agg_lock);
    else if (et__lock_shared(&rec->region->agg_lock, et__shared_lock_id(rec), rec->steal_ns, 0,
                             et__shared_owner_dead, rec) == ET_LOCK_STOLEN)
        after_steal(rec);
    return previous;
}

bool et__agg_take_over(et_recorder *rec, uint32_t dead_owner) {
    et_lock *l = &rec->region->agg_lock;
    uint32_t v = atomic_load_explicit(&l->word, memory_order_relaxed);
    if ((v & ET_LOCK_TID_MASK) != dead_owner || (v & ET_LOCK_HANDOFF)) return false;
    const uint64_t previous = agg_holder;
    agg_holder = rec->id;
    atomic_signal_fence(memory_order_seq_cst);
    const uint32_t me = et__shared_lock_id(rec) | (v & ET_LOCK_WAITERS);
    if (!atomic_compare_exchange_strong_explicit(&l->word, &v, me, memory_order_acquire,
                                                 memory_order_relaxed)) {
        agg_holder = previous; /* a waiter stole it first: it repairs */
        return false;
    }
    after_steal(rec);
    et__agg_leave(rec, previous);
    return true;
}

bool et__agg_enter_timed(et_recorder *rec, uint64_t *previous) {
    if (!rec->shared) {
        *previous = et__agg_enter(rec);
        return true;
    }
    *previous = agg_holder;
    agg_holder = rec->id;
    atomic_signal_fence(memory_order_seq_cst);
    const int got = et__lock_shared(&rec->region->agg_lock, et__shared_lock_id(rec),
                                    rec->steal_ns, rec->give_up_ns, et__shared_owner_dead, rec);
    if (got == ET_LOCK_GAVE_UP) {
        atomic_signal_fence(memory_order_seq_cst);
        agg_holder = *previous;
        atomic_fetch_add_explicit(&rec->seg->lock_timeouts, 1, memory_order_relaxed);
        return false;
    }
    if (got == ET_LOCK_STOLEN) after_steal(rec);
    return true;
}

void et__agg_leave(et_recorder *rec, uint64_t previous) {
    if (rec->shared) { /* every journaled step is applied: nothing left to redo */
        atomic_signal_fence(memory_order_seq_cst);
        atomic_store_explicit(&rec->region->journal.state, 0, memory_order_relaxed);
        et__unlock_any(&rec->region->agg_lock);
    } else {
        et__unlock(&rec->region->agg_lock);
    }
    atomic_signal_fence(memory_order_seq_cst);
    agg_holder = previous;
}

bool et__agg_held(const et_recorder *rec) { return agg_holder == rec->id; }

void et__agg_forget(const et_recorder *rec) {
    if (agg_holder == rec->id) agg_holder = 0;
}

/* ---- the set's bookkeeping ---- */

/* List the series in the set's touched list (once), so that the window built from the set
 * visits it and the reset after clears it.  Ordered for a holder that dies halfway (shared
 * segments): the entry is appended and counted before the flag says so, so a death leaves
 * the series listed (never a series with values that no window visits), and a redo finds
 * its own entry at the end of the list instead of appending it twice.  The names' bytes are
 * added before the count: a death counts them twice at worst (a window sized a little
 * larger). */
static void touch(et_recorder *rec, uint32_t set, et_aggregate *agg, uint32_t id) {
    if (agg->touched) return;
    et_set *s = rec->sets[set];
    const uint32_t t = s->touched_count;
    if (ET_UNLIKELY(t >= rec->config.max_series)) {
        rec->region->integrity_errors++; /* more touched than series: the list was written over */
        return;
    }
    uint32_t *list = rec->touched[set];
    if (t == 0 || list[t - 1] != id) {
        list[t] = id;
        const uint32_t len = rec->series[id].name_len;
        s->names_bytes += len <= rec->config.names_bytes ? len : rec->config.names_bytes;
        atomic_signal_fence(memory_order_seq_cst);
        s->touched_count = t + 1;
        atomic_signal_fence(memory_order_seq_cst);
    }
    agg->touched = 1;
}

/* The slot's page, taken from the pool and zeroed; when the pool is used up the slot goes
 * coarse for the rest of the window. */
static uint64_t take_page(et_recorder *rec, uint32_t set, et_aggregate *agg, uint32_t slot) {
    et_set *s = rec->sets[set];
    et_region *r = rec->region;
    const uint32_t p = s->pages_used;
    /* Each step before the entry is written: a holder that dies here leaks a page, or counts
     * a coarse slot (one window bucket) too many, never points at a page it did not zero. */
    if (p >= rec->layout.pages) {
        s->coarse_slots++;
        r->pool_exhausted++;
        atomic_signal_fence(memory_order_seq_cst);
        agg->pages[slot] = ET_COARSE;
        return ET_COARSE;
    }
    s->pages_used = p + 1;
    if (p + 1 > r->pages_high_water) r->pages_high_water = p + 1;
    const uint64_t off = (uint64_t)p * rec->layout.page_words;
    memset(rec->pools[set] + off, 0, (size_t)rec->layout.page_words * sizeof(uint32_t));
    atomic_signal_fence(memory_order_seq_cst);
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

/* ---- the journaled path (shared segments) ----
 * The same work as aggregate_one, with the journal around each value (see et_journal in
 * internal.h): the absolute new values go to the journal slot of the step's sequence
 * number, the state word makes them valid, then they are applied.  Private recorders never
 * come here: their drain is the loop above, unchanged. */

static inline uint64_t region_off(const et_recorder *rec, const void *p) {
    return (uint64_t)((const char *)p - (const char *)rec->region);
}

/* Make slot (seq & 1) valid: its fields are written; now the state names them. */
static inline __attribute__((always_inline)) void journal_commit(et_journal *j, uint64_t state) {
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&j->state, state, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
}

/* Start a run of journaled steps: whatever the state named is applied by now (this holder
 * made it), so it is cleared before the run's shared fields change meaning under it.
 * Returns the first step's sequence number for a run that is not a ring's. */
static inline uint64_t journal_begin(et_journal *j, int64_t now) {
    atomic_store_explicit(&j->state, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    j->now = now;
    atomic_signal_fence(memory_order_seq_cst);
    return 1;
}

static inline uint64_t j_state(uint64_t seq, uint32_t kind) {
    return seq << ET_J_KIND_BITS | kind;
}

/* Everything the fast path does not cover, journaled: the structural steps first (touch, a
 * page, a coarse slot: each safe to die in and to redo), then the aggregate's new head and
 * its one cell go to the journal, then they are applied.  ring: ET_J_RING or 0. */
static __attribute__((noinline)) void aggregate_slow_j(et_recorder *rec, uint32_t set,
                                                       et_aggregate *agg, uint32_t id,
                                                       const double *at, int64_t now,
                                                       uint64_t seq, uint32_t ring) {
    et_journal *j = &rec->region->journal;
    et_journal_slot *js = &j->slot[seq & 1];
    uint64_t bits;
    memcpy(&bits, at, sizeof bits);
    const double value = *at;
    touch(rec, set, agg, id);
    et_aggregate *nh = (et_aggregate *)(void *)js->agg_new;
    memcpy(nh, agg, sizeof *nh);
    js->cell_off = ET_J_NONE;
    js->cell_width = 0;
    js->nops = 0;
    if (nh->first_mono_ns == 0) nh->first_mono_ns = now;
    const uint32_t exponent = (uint32_t)(bits >> 52) & 0x7ff;
    if (exponent == 0x7ff) {
        if (bits & 0xfffffffffffffull)
            nh->rejected_nan++;
        else
            nh->rejected_inf++;
        nh->last_mono_ns = now;
        goto commit;
    }
    if (exponent < rec->exponent_lo) {
        nh->zero++;
    } else {
        uint32_t slot = rec->slot_of[bits >> 52], sub;
        if (slot == rec->outlier_slot) {
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
            rec->region->integrity_errors++;
            e = ET_COARSE;
            rec->sets[set]->coarse_slots++;
        }
        if (e & ET_COARSE) {
            js->cell_off = region_off(rec, &agg->pages[slot]);
            js->cell_width = 8;
            js->cell_val = e + 1;
            nh->coarse++;
        } else {
            uint32_t *page = rec->pools[set] + e;
            if (page[sub] == UINT32_MAX) {
                uint64_t *c = page_coarse(rec, page);
                js->cell_off = region_off(rec, c);
                js->cell_width = 8;
                js->cell_val = *c + 1;
                nh->coarse++;
            } else {
                js->cell_off = region_off(rec, &page[sub]);
                js->cell_width = 4;
                js->cell_val = page[sub] + 1u;
            }
        }
    }
    nh->count++;
    if (!(value >= nh->min)) nh->min = value;
    if (value > nh->max) nh->max = value;
    nh->last_mono_ns = now;
    nh->sum += value;
commit:
    js->agg_off = region_off(rec, agg);
    journal_commit(j, j_state(seq, ET_J_FULL | ring));
    memcpy(agg, nh, sizeof *nh);
    if (js->cell_width == 8) {
        uint64_t v = js->cell_val;
        memcpy((char *)rec->region + js->cell_off, &v, sizeof v);
    } else if (js->cell_width == 4) {
        const uint32_t v = (uint32_t)js->cell_val;
        memcpy((char *)rec->region + js->cell_off, &v, sizeof v);
    }
}

/* One value that is not a ring entry (a batch, a group, a thread without a ring) into agg,
 * journaled, at time j->now. */
static inline __attribute__((always_inline)) void aggregate_one_j(
    et_recorder *rec, uint32_t set, uint32_t *pool, et_aggregate *agg, uint32_t id,
    const double *at, int64_t now, bool careful, uint64_t seq) {
    const double value = *at;
    const uint64_t off = agg->pages[rec->slot_of[top_bits(at)]];
    if (ET_UNLIKELY(off >= rec->page_limit)) { /* before pool + off is formed */
        aggregate_slow_j(rec, set, agg, id, at, now, seq, 0);
        return;
    }
    uint32_t *bucket = pool + off + rec->sub_bucket_of[mantissa_bits(at)];
    if (careful && *bucket == UINT32_MAX) {
        aggregate_slow_j(rec, set, agg, id, at, now, seq, 0);
        return;
    }
    et_journal *j = &rec->region->journal;
    et_journal_slot *js = &j->slot[seq & 1];
    const uint32_t b = *bucket + 1u;
    const uint64_t count = agg->count + 1;
    const double sum = agg->sum + value;
    const double lo = value < agg->min ? value : agg->min;
    const double hi = value > agg->max ? value : agg->max;
    js->count = count;
    js->sum = sum;
    js->min = lo;
    js->max = hi;
    js->cell_val = b;
    js->agg_off = region_off(rec, agg);
    js->cell_off = region_off(rec, bucket);
    journal_commit(j, j_state(seq, ET_J_FAST));
    *bucket = b;
    agg->count = count;
    agg->sum = sum;
    agg->min = lo;
    agg->max = hi;
    agg->last_mono_ns = now;
}

/* n entries for a series nobody registered: counted, journaled like the rest (one word). */
static __attribute__((noinline)) void unknown_j(et_recorder *rec, uint64_t seq, uint32_t ring,
                                                uint64_t n) {
    et_region *r = rec->region;
    et_journal *j = &r->journal;
    et_journal_slot *js = &j->slot[seq & 1];
    js->agg_off = ET_J_NONE;
    js->cell_off = ET_J_NONE;
    js->cell_width = 0;
    js->nops = 1;
    js->op_off[0] = offsetof(et_region, unknown_series);
    js->op_val[0] = r->unknown_series + n;
    journal_commit(j, j_state(seq, ET_J_FULL | ring));
    r->unknown_series = js->op_val[0];
}

/* A ring's drain, journaled: entry by entry, the tail moves past each entry once its values
 * are applied, so a drain cut short by death resumes exactly where it stopped.  The fast
 * path journals count, sum, min, max and the bucket's value: the aggregate and the bucket
 * follow from the entry, and the time from the run.  Everything it reads from the handle is
 * in locals: the journal's stores may alias the handle as far as C knows. */
static inline __attribute__((always_inline)) void drain_ring_j_run(
    et_recorder *rec, et_ring *ring, uint64_t tail, uint64_t head, int64_t now, bool careful) {
    et_journal *const j = &rec->region->journal;
    const uint32_t set = et__active(rec);
    uint32_t *const pool = rec->pools[set];
    char *const aggregates = rec->aggregates[set];
    const uint64_t stride = rec->layout.agg_stride;
    const uint64_t mask = rec->config.ring_capacity - 1;
    const uint64_t page_limit = rec->page_limit;
    const et_entry *const entries = et__ring_entries(ring);
    et_journal_slot *const slots = j->slot;
    uint32_t series = et__series_count(rec);
    for (uint64_t pos = tail; pos != head; pos++) {
        const et_entry *e = &entries[pos & mask];
        const uint32_t id = e->series;
        const uint64_t seq = pos + 1;
        if (ET_UNLIKELY(id >= series)) {
            series = et__series_count(rec);
            if (id >= series) {
                unknown_j(rec, seq, ET_J_RING, 1);
                goto next;
            }
        }
        et_aggregate *agg = (et_aggregate *)(aggregates + id * stride);
        const double value = e->value;
        const uint64_t off = agg->pages[rec->slot_of[top_bits(&e->value)]];
        if (ET_UNLIKELY(off >= page_limit)) { /* before pool + off is formed */
            aggregate_slow_j(rec, set, agg, id, &e->value, now, seq, ET_J_RING);
            goto next;
        }
        uint32_t *bucket = pool + off + rec->sub_bucket_of[mantissa_bits(&e->value)];
        if (careful && *bucket == UINT32_MAX) {
            aggregate_slow_j(rec, set, agg, id, &e->value, now, seq, ET_J_RING);
            goto next;
        }
        {
            const uint32_t b = *bucket + 1u;
            const uint64_t count = agg->count + 1;
            const double sum = agg->sum + value;
            const double lo = value < agg->min ? value : agg->min;
            const double hi = value > agg->max ? value : agg->max;
            et_journal_slot *js = &slots[seq & 1];
            js->count = count;
            js->sum = sum;
            js->min = lo;
            js->max = hi;
            js->cell_val = b;
            journal_commit(j, j_state(seq, ET_J_FAST | ET_J_RING));
            *bucket = b;
            agg->count = count;
            agg->sum = sum;
            agg->min = lo;
            agg->max = hi;
            agg->last_mono_ns = now;
        }
    next:
        atomic_store_explicit(&ring->tail, pos + 1, memory_order_release);
    }
}

static __attribute__((noinline)) void drain_ring_j(et_recorder *rec, et_ring *ring,
                                                   uint64_t tail, uint64_t head, int64_t now,
                                                   bool careful) {
    et_journal *const j = &rec->region->journal;
    journal_begin(j, now);
    j->ring = (uint32_t)(((const char *)ring - rec->rings) / rec->layout.ring_stride);
    atomic_signal_fence(memory_order_seq_cst);
    if (ET_LIKELY(!careful))
        drain_ring_j_run(rec, ring, tail, head, now, false);
    else
        drain_ring_j_run(rec, ring, tail, head, now, true);
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
    const uint32_t set = et__active(rec);
    et_set *s = rec->sets[set];
    const bool careful = s->fill + pending >= UINT32_MAX;
    s->fill += pending;
    if (rec->shared) {
        drain_ring_j(rec, ring, tail, head, now, careful);
        r->records_drained += pending;
        return pending;
    }
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
    const uint32_t set = et__active(rec);
    et_set *s = rec->sets[set];
    const bool careful = s->fill + n >= UINT32_MAX;
    s->fill += n;
    r->direct_values += n;
    const uint32_t series = et__series_count(rec);
    if (rec->shared) {
        uint64_t seq = journal_begin(&r->journal, now);
        for (size_t i = 0; i < n; i++, seq++) {
            const uint32_t id = series_ids[i];
            if (id >= series)
                unknown_j(rec, seq, 0, 1);
            else
                aggregate_one_j(rec, set, rec->pools[set], et__agg(rec, set, id), id,
                                &values[i], now, careful, seq);
        }
        return;
    }
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
        if (rec->shared)
            unknown_j(rec, journal_begin(&r->journal, now), 0, n);
        else
            r->unknown_series += n;
        return;
    }
    const uint32_t set = et__active(rec);
    et_aggregate *agg = et__agg(rec, set, id);
    et_set *s = rec->sets[set];
    const bool careful = s->fill + n >= UINT32_MAX;
    s->fill += n;
    uint32_t *const pool = rec->pools[set];
    if (rec->shared) { /* value by value, each journaled: a death keeps every value whole */
        uint64_t seq = journal_begin(&r->journal, now);
        for (size_t i = 0; i < n; i++, seq++)
            aggregate_one_j(rec, set, pool, agg, id, &values[i], now, careful, seq);
        return;
    }
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
        atomic_fetch_add_explicit(&r->unknown_total, n, memory_order_relaxed);
    } else {
        et_shared_counters *c = &rec->counters[series];
        atomic_fetch_add_explicit(what == ET_COUNT_REJECT_TYPE ? &c->rejected_type
                                                               : &c->dropped[what],
                                  n, memory_order_relaxed);
        /* release: whoever sees the bit sees the count */
        atomic_fetch_or_explicit(&rec->dirty[series / 64], 1ull << (series % 64),
                                 memory_order_release);
    }
    atomic_store_explicit(&r->pending, 1, memory_order_release);
}

/* Bring one series' lock-free counts into the active set: what they grew by since the last
 * fold.  In a shared segment the new head and the new `folded` marks are one journaled step,
 * so a holder that dies here has either moved them both or neither. */
static void fold_series(et_recorder *rec, uint32_t set, uint32_t id, uint32_t registered) {
    et_region *r = rec->region;
    et_shared_counters *c = &rec->counters[id];
    uint64_t now_at[1 + ET_DROP_REASONS], delta[1 + ET_DROP_REASONS], any = 0;
    now_at[0] = atomic_load_explicit(&c->rejected_type, memory_order_relaxed);
    for (int k = 0; k < ET_DROP_REASONS; k++)
        now_at[1 + k] = atomic_load_explicit(&c->dropped[k], memory_order_relaxed);
    for (int k = 0; k <= ET_DROP_REASONS; k++) {
        delta[k] = now_at[k] - c->folded[k];
        any |= delta[k];
    }
    if (!any) return;
    if (id >= registered) { /* counted for a series that does not exist (yet): unknown */
        uint64_t total = 0;
        for (int k = 0; k <= ET_DROP_REASONS; k++) total += delta[k];
        if (!rec->shared) {
            r->unknown_series += total;
            memcpy(c->folded, now_at, sizeof now_at);
            return;
        }
        et_journal *j = &r->journal;
        const uint64_t seq = journal_begin(j, 0);
        et_journal_slot *js = &j->slot[seq & 1];
        js->agg_off = ET_J_NONE;
        js->cell_off = ET_J_NONE;
        js->cell_width = 0;
        js->nops = 2 + ET_DROP_REASONS;
        js->op_off[0] = offsetof(et_region, unknown_series);
        js->op_val[0] = r->unknown_series + total;
        for (int k = 0; k <= ET_DROP_REASONS; k++) {
            js->op_off[1 + k] = region_off(rec, &c->folded[k]);
            js->op_val[1 + k] = now_at[k];
        }
        journal_commit(j, j_state(seq, ET_J_FULL));
        r->unknown_series = js->op_val[0];
        memcpy(c->folded, now_at, sizeof now_at);
        return;
    }
    et_aggregate *agg = et__agg(rec, set, id);
    touch(rec, set, agg, id);
    if (!rec->shared) {
        agg->rejected_type += delta[0];
        for (int k = 0; k < ET_DROP_REASONS; k++) agg->dropped[k] += delta[1 + k];
        memcpy(c->folded, now_at, sizeof now_at);
        return;
    }
    et_journal *j = &r->journal;
    const uint64_t seq = journal_begin(j, 0);
    et_journal_slot *js = &j->slot[seq & 1];
    et_aggregate *nh = (et_aggregate *)(void *)js->agg_new;
    memcpy(nh, agg, sizeof *nh);
    nh->rejected_type += delta[0];
    for (int k = 0; k < ET_DROP_REASONS; k++) nh->dropped[k] += delta[1 + k];
    js->agg_off = region_off(rec, agg);
    js->cell_off = ET_J_NONE;
    js->cell_width = 0;
    js->nops = 1 + ET_DROP_REASONS;
    for (int k = 0; k <= ET_DROP_REASONS; k++) {
        js->op_off[k] = region_off(rec, &c->folded[k]);
        js->op_val[k] = now_at[k];
    }
    journal_commit(j, j_state(seq, ET_J_FULL));
    memcpy(agg, nh, sizeof *nh);
    memcpy(c->folded, now_at, sizeof now_at);
}

/* The counts for ids no series can have, the same way (one journaled pair of words). */
static void fold_unknown(et_recorder *rec) {
    et_region *r = rec->region;
    const uint64_t total = atomic_load_explicit(&r->unknown_total, memory_order_relaxed);
    const uint64_t delta = total - r->unknown_folded;
    if (!delta) return;
    if (!rec->shared) {
        r->unknown_series += delta;
        r->unknown_folded = total;
        return;
    }
    et_journal *j = &r->journal;
    const uint64_t seq = journal_begin(j, 0);
    et_journal_slot *js = &j->slot[seq & 1];
    js->agg_off = ET_J_NONE;
    js->cell_off = ET_J_NONE;
    js->cell_width = 0;
    js->nops = 2;
    js->op_off[0] = offsetof(et_region, unknown_series);
    js->op_val[0] = r->unknown_series + delta;
    js->op_off[1] = offsetof(et_region, unknown_folded);
    js->op_val[1] = total;
    journal_commit(j, j_state(seq, ET_J_FULL));
    r->unknown_series = js->op_val[0];
    r->unknown_folded = total;
}

void et__fold_pending(et_recorder *rec) {
    et_region *r = rec->region;
    if (!atomic_load_explicit(&r->pending, memory_order_relaxed)) return;
    atomic_exchange_explicit(&r->pending, 0, memory_order_acquire);
    fold_unknown(rec);
    const uint32_t set = et__active(rec);
    const uint32_t registered = et__series_count(rec);
    const uint32_t words = (rec->config.max_series + 63) / 64;
    for (uint32_t w = 0; w < words; w++) {
        if (!atomic_load_explicit(&rec->dirty[w], memory_order_relaxed)) continue;
        uint64_t bits = atomic_exchange_explicit(&rec->dirty[w], 0, memory_order_acquire);
        while (bits) {
            const uint32_t id = w * 64 + (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (id >= rec->config.max_series) break;
            fold_series(rec, set, id, registered);
        }
    }
}

/* Every series, dirty or not: after a steal, when the dead holder may have taken the marks
 * (the pending flag, dirty words) without folding what they marked.  The counters only grow,
 * so a fold of a series with nothing new does nothing. */
void et__fold_all(et_recorder *rec) {
    et_region *r = rec->region;
    atomic_store_explicit(&r->pending, 0, memory_order_relaxed);
    fold_unknown(rec);
    const uint32_t set = et__active(rec);
    const uint32_t registered = et__series_count(rec);
    for (uint32_t w = 0; w < (rec->config.max_series + 63) / 64; w++)
        atomic_store_explicit(&rec->dirty[w], 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    for (uint32_t id = 0; id < rec->config.max_series; id++)
        fold_series(rec, set, id, registered);
}

/* ---- replaying the journal ----
 * Only offsets that a journaled step can name are written: an aggregate's head, a cell of a
 * pool or of a page table, the unknown-series pair, a series' folded marks.  A journal that a
 * process scribbled over is refused (integrity_errors), never followed out of the region. */

static et_aggregate *journal_agg(const et_recorder *rec, uint64_t off) {
    const et_layout *l = &rec->layout;
    for (int s = 0; s < 2; s++) {
        const uint64_t base = l->sets[s] + l->aggregates;
        if (off < base) continue;
        const uint64_t rel = off - base;
        if (rel % l->agg_stride == 0 && rel / l->agg_stride < rec->config.max_series)
            return (et_aggregate *)((char *)rec->region + off);
    }
    return NULL;
}

static bool journal_cell_ok(const et_recorder *rec, uint64_t off, uint32_t width) {
    const et_layout *l = &rec->layout;
    if ((width != 4 && width != 8) || off % width || off > l->total - width) return false;
    for (int s = 0; s < 2; s++) {
        const uint64_t pool = l->sets[s] + l->pool;
        const uint64_t pool_end = pool + (uint64_t)l->pages * l->page_words * sizeof(uint32_t);
        if (off >= pool && off + width <= pool_end) return true;
        const uint64_t base = l->sets[s] + l->aggregates;
        if (width == 8 && off >= base && off < base + (uint64_t)rec->config.max_series * l->agg_stride) {
            const uint64_t in = (off - base) % l->agg_stride;
            if (in >= sizeof(et_aggregate) && in + 8 <= sizeof(et_aggregate) + (uint64_t)l->slots * 8)
                return true;
        }
    }
    return false;
}

static bool journal_op_ok(const et_recorder *rec, uint64_t off) {
    if (off == offsetof(et_region, unknown_series) || off == offsetof(et_region, unknown_folded))
        return true;
    const et_layout *l = &rec->layout;
    if (off < l->shared || off >= l->shared + (uint64_t)rec->config.max_series * sizeof(et_shared_counters))
        return false;
    const uint64_t in = (off - l->shared) % sizeof(et_shared_counters);
    return in >= offsetof(et_shared_counters, folded) && in % 8 == 0 &&
           in < offsetof(et_shared_counters, folded) + sizeof(((et_shared_counters *)0)->folded);
}

static void put64(et_recorder *rec, uint64_t off, uint64_t v) {
    memcpy((char *)rec->region + off, &v, sizeof v);
}

/* A FAST ring step's aggregate and bucket, from its entry (still the ring's: the tail has
 * not passed it), in the active set (no flip happens before a steal has replayed). */
static bool journal_ring_cell(et_recorder *rec, const et_ring *ring, uint64_t pos,
                              et_aggregate **agg, uint32_t **bucket) {
    const et_entry *e = &et__ring_entries((et_ring *)ring)[pos & (rec->config.ring_capacity - 1)];
    const uint32_t id = e->series;
    if (id >= et__series_count(rec)) return false;
    const uint32_t set = et__active(rec);
    *agg = et__agg(rec, set, id);
    const uint64_t off = (*agg)->pages[rec->slot_of[top_bits(&e->value)]];
    if (off >= rec->page_limit) return false;
    *bucket = rec->pools[set] + off + rec->sub_bucket_of[mantissa_bits(&e->value)];
    return true;
}

void et__journal_replay(et_recorder *rec) {
    et_region *r = rec->region;
    et_journal *j = &r->journal;
    const uint64_t state = atomic_load_explicit(&j->state, memory_order_acquire);
    if (state == 0) return;
    atomic_fetch_add_explicit(&rec->seg->journal_replays, 1, memory_order_relaxed);
    const uint32_t kind = (uint32_t)state & ET_J_KIND_MASK;
    const uint64_t seq = state >> ET_J_KIND_BITS;
    const et_journal_slot *js = &j->slot[seq & 1];
    bool ok = true;
    et_ring *ring = NULL;
    uint64_t tail = 0;
    if (kind & ET_J_RING) {
        if (j->ring >= rec->config.max_threads) {
            ok = false;
        } else {
            ring = et__ring(rec, j->ring);
            tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
            const uint64_t seq_bits = ~0ull >> ET_J_KIND_BITS;
            if ((tail & seq_bits) == seq) goto done; /* the tail passed it: it is whole */
            if (((tail + 1) & seq_bits) != seq) ok = false;
        }
    }
    if (!ok) {
    } else if (kind == (ET_J_FAST | ET_J_RING)) {
        et_aggregate *agg;
        uint32_t *bucket;
        if (journal_ring_cell(rec, ring, tail, &agg, &bucket)) {
            agg->count = js->count;
            agg->sum = js->sum;
            agg->min = js->min;
            agg->max = js->max;
            agg->last_mono_ns = j->now;
            *bucket = (uint32_t)js->cell_val;
        } else {
            ok = false;
        }
    } else if (kind == ET_J_FAST) {
        et_aggregate *agg = journal_agg(rec, js->agg_off);
        if (agg != NULL && journal_cell_ok(rec, js->cell_off, 4)) {
            agg->count = js->count;
            agg->sum = js->sum;
            agg->min = js->min;
            agg->max = js->max;
            agg->last_mono_ns = j->now;
            const uint32_t v = (uint32_t)js->cell_val;
            memcpy((char *)r + js->cell_off, &v, sizeof v);
        } else {
            ok = false;
        }
    } else if ((kind & ~ET_J_RING) == ET_J_FULL) {
        et_aggregate *agg = js->agg_off == ET_J_NONE ? NULL : journal_agg(rec, js->agg_off);
        const bool cell = js->cell_off != ET_J_NONE;
        ok = (js->agg_off == ET_J_NONE || agg != NULL) &&
             (!cell || journal_cell_ok(rec, js->cell_off, js->cell_width)) && js->nops <= ET_J_OPS;
        for (uint32_t k = 0; ok && k < js->nops; k++) ok = journal_op_ok(rec, js->op_off[k]);
        if (ok) {
            if (agg != NULL) memcpy(agg, js->agg_new, sizeof *agg);
            if (cell && js->cell_width == 8) put64(rec, js->cell_off, js->cell_val);
            if (cell && js->cell_width == 4) {
                const uint32_t v = (uint32_t)js->cell_val;
                memcpy((char *)r + js->cell_off, &v, sizeof v);
            }
            for (uint32_t k = 0; k < js->nops; k++) put64(rec, js->op_off[k], js->op_val[k]);
        }
    } else {
        ok = false;
    }
    /* the entry's values are in: move the tail past it */
    if (ok && ring != NULL) atomic_store_explicit(&ring->tail, tail + 1, memory_order_release);
done:
    if (!ok) r->integrity_errors++;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&j->state, 0, memory_order_relaxed);
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
