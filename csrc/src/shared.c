/* Shared recorders: the region in a file every process of a device maps.
 *
 * The file is a header (et_segment), a process table (et_proc per slot) and the region, at
 * offsets that follow from the configuration and max_processes alone.  A process that maps
 * it checks the header against what it computes itself, then addresses everything from its
 * own copy: the file's contents are data, never trusted for a length or an offset.
 *
 * Liveness is the kernel's: each process holds an open-file-description (OFD) lock on a byte
 * of the file that stands for its slot, the agent one on a byte of its own.  The kernel drops
 * such a lock when the last descriptor of that open file goes, so when the process dies,
 * however it dies.  A slot LIVE whose byte nobody holds is a dead process's, whatever its pid
 * became since: no pid reuse, uid or pid-namespace question, and no /proc (whose start times
 * qemu-user fakes for the process itself).  docs/shared-recorder.md has the reasons. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MODE 0660u
#define DEFAULT_MAX_PROCESSES 64u
#define MAX_PROCESSES 4096u
#define DEFAULT_LOCK_TIMEOUT_NS 100000000ull /* 100 ms */
#define DEFAULT_STEAL_NS 10000000ull        /* 10 ms */
#define DEFAULT_REAP_PERIOD_NS 100000000ull /* 100 ms */
#define SLOT_RETRY_NS 100000000ll           /* a slotless process tries again this often */
#define PAGE 4096u

_Static_assert(ET_LAYOUT_VERSION == ET_SEGMENT_LAYOUT, "one layout version");

void et_shared_options_default(et_shared_options *opts) {
    if (opts == NULL) return;
    memset(opts, 0, sizeof *opts);
    opts->mode = DEFAULT_MODE;
    opts->gid = -1;
    opts->max_processes = DEFAULT_MAX_PROCESSES;
    opts->lock_timeout_ns = DEFAULT_LOCK_TIMEOUT_NS;
    opts->steal_after_ns = DEFAULT_STEAL_NS;
    opts->reap_period_ns = DEFAULT_REAP_PERIOD_NS;
}

/* ---- the file's geometry ---- */

/* The sizes of everything two builds must agree on, folded: a producer built with another
 * compiler, word size or padding refuses the segment (ET_ELAYOUT) instead of misreading it. */
static uint32_t segment_abi(void) {
    const uint64_t sizes[] = {
        sizeof(et_segment),         sizeof(et_proc),
        sizeof(et_region),          sizeof(et_ring),
        sizeof(et_entry),           sizeof(et_series_rec),
        sizeof(et_shared_counters), sizeof(et_aggregate),
        sizeof(et_set),             sizeof(et_journal),
        offsetof(et_region, journal), offsetof(et_region, window_state),
        offsetof(et_segment, generation), offsetof(et_ring, own),
        __BYTE_ORDER__,
    };
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        h ^= (uint32_t)sizes[i];
        h *= 16777619u;
    }
    return h;
}

typedef struct geometry {
    et_layout layout;
    uint64_t procs_offset, region_offset, file_bytes;
} geometry;

static uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

static void geometry_of(const et_config *c, uint32_t max_processes, geometry *g) {
    et__compute_layout(c, &g->layout);
    g->procs_offset = round_up(sizeof(et_segment), ET_CACHE_LINE);
    g->region_offset = round_up(g->procs_offset + (uint64_t)max_processes * sizeof(et_proc), PAGE);
    g->file_bytes = g->region_offset + g->layout.total;
}

/* A header copy checked against what this library computes from its configuration. */
static int check_header(const et_segment *h, uint64_t file_size, geometry *g) {
    if (h->magic != ET_SEGMENT_MAGIC) return ET_ENOTSEGMENT;
    if (h->layout_version != ET_LAYOUT_VERSION) return ET_ELAYOUT;
    if (h->header_bytes != sizeof(et_segment) || h->abi != segment_abi()) return ET_ELAYOUT;
    if (h->max_processes == 0 || h->max_processes > MAX_PROCESSES) return ET_ENOTSEGMENT;
    et_config c;
    if (et__resolve_config(&h->config, &c) != ET_OK || memcmp(&c, &h->config, sizeof c) != 0)
        return ET_ENOTSEGMENT;
    geometry_of(&c, h->max_processes, g);
    if (h->procs_offset != g->procs_offset || h->region_offset != g->region_offset ||
        h->region_bytes != g->layout.total || h->file_bytes != g->file_bytes)
        return ET_ENOTSEGMENT;
    if (h->steal_ns < 1000000 || h->steal_ns > 10000000000ull) return ET_ENOTSEGMENT;
    if (g->file_bytes > SIZE_MAX / 2) return ET_ENOMEM; /* a 32-bit address space */
    if (file_size < g->file_bytes) return ET_ETRUNCATED;
    return ET_OK;
}

/* The region's own header must say what the segment's does. */
static bool region_matches(const et_recorder *rec) {
    const et_region *r = rec->region;
    return r->magic == ET_REGION_MAGIC && r->layout_version == ET_LAYOUT_VERSION &&
           r->header_bytes == sizeof(et_region) && r->region_bytes == rec->layout.total &&
           memcmp(&r->config, &rec->config, sizeof rec->config) == 0;
}

/* ---- files ---- */

static int errno_code(int e) {
    switch (e) {
    case ENOENT: return ET_ENOSEGMENT;
    case EACCES:
    case EPERM:
    case EROFS: return ET_EACCES;
    case EISDIR:
    case ELOOP:
    case ENXIO:
    case ENODEV:
    case ENOTDIR: return ET_ENOTSEGMENT;
    case ENOMEM: return ET_ENOMEM;
    default: return ET_ESYSTEM;
    }
}

/* Open path as a segment candidate: a regular file (a FIFO or a device is not). */
static int open_file(const char *path, int flags, int *fd, struct stat *st) {
    *fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (*fd < 0) return errno_code(errno);
    if (fstat(*fd, st) != 0 || !S_ISREG(st->st_mode)) {
        const int rc = S_ISREG(st->st_mode) ? errno_code(errno) : ET_ENOTSEGMENT;
        close(*fd);
        *fd = -1;
        return rc;
    }
    return ET_OK;
}

/* The header, read (not mapped: a file truncated meanwhile cannot fault here) and checked.
 * *layout_seen: the file's layout version when its magic is right (0 otherwise). */
static int read_header(int fd, uint64_t size, et_segment *h, geometry *g,
                       uint32_t *layout_seen) {
    memset(h, 0, sizeof *h);
    if (layout_seen) *layout_seen = 0;
    const uint64_t want = sizeof *h;
    const ssize_t got = pread(fd, h, (size_t)(size < want ? size : want), 0);
    if (got < 0) return ET_ESYSTEM;
    if ((size_t)got < offsetof(et_segment, header_bytes) || h->magic != ET_SEGMENT_MAGIC)
        return ET_ENOTSEGMENT;
    if (layout_seen) *layout_seen = h->layout_version;
    if (h->layout_version != ET_LAYOUT_VERSION) return ET_ELAYOUT;
    if ((uint64_t)got < want) return ET_ETRUNCATED;
    return check_header(h, size, g);
}

static int ofd_lock(int fd, off_t at, short type) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = at;
    fl.l_len = 1;
    return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

/* 1: another open file holds a lock on byte `at`; 0: nobody does; < 0: -errno. */
static int ofd_held(int fd, off_t at) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = at;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return -errno;
    return fl.l_type != F_UNLCK;
}

static int64_t wall_ns(void) { return et__now_ns(CLOCK_REALTIME); }

/* 16 random bytes for the segment id: getrandom, else /dev/urandom, else clocks and pid. */
static void random_id(uint8_t id[16]) {
    ssize_t got = -1;
#ifdef SYS_getrandom
    got = syscall(SYS_getrandom, id, 16, 0);
#endif
    if (got == 16) return;
    const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        got = read(fd, id, 16);
        close(fd);
        if (got == 16) return;
    }
    uint64_t a = (uint64_t)et__now_ns(CLOCK_MONOTONIC) ^ (uint64_t)getpid() << 32;
    uint64_t b = (uint64_t)wall_ns() * 0x9E3779B97F4A7C15ull;
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}

/* ---- handles ---- */

static void free_handle_memory(et_recorder *rec) {
    if (rec->seg != NULL) munmap(rec->seg, (size_t)rec->map_bytes);
    if (rec->fd >= 0) close(rec->fd);
    free(rec->path);
    pthread_mutex_destroy(&rec->lifecycle_lock);
    pthread_mutex_destroy(&rec->thread_lock);
    pthread_mutex_destroy(&rec->slot_lock);
    pthread_cond_destroy(&rec->thread_wake);
    free(rec);
}

/* A handle over fd's segment, checked header h: mapped, derived, not yet live. */
static int map_handle(const char *path, int fd, const struct stat *st, const et_segment *h,
                      const geometry *g, bool owner, et_recorder **out) {
    *out = NULL;
    et_recorder *rec = calloc(1, sizeof *rec);
    if (rec == NULL) return ET_ENOMEM;
    rec->path = strdup(path);
    /* MAP_POPULATE: the page tables are filled now, as a private recorder's memory is
     * touched at creation; otherwise each ring page's first record would take a fault, a
     * kernel entry on the hot path */
    void *map = mmap(NULL, (size_t)g->file_bytes, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, fd, 0);
    if (rec->path == NULL || map == MAP_FAILED) {
        const int rc = map == MAP_FAILED && errno != ENOMEM ? ET_ESYSTEM : ET_ENOMEM;
        if (map != MAP_FAILED) munmap(map, (size_t)g->file_bytes);
        free(rec->path);
        free(rec);
        return rc;
    }
    rec->shared = true;
    rec->owner = owner;
    rec->seg = map;
    rec->map_bytes = g->file_bytes;
    rec->procs = (et_proc *)((char *)map + g->procs_offset);
    rec->max_processes = h->max_processes;
    rec->region = (et_region *)((char *)map + g->region_offset);
    rec->config = h->config;
    rec->layout = g->layout;
    rec->memory_bytes = sizeof *rec + g->file_bytes;
    rec->steal_ns = h->steal_ns;
    rec->give_up_ns = DEFAULT_LOCK_TIMEOUT_NS;
    rec->reap_period_ns = DEFAULT_REAP_PERIOD_NS;
    rec->dev = (uint64_t)st->st_dev;
    rec->ino = (uint64_t)st->st_ino;
    et__init_handle(rec); /* sets fd -1 and no slot */
    rec->fd = fd;
    *out = rec;
    return ET_OK;
}

/* ---- process slots ---- */

/* Take a free slot for this process, with fd's open file holding the slot's lock.  The lock
 * comes first and the state second: a LIVE slot always has its lock held while its process
 * lives, so the reaper never mistakes a process that is attaching for a dead one. */
static int take_slot(et_recorder *rec, int fd) {
    for (uint32_t i = 0; i < rec->max_processes; i++) {
        et_proc *p = &rec->procs[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != ET_PROC_FREE) continue;
        if (ofd_lock(fd, ET_LOCK_SLOT0 + i, F_WRLCK) != 0) continue; /* someone is on it */
        uint32_t expected = ET_PROC_FREE;
        if (!atomic_compare_exchange_strong_explicit(&p->state, &expected, ET_PROC_LIVE,
                                                     memory_order_acq_rel,
                                                     memory_order_relaxed)) {
            ofd_lock(fd, ET_LOCK_SLOT0 + i, F_UNLCK);
            continue;
        }
        atomic_store_explicit(&p->pid, (int32_t)getpid(), memory_order_relaxed);
        atomic_store_explicit(&p->attached_wall_ns, wall_ns(), memory_order_relaxed);
        rec->slot = i;
        atomic_store_explicit(&rec->own_tag,
                              (uint64_t)(i + 1) << ET_RING_SLOT_SHIFT, memory_order_release);
        atomic_fetch_add_explicit(&rec->seg->attaches, 1, memory_order_relaxed);
        return ET_OK;
    }
    return ET_EPROCFULL;
}

/* Give back rings tagged with slot i (their pending records stay for the agent). */
static void free_slot_rings(et_recorder *rec, uint32_t i) {
    const uint64_t tag = (uint64_t)(i + 1) << ET_RING_SLOT_SHIFT;
    for (uint32_t k = 0; k < rec->config.max_threads; k++) {
        et_ring *ring = et__ring(rec, k);
        uint64_t own = atomic_load_explicit(&ring->own, memory_order_relaxed);
        if ((own >> ET_RING_SLOT_SHIFT) << ET_RING_SLOT_SHIFT == tag)
            atomic_compare_exchange_strong_explicit(&ring->own, &own, 0, memory_order_release,
                                                    memory_order_relaxed);
    }
}

static void release_slot(et_recorder *rec) {
    if (rec->slot == ET_NO_SLOT) return;
    free_slot_rings(rec, rec->slot);
    et_proc *p = &rec->procs[rec->slot];
    atomic_store_explicit(&p->pid, 0, memory_order_relaxed);
    atomic_store_explicit(&p->state, ET_PROC_FREE, memory_order_release);
    if (rec->fd >= 0) ofd_lock(rec->fd, ET_LOCK_SLOT0 + rec->slot, F_UNLCK);
    rec->slot = ET_NO_SLOT;
    atomic_store_explicit(&rec->own_tag, 0, memory_order_relaxed);
}

uint64_t et__shared_slot_tag(et_recorder *rec) {
    const uint64_t tag =
        atomic_load_explicit(&rec->own_tag, memory_order_acquire);
    if (tag != 0) return tag;
    pthread_mutex_lock(&rec->slot_lock);
    uint64_t result = atomic_load_explicit(&rec->own_tag,
                                           memory_order_relaxed);
    const int64_t now = et__now_ns(CLOCK_MONOTONIC);
    if (result == 0 && !atomic_load_explicit(&rec->dead, memory_order_acquire) &&
        now >= atomic_load_explicit(&rec->next_slot_try_ns, memory_order_relaxed)) {
        /* A fork child (or an agent that records): a slot of its own, held by an open file
         * of its own.  The file at path must still be the one mapped. */
        if (rec->fd < 0) {
            const int fd = open(rec->path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
            struct stat st;
            if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_dev == rec->dev &&
                (uint64_t)st.st_ino == rec->ino)
                rec->fd = fd;
            else if (fd >= 0)
                close(fd);
        }
        if (rec->fd >= 0 && take_slot(rec, rec->fd) == ET_OK) {
            result = atomic_load_explicit(&rec->own_tag, memory_order_relaxed);
        } else {
            /* no slot (table full, file gone): record through the lock, try again later */
            if (!rec->slotless_counted) {
                rec->slotless_counted = true;
                atomic_fetch_add_explicit(&rec->seg->slotless, 1, memory_order_relaxed);
            }
            atomic_store_explicit(&rec->next_slot_try_ns, now + SLOT_RETRY_NS,
                                  memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&rec->slot_lock);
    return result;
}

void et__shared_after_fork_child(et_recorder *rec) {
    et__thread_cache_forget_for(rec);
    /* The parent's descriptor holds the parent's locks (the slot, the agent's); a copy left
     * open here would keep them held after the parent died.  The child takes its own. */
    if (rec->fd >= 0) close(rec->fd);
    rec->fd = -1;
    rec->slot = ET_NO_SLOT;
    atomic_store_explicit(&rec->own_tag, 0, memory_order_relaxed);
    rec->owner = false; /* the agent is the parent */
    rec->slotless_counted = false;
    atomic_store_explicit(&rec->next_slot_try_ns, 0, memory_order_relaxed);
}

/* ---- reaping ---- */

/* This process's slot as another thread may read it (the tag is set once the slot is). */
static uint32_t own_slot(const et_recorder *rec) {
    const uint64_t tag = atomic_load_explicit(&rec->own_tag, memory_order_acquire);
    return tag ? (uint32_t)(tag >> ET_RING_SLOT_SHIFT) - 1 : ET_NO_SLOT;
}

uint32_t et__shared_lock_id(const et_recorder *rec) {
    if (rec->owner) return ET_LOCK_BY_SLOT;
    const uint32_t slot = own_slot(rec);
    return slot != ET_NO_SLOT ? ET_LOCK_BY_SLOT | (slot + 1) : et__tid();
}

/* Whether a shared lock's owner is gone.  A slot's (or the agent's) owner: its OFD lock is
 * free.  That is right across pid namespaces, where a tid means nothing to this process, and
 * whatever happened to the owner's pid since; the slot itself cannot have passed to another
 * process meanwhile, because the reaper takes a dead slot's locks over before freeing it
 * (and a new agent its predecessor's).  A tid owner (a process without a slot): kill(). */
bool et__shared_owner_dead(void *arg, uint32_t owner) {
    const et_recorder *rec = arg;
    if (!(owner & ET_LOCK_BY_SLOT)) return kill((pid_t)owner, 0) == -1 && errno == ESRCH;
    const uint32_t index = owner & ~ET_LOCK_BY_SLOT;
    if (index > rec->max_processes) return true; /* no such byte: written over */
    if (owner == et__shared_lock_id(rec)) return false; /* this process: alive */
    if (rec->fd < 0) return false; /* cannot tell: never steal on a guess */
    return ofd_held(rec->fd, ET_LOCK_AGENT + index) == 0;
}

/* A dead process's (or agent's) locks, taken over and repaired before its slot (or the agent
 * role) passes to another: afterwards its owner value would name a live process. */
static void take_over_locks(et_recorder *rec, uint32_t dead_owner) {
    et__agg_take_over(rec, dead_owner); /* each counted in lock_steals */
    et__registry_take_over(rec, dead_owner);
}

/* Give back the slots whose process is gone: LIVE with nobody holding the slot's lock (or
 * REAPING: an agent died reaping it).  Only the agent reaps; its own slot it keeps (its own
 * lock never conflicts with itself, so it would look dead). */
static uint32_t reap(et_recorder *rec) {
    uint32_t n = 0;
    const uint32_t mine = own_slot(rec);
    for (uint32_t i = 0; i < rec->max_processes; i++) {
        if (i == mine) continue;
        et_proc *p = &rec->procs[i];
        uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
        if (st == ET_PROC_LIVE) {
            if (ofd_held(rec->fd, ET_LOCK_SLOT0 + i) != 0) continue; /* alive (or unknown) */
            if (!atomic_compare_exchange_strong_explicit(&p->state, &st, ET_PROC_REAPING,
                                                         memory_order_acq_rel,
                                                         memory_order_relaxed))
                continue;
        } else if (st != ET_PROC_REAPING) {
            continue;
        }
        take_over_locks(rec, ET_LOCK_BY_SLOT | (i + 1));
        free_slot_rings(rec, i);
        atomic_store_explicit(&p->pid, 0, memory_order_relaxed);
        atomic_store_explicit(&p->state, ET_PROC_FREE, memory_order_release);
        atomic_fetch_add_explicit(&rec->seg->reaped, 1, memory_order_relaxed);
        n++;
    }
    return n;
}

void et__shared_maybe_reap(et_recorder *rec) {
    if (!rec->owner) return;
    const int64_t now = et__now_ns(CLOCK_MONOTONIC);
    if (now < atomic_load_explicit(&rec->next_reap_ns, memory_order_relaxed)) return;
    atomic_store_explicit(&rec->next_reap_ns, now + (int64_t)rec->reap_period_ns,
                          memory_order_relaxed);
    reap(rec);
}

bool et__shared_size_ok(et_recorder *rec) {
    if (!rec->shared || rec->fd < 0) return true;
    struct stat st;
    if (fstat(rec->fd, &st) != 0 || (uint64_t)st.st_size >= rec->map_bytes) return true;
    if (atomic_exchange_explicit(&rec->dead, ET_ETRUNCATED, memory_order_acq_rel) == 0)
        atomic_fetch_add_explicit(&rec->truncations, 1, memory_order_relaxed);
    return false;
}

int et_shared_reap(et_recorder *rec) {
    if (rec == NULL || !rec->shared) return ET_EINVAL;
    if (!rec->owner) return ET_ENOTOWNER;
    if (atomic_load_explicit(&rec->dead, memory_order_acquire) || !et__shared_size_ok(rec))
        return ET_ETRUNCATED;
    volatile int n = 0;
    ET_GUARDED(rec, n = ET_ETRUNCATED, n = (int)reap(rec));
    return n;
}

/* ---- the SIGBUS guard ----
 * A producer with write access can truncate the file; whoever then touches a page past the
 * new end gets SIGBUS.  The agent arms a thread-local jump buffer around its accesses to the
 * segment; the handler, installed once (by the first arm), jumps back when the fault is inside
 * the armed mapping and otherwise hands the signal to whatever handler was there before
 * (Python's faulthandler, a sanitizer's, the default action): enable those first.
 * SA_NODEFER, so that no signal mask needs saving at arm time (sigsetjmp(.., 0)). */

static _Thread_local et_guard armed __attribute__((tls_model("initial-exec")));
static struct sigaction previous_bus;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int sig, siginfo_t *info, void *ctx) {
    (void)sig, (void)ctx;
    const char *at = info ? (const char *)info->si_addr : NULL;
    if (armed.jb != NULL && info != NULL && info->si_code > 0 && at >= armed.lo &&
        at < armed.hi)
        siglongjmp(*armed.jb, 1);
    /* Not ours: give the signal to the handler that was there before, as if we had never
     * been: put it back, and let the fault happen again (a real one re-executes the faulting
     * instruction on return) or send the signal again.  Calling that handler from here
     * instead would hand it our context, and a handler that chains back to its own previous
     * one (Python's faulthandler) would loop between us. */
    sigaction(SIGBUS, &previous_bus, NULL);
    if (info == NULL || info->si_code <= 0) raise(SIGBUS);
}

/* Install the handler, keeping the one in place as the previous one; nothing if it is ours. */
void et__guard_install(void) {
    struct sigaction current;
    if (sigaction(SIGBUS, NULL, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
        current.sa_sigaction == on_sigbus)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous_bus);
}

static void guard_install(void) { et__guard_install(); }

void et__guard_arm(et_recorder *rec, sigjmp_buf *jb, et_guard *saved) {
    pthread_once(&guard_once, guard_install);
    *saved = armed;
    armed.lo = (const char *)rec->seg;
    armed.hi = armed.lo + rec->map_bytes;
    armed.rec = rec;
    atomic_signal_fence(memory_order_seq_cst);
    armed.jb = jb;
    atomic_signal_fence(memory_order_seq_cst);
}

void et__guard_disarm(const et_guard *saved) {
    atomic_signal_fence(memory_order_seq_cst);
    armed = *saved;
    atomic_signal_fence(memory_order_seq_cst);
}

void et__guard_fault(et_recorder *rec, const et_guard *saved) {
    armed = *saved;
    /* The jump left the handler without the kernel restoring the mask.  SA_NODEFER kept
     * SIGBUS unblocked, unless someone installs the kernel-level handler for us with their
     * own flags (TSan does): unblock it, or the next fault would kill without a handler. */
    sigset_t bus;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
    et__agg_forget(rec); /* this thread holds nothing of the dead mapping */
    if (atomic_exchange_explicit(&rec->dead, ET_ETRUNCATED, memory_order_acq_rel) == 0)
        atomic_fetch_add_explicit(&rec->truncations, 1, memory_order_relaxed);
}

/* A producer's own guarded step (attach, detach): 0, or ET_ETRUNCATED after a fault. */
#define PRODUCER_GUARDED(rec, result, ...)                                                    \
    do {                                                                                       \
        sigjmp_buf jb_;                                                                        \
        et_guard saved_ = {0};                                                                 \
        if (sigsetjmp(jb_, 0) == 0) {                                                          \
            et__guard_arm((rec), &jb_, &saved_);                                               \
            __VA_ARGS__;                                                                       \
            et__guard_disarm(&saved_);                                                         \
        } else {                                                                               \
            et__guard_fault((rec), &saved_);                                                   \
            result = ET_ETRUNCATED;                                                            \
        }                                                                                      \
    } while (0)

/* ---- the agent's side ---- */

/* A fresh segment's file at path: written and locked at path.tmp, renamed into place.  The
 * tmp file's agent lock is taken first: a second creator racing this one finds it held
 * (ET_EBUSY), and one that comes after the rename finds path there, locked by us.
 * `replacing`: path holds a segment whose agent lock the caller holds; else path must still
 * be absent once the tmp lock is ours (ET_OK with *fd_out -1: it appeared, look again). */
static int create_file(const char *path, const et_config *c, const et_shared_options *o,
                       bool replacing, int *fd_out, struct stat *st_out) {
    *fd_out = -1;
    const size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (tmp == NULL) return ET_ENOMEM;
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    int rc = ET_OK;
    void *map = MAP_FAILED;
    geometry g;
    geometry_of(c, o->max_processes, &g);
    const int fd = open(tmp, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        rc = errno == ENOENT ? ET_ESYSTEM : errno_code(errno); /* ENOENT: no directory */
        free(tmp);
        return rc;
    }
    if (ofd_lock(fd, ET_LOCK_AGENT, F_WRLCK) != 0) {
        rc = errno == EAGAIN || errno == EACCES ? ET_EBUSY : ET_ESYSTEM;
        close(fd);
        free(tmp);
        return rc;
    }
    if (!replacing) {
        struct stat there;
        if (stat(path, &there) == 0) { /* another agent made it meanwhile */
            unlink(tmp);
            close(fd);
            free(tmp);
            return ET_OK;
        }
    }
    if (g.file_bytes > SIZE_MAX / 2) {
        rc = ET_ENOMEM;
        goto fail;
    }
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)g.file_bytes) != 0) {
        rc = errno == EFBIG ? ET_ENOMEM : ET_ESYSTEM;
        goto fail;
    }
    /* reserve the pages now: a full tmpfs is an error here, not a SIGBUS on first touch */
    const int fe = posix_fallocate(fd, 0, (off_t)g.file_bytes);
    if (fe != 0 && fe != EOPNOTSUPP && fe != EINVAL) {
        errno = fe;
        rc = ET_ESYSTEM;
        goto fail;
    }
    if (o->gid >= 0 && fchown(fd, (uid_t)-1, (gid_t)o->gid) != 0) {
        rc = errno_code(errno) == ET_EACCES ? ET_EACCES : ET_ESYSTEM;
        goto fail;
    }
    if (fchmod(fd, (mode_t)(o->mode & 07777)) != 0) {
        rc = ET_ESYSTEM;
        goto fail;
    }
    map = mmap(NULL, (size_t)g.file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        rc = errno == ENOMEM ? ET_ENOMEM : ET_ESYSTEM;
        goto fail;
    }
    /* the region, through a handle of our own that lives only for this */
    et_recorder *tmp_rec = calloc(1, sizeof *tmp_rec);
    if (tmp_rec == NULL) {
        rc = ET_ENOMEM;
        goto fail;
    }
    tmp_rec->region = (et_region *)((char *)map + g.region_offset);
    tmp_rec->config = *c;
    tmp_rec->layout = g.layout;
    et__init_handle(tmp_rec);
    et__init_region(tmp_rec);
    pthread_mutex_destroy(&tmp_rec->lifecycle_lock);
    pthread_mutex_destroy(&tmp_rec->thread_lock);
    pthread_mutex_destroy(&tmp_rec->slot_lock);
    pthread_cond_destroy(&tmp_rec->thread_wake);
    free(tmp_rec);
    et_segment *h = map;
    h->layout_version = ET_LAYOUT_VERSION;
    h->header_bytes = sizeof *h;
    h->abi = segment_abi();
    h->max_processes = o->max_processes;
    h->file_bytes = g.file_bytes;
    h->procs_offset = g.procs_offset;
    h->region_offset = g.region_offset;
    h->region_bytes = g.layout.total;
    h->steal_ns = o->steal_after_ns;
    h->config = *c;
    random_id(h->id);
    h->created_wall_ns = wall_ns();
    atomic_store_explicit(&h->generation, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    h->magic = ET_SEGMENT_MAGIC;
    munmap(map, (size_t)g.file_bytes);
    map = MAP_FAILED;
    if (rename(tmp, path) != 0) {
        rc = errno_code(errno) == ET_EACCES ? ET_EACCES : ET_ESYSTEM;
        goto fail;
    }
    free(tmp);
    if (fstat(fd, st_out) != 0) {
        close(fd);
        return ET_ESYSTEM;
    }
    *fd_out = fd;
    return ET_OK;
fail: {
    const int e = errno;
    if (map != MAP_FAILED) munmap(map, (size_t)g.file_bytes);
    unlink(tmp);
    close(fd);
    free(tmp);
    errno = e;
    return rc;
}
}

/* The agent's handle over the segment in fd (its agent lock held, header checked): recover
 * what a previous agent or dead producers left, become its agent. */
static int adopt(const char *path, int fd, const struct stat *st, const et_segment *h,
                 const geometry *g, const et_shared_options *o, et_recorder **out) {
    et_recorder *rec;
    int rc = map_handle(path, fd, st, h, g, true, &rec);
    if (rc != ET_OK) return rc;
    rec->give_up_ns = o->lock_timeout_ns;
    rec->reap_period_ns = o->reap_period_ns;
    volatile int result = ET_OK;
    PRODUCER_GUARDED(rec, result, {
        if (!region_matches(rec)) {
            result = ET_ENOTSEGMENT;
        } else {
            et_region *r = rec->region;
            /* only agents take the close lock, and we are the only agent now */
            et__lock_reset(&r->close_lock);
            /* the previous agent is dead (we hold the agent's lock): what it held is ours to
             * repair now, before anyone reads "the agent" as this one */
            take_over_locks(rec, ET_LOCK_BY_SLOT);
            atomic_fetch_add_explicit(&rec->seg->generation, 1, memory_order_relaxed);
            atomic_store_explicit(&rec->seg->agent_pid, (int32_t)getpid(),
                                  memory_order_relaxed);
            /* a close committed but cut short before the open window's start moved */
            const uint64_t ws = atomic_load_explicit(&r->window_state, memory_order_acquire);
            if (ET_WS_PHASE(ws) != ET_PHASE_NONE &&
                r->window_start_mono_ns != r->closed_end_mono_ns) {
                r->window_start_mono_ns = r->closed_end_mono_ns;
                r->window_start_wall_ns = r->closed_end_wall_ns;
            }
            reap(rec);
        }
    });
    if (result != ET_OK) {
        rec->fd = -1; /* the caller's */
        free_handle_memory(rec);
        return result;
    }
    et__live_add(rec); /* thread exit and fork see it */
    *out = rec;
    return ET_OK;
}

int et_recorder_create_shared(const char *path, const et_config *cfg,
                              const et_shared_options *opts, et_recorder **out) {
    if (out == NULL) return ET_EINVAL;
    *out = NULL;
    if (path == NULL || path[0] == '\0') return ET_EINVAL;
    int rc = et__process_init();
    if (rc != ET_OK) return rc;
    et_shared_options o;
    et_shared_options_default(&o);
    if (opts != NULL) o = *opts;
    if (o.max_processes == 0 || o.max_processes > MAX_PROCESSES || o.mode > 07777 ||
        o.lock_timeout_ns < 1000000 || o.lock_timeout_ns > 60000000000ull ||
        o.steal_after_ns < 1000000 || o.steal_after_ns > 10000000000ull ||
        o.reap_period_ns < 1000000 || o.reap_period_ns > 3600000000000ull ||
        (o.flags & ~ET_SHARED_REPLACE) != 0)
        return ET_EINVAL;
    et_config c;
    rc = et__resolve_config(cfg, &c);
    if (rc != ET_OK) return rc;

    for (int attempt = 0; attempt < 8; attempt++) {
        int fd;
        struct stat st;
        rc = open_file(path, O_RDWR, &fd, &st);
        if (rc == ET_ENOSEGMENT) { /* nothing there: make it */
            rc = create_file(path, &c, &o, false, &fd, &st);
            if (rc != ET_OK) return rc;
            if (fd < 0) continue; /* it appeared meanwhile: open that one */
            et_segment h;
            geometry g;
            rc = read_header(fd, (uint64_t)st.st_size, &h, &g, NULL);
            if (rc == ET_OK) rc = adopt(path, fd, &st, &h, &g, &o, out);
            if (rc != ET_OK) close(fd);
            return rc;
        }
        if (rc != ET_OK && rc != ET_ENOTSEGMENT) return rc;
        if (rc == ET_ENOTSEGMENT && fd < 0) { /* a directory, a FIFO: not ours to replace */
            return rc;
        }
        if (ofd_lock(fd, ET_LOCK_AGENT, F_WRLCK) != 0) {
            close(fd);
            return ET_EBUSY;
        }
        et_segment h;
        geometry g;
        rc = read_header(fd, (uint64_t)st.st_size, &h, &g, NULL);
        if (rc == ET_OK && (memcmp(&h.config, &c, sizeof c) != 0 ||
                            h.max_processes != o.max_processes))
            rc = ET_ECONFIG;
        if (rc == ET_OK) {
            rc = adopt(path, fd, &st, &h, &g, &o, out);
            if (rc == ET_OK) return ET_OK;
        }
        if (!(o.flags & ET_SHARED_REPLACE) || rc == ET_ENOMEM || rc == ET_ESYSTEM) {
            close(fd);
            return rc;
        }
        /* replace it, holding its agent lock until the new file is in place */
        int nfd;
        struct stat nst;
        rc = create_file(path, &c, &o, true, &nfd, &nst);
        close(fd);
        if (rc != ET_OK) return rc;
        rc = read_header(nfd, (uint64_t)nst.st_size, &h, &g, NULL);
        if (rc == ET_OK) rc = adopt(path, nfd, &nst, &h, &g, &o, out);
        if (rc != ET_OK) close(nfd);
        return rc;
    }
    return ET_EBUSY; /* created and replaced under us again and again */
}

/* ---- the producers' side ---- */

int et_recorder_attach(const char *path, et_recorder **out) {
    if (out == NULL) return ET_EINVAL;
    *out = NULL;
    if (path == NULL || path[0] == '\0') return ET_EINVAL;
    int rc = et__process_init();
    if (rc != ET_OK) return rc;
    int fd;
    struct stat st;
    rc = open_file(path, O_RDWR, &fd, &st);
    if (rc != ET_OK) return rc;
    et_segment h;
    geometry g;
    rc = read_header(fd, (uint64_t)st.st_size, &h, &g, NULL);
    et_recorder *rec = NULL;
    if (rc == ET_OK) rc = map_handle(path, fd, &st, &h, &g, false, &rec);
    if (rc != ET_OK) {
        close(fd);
        return rc;
    }
    volatile int result = ET_OK;
    PRODUCER_GUARDED(rec, result, {
        if (!region_matches(rec)) {
            result = ET_ENOTSEGMENT;
        } else {
            result = take_slot(rec, fd);
            if (result == ET_EPROCFULL)
                atomic_fetch_add_explicit(&rec->seg->attach_refusals, 1, memory_order_relaxed);
        }
    });
    if (result != ET_OK) {
        free_handle_memory(rec);
        return result;
    }
    et__live_add(rec);
    *out = rec;
    return ET_OK;
}

void et__shared_release(et_recorder *rec) {
    if (!atomic_load_explicit(&rec->dead, memory_order_acquire) && rec->seg != NULL) {
        volatile int unused = ET_OK;
        PRODUCER_GUARDED(rec, unused, {
            release_slot(rec);
            if (rec->owner && atomic_load_explicit(&rec->seg->agent_pid,
                                                   memory_order_relaxed) == (int32_t)getpid())
                atomic_store_explicit(&rec->seg->agent_pid, 0, memory_order_relaxed);
        });
        (void)unused;
    }
    if (rec->seg != NULL) munmap(rec->seg, (size_t)rec->map_bytes);
    rec->seg = NULL;
    if (rec->fd >= 0) close(rec->fd); /* drops this process's locks */
    rec->fd = -1;
    free(rec->path);
    rec->path = NULL;
}

/* ---- what a segment is and has seen ---- */

/* The segment's figures (the guarded part of et_recorder_shared_info). */
static void shared_info_read(et_recorder *rec, et_shared_info *o) {
    const et_segment *s = rec->seg;
    memcpy(o->segment_id, s->id, sizeof o->segment_id);
    o->generation = atomic_load_explicit(&rec->seg->generation, memory_order_relaxed);
    o->agent_pid = atomic_load_explicit(&rec->seg->agent_pid, memory_order_relaxed);
    o->attaches = atomic_load_explicit(&rec->seg->attaches, memory_order_relaxed);
    o->attach_refusals = atomic_load_explicit(&rec->seg->attach_refusals, memory_order_relaxed);
    o->slotless = atomic_load_explicit(&rec->seg->slotless, memory_order_relaxed);
    o->processes_reaped = atomic_load_explicit(&rec->seg->reaped, memory_order_relaxed);
    o->lock_steals = atomic_load_explicit(&rec->seg->lock_steals, memory_order_relaxed);
    o->journal_replays = atomic_load_explicit(&rec->seg->journal_replays, memory_order_relaxed);
    o->lock_timeouts = atomic_load_explicit(&rec->seg->lock_timeouts, memory_order_relaxed);
    o->integrity_errors = rec->region->integrity_errors;
    for (uint32_t i = 0; i < rec->max_processes; i++)
        if (atomic_load_explicit(&rec->procs[i].state, memory_order_relaxed) != ET_PROC_FREE)
            o->processes++;
    const uint64_t ws = atomic_load_explicit(&rec->region->window_state, memory_order_acquire);
    if (ET_WS_PHASE(ws) != ET_PHASE_NONE) o->pending_seq = ET_WS_SEQ(ws) - 1;
}

static int shared_info_guarded(et_recorder *rec, et_shared_info *out) {
    volatile int rc = ET_OK;
    PRODUCER_GUARDED(rec, rc, shared_info_read(rec, out));
    return rc;
}

int et_recorder_shared_info(et_recorder *rec, et_shared_info *out) {
    if (rec == NULL || out == NULL || !rec->shared) return ET_EINVAL;
    memset(out, 0, sizeof *out);
    out->owner = rec->owner;
    out->layout_version = ET_LAYOUT_VERSION;
    const uint32_t slot = own_slot(rec);
    out->process_slot = slot == ET_NO_SLOT ? -1 : (int32_t)slot;
    out->max_processes = rec->max_processes;
    out->segment_bytes = rec->map_bytes;
    out->pending_seq = UINT64_MAX;
    if (rec->owner) et__shared_size_ok(rec);
    if (!atomic_load_explicit(&rec->dead, memory_order_acquire) &&
        shared_info_guarded(rec, out) != ET_OK)
        memset(out->segment_id, 0, sizeof out->segment_id);
    out->truncated = atomic_load_explicit(&rec->dead, memory_order_acquire) != 0;
    out->truncations = atomic_load_explicit(&rec->truncations, memory_order_relaxed);
    return ET_OK;
}

int et_segment_inspect(const char *path, et_segment_info *out) {
    if (out == NULL) return ET_EINVAL;
    memset(out, 0, sizeof *out);
    out->library_layout_version = ET_LAYOUT_VERSION;
    if (path == NULL || path[0] == '\0') return ET_EINVAL;
    int fd;
    struct stat st;
    int rc = open_file(path, O_RDONLY, &fd, &st);
    if (rc != ET_OK) return rc;
    out->file_bytes = (uint64_t)st.st_size;
    et_segment h;
    geometry g;
    rc = read_header(fd, (uint64_t)st.st_size, &h, &g, &out->layout_version);
    if (rc == ET_OK || rc == ET_ETRUNCATED) out->expected_bytes = h.file_bytes;
    if (rc == ET_OK) {
        out->config = h.config;
        out->max_processes = h.max_processes;
        memcpy(out->segment_id, h.id, sizeof h.id);
        out->generation = h.generation;
        out->agent_pid = h.agent_pid;
        out->agent_running = ofd_held(fd, ET_LOCK_AGENT) == 1;
    }
    close(fd);
    return rc;
}
