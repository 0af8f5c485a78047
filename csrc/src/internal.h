/* Internal structures shared by the core's translation units.  Nothing here is public.
 *
 * A recorder is two parts:
 *   - the REGION: one contiguous, 64-byte aligned block holding everything producers and the
 *     collector read or write (header, locks, rings and their entries, the registry and its
 *     names, both aggregate sets with their page pools, shared counters).  Nothing inside it
 *     is a pointer: parts are found at offsets computed from the configuration (et_layout),
 *     so the same bytes could be mapped at another address by another process.
 *   - the HANDLE (struct et_recorder): process-local pointers derived from the layout, the
 *     lookup tables derived from the configuration, the collector thread's state.
 * Every index read from the region (ring head/tail, entry series ids, page-table entries,
 * touched lists, counts) is checked against the handle's own copy of the configuration
 * before it is used to address memory: the region is data, never trusted. */
#ifndef ET_INTERNAL_H
#define ET_INTERNAL_H

#include "edgetelemetry.h"
#include "lock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define ET_CACHE_LINE 64
#define ET_LIKELY(x) __builtin_expect(!!(x), 1)
#define ET_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define ET_REGION_MAGIC 0x4e4f494745525445ull /* "ETREGION" in memory order */
/* The layout of the region and of a shared segment's file.  2: the ring's ownership word,
 * the journal, the window-state word, monotonic lock-free counters, the segment header. */
#define ET_LAYOUT_VERSION 2u

/* ---- rings ---- */

/* A ring is free (its ownership word is 0) or owned by a live thread: the word is the owner's
 * kernel tid, and in a shared segment also its process slot + 1 in the high half, so that
 * the agent can give back the rings of a process that died.  An exiting thread frees its
 * ring at once: any records it left are drained like everyone's, whoever owns it next. */
#define ET_RING_SLOT_SHIFT 32

typedef struct et_entry {
    uint32_t series;
    uint32_t reserved;
    double value;
} et_entry;

/* One producer's single-producer / single-consumer ring; its capacity entries follow it.  The
 * consumer is whoever holds the aggregate lock: the collector, or the owner itself when it
 * finds its ring full.  The producer's and the consumer's lines are apart so that neither
 * side's writes evict the other's. */
typedef struct et_ring {
    /* producer line: written only by the owning thread */
    _Alignas(ET_CACHE_LINE) _Atomic uint64_t head;
    uint64_t cached_limit; /* producer's last look at tail, plus capacity: head may advance
                            * to it without looking again (one compare) */
    /* consumer line: written under the aggregate lock */
    _Alignas(ET_CACHE_LINE) _Atomic uint64_t tail;
    /* ownership line: changes when a thread claims the ring or exits */
    _Alignas(ET_CACHE_LINE) _Atomic uint64_t own; /* 0: free; else slot tag | owner tid */
} et_ring;

static inline et_entry *et__ring_entries(et_ring *ring) { return (et_entry *)(ring + 1); }

/* ---- the registry ---- */

/* A series' names live in the arena as "model\0version\0metric\0dimension\0unit\0". */
typedef struct et_series_rec {
    uint32_t name_off, name_len; /* the five strings: arena offset, bytes with the NULs */
    uint32_t hash;               /* of model, version, metric, dimension (not the unit) */
    uint32_t next;               /* next series id + 1 in the hash chain, 0 at the end */
} et_series_rec;

/* Counters any thread may bump without the aggregate lock (atomic adds): the binding's
 * type rejections and drops, and a record made re-entrantly (a signal handler that records
 * while its thread is inside a drain).  The next holder of the aggregate lock folds them
 * into the active set (et__fold_pending), so windows take them from the sets like the rest.
 * They only ever grow; `folded` (under the aggregate lock) is how much of each has reached
 * the sets, so a fold is "add counter - folded, then folded = counter": absolute values that
 * a journal can redo, where an exchange-to-zero killed halfway would lose its counts. */
typedef struct et_shared_counters {
    _Atomic uint64_t rejected_type;
    _Atomic uint64_t dropped[ET_DROP_REASONS];
    uint64_t folded[1 + ET_DROP_REASONS]; /* rejected_type, dropped[0..2] */
} et_shared_counters;

/* ---- aggregate sets ---- */

/* One series' aggregate in one set, followed by its page table: one entry per (sign, octave)
 * slot plus one for the values that have no octave (zero, out of range, NaN, Inf).
 * A page-table entry is
 *   ET_NO_PAGE         no page yet (all ones: what a reset writes)
 *   a word offset      of the slot's page in the set's pool
 *   ET_COARSE | n      the pool was empty when the slot was first needed: n values with
 *                      only octave precision
 * so that "entry < page_limit" is the one check the drain loop makes per value: no page, a
 * coarse slot, the outlier slot and a corrupt entry all fail it and take the slow path. */
#define ET_NO_PAGE UINT64_MAX
#define ET_COARSE (1ull << 63)

typedef struct et_aggregate {
    /* what every value updates */
    _Alignas(ET_CACHE_LINE) uint64_t count;
    double sum, min, max;
    int64_t last_mono_ns;
    uint64_t zero;
    uint64_t rejected_nan, rejected_inf;
    /* the rest: written rarely */
    int64_t first_mono_ns;
    uint64_t coarse;   /* values counted with octave precision only */
    uint64_t rejected_type;
    uint64_t dropped[ET_DROP_REASONS];
    uint32_t touched;  /* listed in the set's touched list */
    uint32_t reserved;
    uint64_t pages[];  /* the page table: et_recorder.slots entries */
} et_aggregate;

_Static_assert(sizeof(et_aggregate) == 2 * ET_CACHE_LINE, "et_aggregate: two cache lines");

/* A set's header; its touched list, aggregates and page pool follow at layout offsets. */
typedef struct et_set {
    _Alignas(ET_CACHE_LINE) uint32_t pages_used; /* bump allocator over the pool */
    uint32_t touched_count;  /* series in the touched list */
    uint32_t coarse_slots;   /* page-table entries that went coarse (one bucket each) */
    uint32_t reserved;
    uint64_t fill;           /* values aggregated: while fill stays below 2^32 - 1, no
                              * bucket can overflow, and the drain needs no check */
    uint64_t names_bytes;    /* names of the touched series: what a window copies */
} et_set;

/* ---- the journal (shared segments only) ----
 * A lock holder that another process may outlive (a producer killed inside its full-ring
 * drain, an agent killed mid-pass) must not leave an aggregate half-updated.  Before it
 * changes an aggregate for one value, it writes the *absolute new values* of every field
 * that value changes into a journal slot, then makes the slot valid by storing the state
 * word, then applies the values, then (for a ring entry) moves the ring's tail past the
 * entry.  Whoever steals the lock from a dead holder applies the valid slot again: the
 * values are absolute, so applying them twice is applying them once, and a ring entry whose
 * tail has moved is whole already.  The two slots alternate with the step's sequence number,
 * so the slot being filled is never the one the state names; a holder sets the state to 0
 * before a run of steps (its previous steps are all applied by then) and at the end of its
 * section.  Process death does not lose stores already made, so only the compiler's order
 * matters (atomic_signal_fence).  Everything else a holder changes (touched list, page
 * allocation, coarse slots) is ordered so that dying anywhere leaves at worst a leaked page.
 *
 * state = seq << ET_J_KIND_BITS | kind.  A ring entry's seq is its position + 1; the
 * aggregate and the bucket it changes follow from the entry itself (which its producer cannot
 * overwrite before the tail passes it), so a FAST ring step journals five words. */
#define ET_J_FAST 1u /* count, sum, min, max (last_mono_ns = now) and one 32-bit bucket */
#define ET_J_FULL 2u /* the aggregate's head, one 32- or 64-bit cell, up to ET_J_OPS words */
#define ET_J_RING 4u /* the value came from ring `ring`, at position seq - 1 */
#define ET_J_KIND_BITS 3
#define ET_J_KIND_MASK 7u
#define ET_J_OPS 5
#define ET_J_NONE UINT64_MAX

typedef struct et_journal_slot {
    uint64_t count;        /* FAST: the aggregate's fields as they will be */
    double sum, min, max;
    uint64_t cell_val;     /* the cell's value as it will be */
    uint64_t agg_off;      /* FULL, and FAST without RING: region offset of the aggregate
                            * (FULL: ET_J_NONE for none) */
    uint64_t cell_off;     /* likewise, of the cell (FULL: ET_J_NONE for none) */
    uint32_t cell_width;   /* FULL: 4 or 8 bytes */
    uint32_t nops;         /* FULL: extra 64-bit writes */
    uint64_t op_off[ET_J_OPS], op_val[ET_J_OPS];
    /* FULL: the aggregate's head (everything but its page table) as it will be */
    _Alignas(ET_CACHE_LINE) unsigned char agg_new[2 * ET_CACHE_LINE];
} et_journal_slot;

typedef struct et_journal {
    _Atomic uint64_t state; /* 0: nothing to redo; else seq << ET_J_KIND_BITS | kind */
    uint32_t ring;          /* the ring being drained (for ET_J_RING) */
    uint32_t reserved;
    int64_t now;            /* the run's time: FAST steps' last_mono_ns */
    et_journal_slot slot[2]; /* slot[seq & 1] */
} et_journal;

/* ---- the window state ----
 * One word, so that a close commits with one store: the open window's seq, whether the
 * other set holds a closed window not yet acknowledged (shared segments: the agent resets
 * it only after et_window_ack), and which set is active. */
enum { ET_PHASE_NONE = 0, ET_PHASE_PENDING = 1, ET_PHASE_RESETTING = 2 };
static inline uint64_t et__ws(uint64_t open_seq, uint32_t phase, uint32_t active) {
    return open_seq << 8 | (uint64_t)phase << 1 | (active & 1);
}
#define ET_WS_SEQ(w) ((w) >> 8)
#define ET_WS_PHASE(w) ((uint32_t)((w) >> 1) & 3u)
#define ET_WS_ACTIVE(w) ((uint32_t)(w) & 1u)

/* ---- the region's header ---- */

typedef struct et_region {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_bytes;
    uint64_t region_bytes;
    et_config config; /* as resolved at creation */

    /* the aggregate lock: whoever aggregates (collector, a producer draining its own ring or
     * aggregating a batch or an overflow record, a window flip) holds it */
    _Alignas(ET_CACHE_LINE) et_lock agg_lock;
    /* guarded by agg_lock */
    uint32_t ring_high_water;
    uint32_t reserved1;
    uint64_t records_drained;
    uint64_t unknown_series;
    uint64_t full_drains;        /* a producer found its ring full and drained it */
    uint64_t direct_values;      /* values aggregated by their producer, past the rings */
    uint64_t pool_exhausted;     /* slots that went coarse: the page pool was empty */
    uint64_t integrity_errors;   /* indexes in the region found out of bounds, refused */
    uint32_t pages_high_water;
    uint32_t reserved0;
    uint64_t unknown_folded;     /* of unknown_total, what unknown_series has */
    /* next to the lock it protects: written only in a shared segment */
    _Alignas(ET_CACHE_LINE) et_journal journal;

    _Alignas(ET_CACHE_LINE) et_lock registry_lock;
    _Atomic uint32_t series_count; /* published with release once a series is complete */
    uint32_t arena_used;           /* guarded by registry_lock */

    _Alignas(ET_CACHE_LINE) et_lock close_lock; /* serialises window closes (and acks) */
    /* written under close_lock and agg_lock together, read under either */
    _Atomic uint64_t window_state; /* et__ws(open seq, phase, active set) */
    /* guarded by close_lock */
    int64_t window_start_mono_ns, window_start_wall_ns;
    /* the closed window not yet acknowledged (phase PENDING): its bounds */
    int64_t closed_start_mono_ns, closed_end_mono_ns, closed_start_wall_ns, closed_end_wall_ns;
    _Atomic uint64_t passes;

    /* lock-free counters: set pending after bumping one, folded under agg_lock */
    _Alignas(ET_CACHE_LINE) _Atomic uint32_t pending;
    _Atomic uint64_t unknown_total; /* lock-free counts for ids no series has, ever */
} et_region;

/* Where each part of the region starts, and the sizes that address it.  A pure function of
 * the configuration (et__layout): issue 14's attaching processes recompute it. */
typedef struct et_layout {
    uint64_t rings, ring_stride;
    uint64_t series, hash, arena, shared, dirty;
    uint64_t sets[2];
    uint64_t touched, aggregates, pool; /* offsets within a set */
    uint64_t agg_stride;
    uint64_t total;
    uint32_t hash_mask, slots, page_words, pages;
} et_layout;

/* ---- a shared segment's file: header, process table, then the region ---- */

#define ET_SEGMENT_MAGIC 0x544e4d4745535445ull /* "ETSEGMNT" in memory order */
#define ET_NO_SLOT UINT32_MAX
/* Advisory OFD locks held on bytes the file does not use: the agent's on ET_LOCK_AGENT, each
 * process's on ET_LOCK_SLOT0 + its slot.  The kernel drops them when the process dies,
 * whatever its pid, uid or namespace: that is how the agent knows a process is gone. */
#define ET_LOCK_AGENT (1ll << 30)
#define ET_LOCK_SLOT0 (ET_LOCK_AGENT + 1)

enum { ET_PROC_FREE = 0, ET_PROC_LIVE = 1, ET_PROC_REAPING = 2 };

typedef struct et_proc {
    _Atomic uint32_t state;
    _Atomic int32_t pid;          /* for diagnostics: liveness is the slot's lock */
    _Atomic int64_t attached_wall_ns;
} et_proc;

typedef struct et_segment {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_bytes;        /* sizeof(et_segment) */
    uint32_t abi;                 /* the shared structures' sizes, folded (et__segment_abi) */
    uint32_t max_processes;
    uint64_t file_bytes;          /* procs, then the region: what the file must hold */
    uint64_t procs_offset, region_offset, region_bytes;
    uint64_t steal_ns;            /* a lock unchanged this long is checked for a dead owner */
    et_config config;             /* resolved */
    uint8_t id[16];               /* random, at creation */
    int64_t created_wall_ns;

    _Alignas(ET_CACHE_LINE) _Atomic uint64_t generation; /* agents that have owned it */
    _Atomic int32_t agent_pid;    /* 0: no agent since the last one left */
    _Atomic uint32_t reserved;
    _Atomic uint64_t attaches, attach_refusals, slotless, reaped;
    _Atomic uint64_t lock_steals, journal_replays, lock_timeouts;
} et_segment;

struct et_recorder {
    uint64_t id;                 /* first: the hot path compares it with the thread's cache */
    et_region *region;
    et_config config;            /* the collector's own copy: bounds every index */
    et_layout layout;
    uint64_t memory_bytes;

    /* derived pointers into the region */
    char *rings;
    et_series_rec *series;
    uint32_t *hash;
    char *arena;
    et_shared_counters *counters;
    _Atomic uint64_t *dirty;     /* bitmap: series whose shared counters moved */
    et_set *sets[2];
    uint32_t *touched[2];
    char *aggregates[2];
    uint32_t *pools[2];
    uint64_t page_limit;         /* a page offset is valid below this */

    /* histogram layout */
    uint32_t buckets_per_sign;
    uint32_t exponent_lo;        /* biased exponent of 2^min_exponent */
    uint32_t outlier_slot;       /* the page-table slot with no octave: always 0 */
    uint32_t edges[256];
    uint8_t sub_bucket_of[1u << ET_MANTISSA_BITS];
    /* by a double's top 12 bits (sign and exponent): its (sign, octave) slot, or
     * outlier_slot for zero/subnormal, out-of-range, NaN and Inf */
    uint16_t slot_of[1u << 12];
    double relative_error;

    /* background collector thread; lifecycle_lock serialises et_collector_start/stop (held
     * across pthread_create and pthread_join, never taken by the collector thread) */
    pthread_mutex_t lifecycle_lock;
    pthread_mutex_t thread_lock;
    pthread_cond_t thread_wake;
    pthread_t thread;
    bool thread_running;
    bool thread_stop;
    uint64_t period_max_ns;
    _Atomic uint64_t period_now_ns;

    /* process-wide list of live recorders (thread exit and fork walk it) */
    struct et_recorder *next_live;

    /* ---- shared segments (all zero for a private recorder) ---- */
    bool shared;                 /* the region lives in a segment file */
    bool owner;                  /* et_recorder_create_shared made it: closes, collects, reaps */
    _Atomic int dead;            /* ET_ETRUNCATED once the file shrank under us: hands off */
    int fd;                      /* holds this process's locks (agent, slot); -1 none */
    et_segment *seg;             /* the mapping's start */
    uint64_t map_bytes;
    et_proc *procs;
    uint32_t max_processes;
    uint32_t slot;               /* this process's slot, ET_NO_SLOT */
    _Atomic uint64_t own_tag;    /* (slot + 1) << ET_RING_SLOT_SHIFT: its rings' tag */
    bool slotless_counted;       /* this process was counted in the segment's slotless */
    _Atomic int64_t next_slot_try_ns; /* a slotless process tries for a slot again then */
    pthread_mutex_t slot_lock;   /* serialises taking a slot lazily (a fork child) */
    uint64_t steal_ns, give_up_ns, reap_period_ns;
    _Atomic int64_t next_reap_ns;
    _Atomic uint64_t truncations; /* process-local: the segment shrank under this handle */
    char *path;                  /* to take a slot again after fork */
    uint64_t dev, ino;           /* the file mapped, to tell it from a replacement */
};

static inline et_ring *et__ring(const et_recorder *rec, uint32_t i) {
    return (et_ring *)(rec->rings + (uint64_t)i * rec->layout.ring_stride);
}

static inline et_aggregate *et__agg(const et_recorder *rec, uint32_t set, uint32_t series) {
    return (et_aggregate *)(rec->aggregates[set] + (uint64_t)series * rec->layout.agg_stride);
}

/* An empty aggregate: no values, no pages. */
static inline void et__agg_clear(const et_recorder *rec, et_aggregate *agg) {
    memset(agg, 0, sizeof *agg);
    agg->min = __builtin_inf();
    agg->max = -__builtin_inf();
    memset(agg->pages, 0xff, (size_t)rec->layout.slots * sizeof(uint64_t)); /* ET_NO_PAGE */
}

/* The registered series count, never more than the configuration allows. */
static inline uint32_t et__series_count(const et_recorder *rec) {
    const uint32_t n = atomic_load_explicit(&rec->region->series_count, memory_order_acquire);
    return n <= rec->config.max_series ? n : rec->config.max_series;
}

/* record.c */
void et__thread_cache_forget(void);

/* The active set (under the aggregate lock). */
static inline uint32_t et__active(const et_recorder *rec) {
    return ET_WS_ACTIVE(atomic_load_explicit(&rec->region->window_state, memory_order_relaxed));
}

/* recorder.c */
void et__live_lock(void);
void et__live_unlock(void);
int et__register_thread_exit(void);
int64_t et__now_ns(int clock_id);

/* aggregate.c: everything below runs under the aggregate lock (et__agg_enter) */
/* Take the aggregate lock, and mark this thread as holding it for this recorder, so that a
 * signal handler recording meanwhile drops (counted) instead of deadlocking. */
uint64_t et__agg_enter(et_recorder *rec);
/* The agent's bounded wait: false (and nothing held) when a live process kept the lock past
 * give_up_ns; counted in the segment's lock_timeouts. */
bool et__agg_enter_timed(et_recorder *rec, uint64_t *previous);
void et__agg_leave(et_recorder *rec, uint64_t previous); /* what et__agg_enter returned */
/* This thread holds (or is taking) rec's aggregate lock. */
bool et__agg_held(const et_recorder *rec);
/* After a SIGBUS jump out of rec's section: this thread no longer holds rec's lock. */
void et__agg_forget(const et_recorder *rec);
/* The aggregate lock is held by dead_owner, known dead: take it now, repair, release.
 * false when the word says otherwise (someone else took it over first). */
bool et__agg_take_over(et_recorder *rec, uint32_t dead_owner);
/* Drain one ring into the active set; returns the records it held. */
uint64_t et__drain_ring(et_recorder *rec, et_ring *ring, int64_t now);
/* Aggregate n values of one series straight into the active set (a batch past the ring). */
void et__aggregate_batch(et_recorder *rec, uint32_t series, const double *values, size_t n,
                         int64_t now);
/* Aggregate values[i] into series_ids[i] straight into the active set (a group, or one
 * record of a thread without a ring). */
void et__aggregate_group(et_recorder *rec, const uint32_t *series_ids, const double *values,
                         size_t n, int64_t now);
/* Move the lock-free counters into the active set; `all`: every series, not only those
 * marked dirty (after a steal: the marks may have died with the holder). */
void et__fold_pending(et_recorder *rec);
void et__fold_all(et_recorder *rec);
/* After stealing the aggregate lock from a dead holder: redo its journaled step, fold. */
void et__journal_replay(et_recorder *rec);
/* Count without the lock: a drop or type rejection of n values of one series. */
void et__count_lock_free(et_recorder *rec, uint32_t series, int what, uint64_t n);
#define ET_COUNT_REJECT_TYPE (-1) /* `what` for et__count_lock_free; else a drop reason */
/* Reset a set to empty (only what its touched list names, and the bump allocator). */
void et__reset_set(et_recorder *rec, uint32_t set);

/* collect.c */
void et__thread_forget_after_fork(et_recorder *rec, uint32_t parent_tid);

/* record.c: forget the calling thread's cached ring if it is rec's (a fork child of a shared
 * segment's process: the ring stays the parent's) */
void et__thread_cache_forget_for(const et_recorder *rec);

/* shared.c */
/* The slot this process records under, taken now if it has none (after fork): its ring tag,
 * or 0 when no slot can be had (the thread aggregates through the lock; counted). */
uint64_t et__shared_slot_tag(et_recorder *rec);
/* Reap dead processes if the period has passed (the owner's collector). */
void et__shared_maybe_reap(et_recorder *rec);
/* The file still holds the mapping: false (and the handle dead) when it shrank. */
bool et__shared_size_ok(et_recorder *rec);
/* fork: the child's handles become producers' handles without a slot. */
void et__shared_after_fork_child(et_recorder *rec);
/* Unmap and close (et_recorder_free of a shared recorder, after the common part). */
void et__shared_release(et_recorder *rec);
/* The region's init and layout, for shared.c */
int et__resolve_config(const et_config *given, et_config *out);
void et__compute_layout(const et_config *c, et_layout *l);
void et__init_handle(et_recorder *rec); /* tables, pointers, mutexes: after region is set */
void et__init_region(et_recorder *rec);
void et__live_add(et_recorder *rec);
int et__process_init(void);
/* The registry lock, taken the way the recorder's mode needs: true when held. */
bool et__registry_enter(et_recorder *rec);
void et__registry_leave(et_recorder *rec);
/* The registry lock is held by dead_owner, known dead: take it, repair, release. */
bool et__registry_take_over(et_recorder *rec, uint32_t dead_owner);
/* What this process takes a shared segment's locks as: ET_LOCK_BY_SLOT | 0 for the agent,
 * | 1 + its slot for a producer with a slot, else its tid; and whether an owner is gone. */
uint32_t et__shared_lock_id(const et_recorder *rec);
bool et__shared_owner_dead(void *rec, uint32_t owner);

/* The SIGBUS guard (shared.c): a thread-local jump buffer armed around the agent's accesses
 * to a segment; a fault inside the armed range jumps back instead of killing the process. */
#include <setjmp.h>
typedef struct et_guard {
    sigjmp_buf *jb;
    const char *lo, *hi;
    et_recorder *rec;
} et_guard;
void et__guard_arm(et_recorder *rec, sigjmp_buf *jb, et_guard *saved);
/* Install the SIGBUS handler now (the first arm does; tests install it at a chosen time). */
void et__guard_install(void);
void et__guard_disarm(const et_guard *saved);
/* After a jump: the handle is dead (ET_ETRUNCATED), this thread holds nothing. */
void et__guard_fault(et_recorder *rec, const et_guard *saved);
/* Run the body (the variadic part, so that its commas need no care) under the guard if rec
 * is an owner's shared recorder; on_fault after a fault.  The body must not return or jump
 * out; what it writes and the code after reads must be volatile. */
#define ET_GUARDED(rec, on_fault, ...)                                                        \
    do {                                                                                       \
        if (!(rec)->owner) {                                                                   \
            __VA_ARGS__;                                                                       \
            break;                                                                             \
        }                                                                                      \
        sigjmp_buf et_jb_;                                                                     \
        et_guard et_saved_ = {0};                                                              \
        if (sigsetjmp(et_jb_, 0) == 0) {                                                       \
            et__guard_arm((rec), &et_jb_, &et_saved_);                                         \
            __VA_ARGS__;                                                                       \
            et__guard_disarm(&et_saved_);                                                      \
        } else {                                                                               \
            et__guard_fault((rec), &et_saved_);                                                \
            on_fault;                                                                          \
        }                                                                                      \
    } while (0)

#endif
