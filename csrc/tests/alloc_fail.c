/* Allocation-failure injection, mpack style.  The runner links the core as one relocatable
 * object made with -Wl,--wrap=malloc,... (see the Makefile), so the core's calls to malloc,
 * calloc, realloc, posix_memalign and free, and to pthread_create and pthread_setspecific,
 * come here: they can be made to fail on a countdown, and the core's live allocations are
 * counted.  Everything else (these wrappers, the tests, libc, a sanitizer runtime) calls the
 * real functions, so ASan's allocator and leak checker still see every block. */
#include "support.h"

#include <stdatomic.h>
#include <stddef.h>

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n);
void __wrap_free(void *p);

static _Atomic int64_t countdown = -1; /* allocations to let through; -1: disarmed */
static _Atomic int fail_mode;
static _Atomic bool failure_hit;
static _Atomic int64_t live;
static _Atomic uint64_t calls;

void et_alloc_fail_at(uint64_t n, et_fail_mode mode) {
    atomic_store(&failure_hit, false);
    atomic_store(&fail_mode, (int)mode);
    atomic_store(&countdown, (int64_t)n);
}

bool et_alloc_disarm(void) {
    atomic_store(&countdown, -1);
    return atomic_exchange(&failure_hit, false);
}

int64_t et_alloc_live(void) { return atomic_load(&live); }
uint64_t et_alloc_calls(void) { return atomic_load(&calls); }

static bool should_fail(void) {
    atomic_fetch_add(&calls, 1);
    int64_t c = atomic_load(&countdown);
    while (c > 0) {
        if (atomic_compare_exchange_weak(&countdown, &c, c - 1)) return false;
    }
    if (c < 0) return false;
    /* c == 0: this one fails; once-mode disarms, from-mode stays at 0 */
    if (atomic_load(&fail_mode) == ET_FAIL_ONCE) atomic_store(&countdown, -1);
    atomic_store(&failure_hit, true);
    return true;
}

void *__wrap_malloc(size_t n) {
    if (should_fail()) return NULL;
    void *p = malloc(n);
    if (p) atomic_fetch_add(&live, 1);
    return p;
}

void *__wrap_calloc(size_t k, size_t n) {
    if (should_fail()) return NULL;
    void *p = calloc(k, n);
    if (p) atomic_fetch_add(&live, 1);
    return p;
}

void *__wrap_realloc(void *p, size_t n) {
    if (should_fail()) return NULL;
    void *q = realloc(p, n);
    if (q && !p) atomic_fetch_add(&live, 1);
    return q;
}

int __wrap_posix_memalign(void **p, size_t align, size_t n) {
    if (should_fail()) return 12; /* ENOMEM; *p untouched, as glibc leaves it */
    const int rc = posix_memalign(p, align, n);
    if (rc == 0) atomic_fetch_add(&live, 1);
    return rc;
}

void __wrap_free(void *p) {
    if (p) atomic_fetch_sub(&live, 1);
    free(p);
}

/* Thread-call failure injection: the next pthread_create / pthread_setspecific fails. */
#include <pthread.h>

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_setspecific(pthread_key_t key, const void *value);

static _Atomic bool fail_next_create, fail_next_setspecific;

void et_thread_fail_next(bool create, bool setspecific) {
    atomic_store(&fail_next_create, create);
    atomic_store(&fail_next_setspecific, setspecific);
}

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg) {
    if (atomic_exchange(&fail_next_create, false)) return 11; /* EAGAIN */
    return pthread_create(t, a, fn, arg);
}

int __wrap_pthread_setspecific(pthread_key_t key, const void *value) {
    if (atomic_exchange(&fail_next_setspecific, false)) return 12; /* ENOMEM */
    return pthread_setspecific(key, value);
}
