/*
 * et_test.h: the C core's one-header test harness.
 *
 * Tests register themselves (a constructor per test), so a test file is just ET_TEST blocks and
 * every file linked into the runner is run.  Checks never stop a test and may be made from any
 * thread; ET_REQUIRE stops the current (void) function.  Each test runs under an alarm(): a
 * deadlock fails the run with the test's name instead of hanging CI.
 *
 * Exactly one translation unit defines ET_TEST_MAIN before including this header; it gets the
 * registry and main().  Runner arguments: --concurrent (only tests flagged ET_CONCURRENT, the set
 * TSan runs), --list, and substrings that select tests by name.  The last line printed is
 * "N passed, N failed".  ET_TEST_TIMEOUT (seconds, default 60) scales the per-test alarm.
 */
#ifndef ET_TEST_H
#define ET_TEST_H

#include "edgetelemetry.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ET_CONCURRENT 1u /* flag: the test exercises threads; the TSan target runs it */

typedef void (*et_test_fn)(void);
void et_test_register(const char *name, et_test_fn fn, unsigned flags);
void et_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
extern _Atomic uint64_t et_test_checks;
/* Failures so far (a fork child reports its own through its exit status). */
uint64_t et_test_failure_count(void);
/* Seconds a test may take before it is declared hung (ET_TEST_TIMEOUT scales it). */
unsigned et_test_timeout(void);

#define ET_TEST_FLAGS(name, flags)                                                             \
    static void name(void);                                                                    \
    __attribute__((constructor)) static void name##_register(void) {                           \
        et_test_register(#name, name, flags);                                                  \
    }                                                                                          \
    static void name(void)
#define ET_TEST(name) ET_TEST_FLAGS(name, 0)

#define ET_CHECK_COUNT() atomic_fetch_add_explicit(&et_test_checks, 1, memory_order_relaxed)

#define ET_CHECK(cond)                                                                         \
    do {                                                                                       \
        ET_CHECK_COUNT();                                                                      \
        if (!(cond)) et_test_fail(__FILE__, __LINE__, "%s", #cond);                            \
    } while (0)

#define ET_CHECKF(cond, ...)                                                                   \
    do {                                                                                       \
        ET_CHECK_COUNT();                                                                      \
        if (!(cond)) et_test_fail(__FILE__, __LINE__, __VA_ARGS__);                            \
    } while (0)

/* Stop the current void function (a test or a thread body) when cond fails. */
#define ET_REQUIRE(cond)                                                                       \
    do {                                                                                       \
        ET_CHECK_COUNT();                                                                      \
        if (!(cond)) {                                                                         \
            et_test_fail(__FILE__, __LINE__, "required: %s", #cond);                           \
            return;                                                                            \
        }                                                                                      \
    } while (0)

#define ET_CHECK_EQ_I(a, b)                                                                    \
    do {                                                                                       \
        const long long a_ = (long long)(a), b_ = (long long)(b);                              \
        ET_CHECK_COUNT();                                                                      \
        if (a_ != b_) et_test_fail(__FILE__, __LINE__, "%s == %s (%lld vs %lld)", #a, #b, a_, b_); \
    } while (0)

#define ET_CHECK_EQ_U(a, b)                                                                    \
    do {                                                                                       \
        const uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                                 \
        ET_CHECK_COUNT();                                                                      \
        if (a_ != b_)                                                                          \
            et_test_fail(__FILE__, __LINE__, "%s == %s (%" PRIu64 " vs %" PRIu64 ")", #a, #b,  \
                         a_, b_);                                                              \
    } while (0)

/* Exact double comparison (sums of small integers are exact). */
#define ET_CHECK_EQ_D(a, b)                                                                    \
    do {                                                                                       \
        const double a_ = (a), b_ = (b);                                                       \
        ET_CHECK_COUNT();                                                                      \
        if (!(a_ == b_)) et_test_fail(__FILE__, __LINE__, "%s == %s (%.17g vs %.17g)", #a, #b, a_, b_); \
    } while (0)

/* A call's return code, named both ways on failure. */
#define ET_CHECK_RC(expr, want)                                                                \
    do {                                                                                       \
        const int rc_ = (int)(expr), want_ = (want);                                           \
        ET_CHECK_COUNT();                                                                      \
        if (rc_ != want_)                                                                      \
            et_test_fail(__FILE__, __LINE__, "%s returned %d (%s), want %d (%s)", #expr, rc_,  \
                         et_strerror(rc_), want_, et_strerror(want_));                         \
    } while (0)

#define ET_REQUIRE_OK(expr)                                                                    \
    do {                                                                                       \
        const int rc_ = (int)(expr);                                                           \
        ET_CHECK_COUNT();                                                                      \
        if (rc_ != ET_OK) {                                                                    \
            et_test_fail(__FILE__, __LINE__, "%s returned %d (%s)", #expr, rc_,                \
                         et_strerror(rc_));                                                    \
            return;                                                                            \
        }                                                                                      \
    } while (0)

#ifdef ET_TEST_MAIN

#include <signal.h>
#include <time.h>
#include <unistd.h>

#define ET_TEST_MAX 512

static struct {
    const char *name;
    et_test_fn fn;
    unsigned flags;
} et_tests[ET_TEST_MAX];
static unsigned et_test_n;
static _Atomic uint64_t et_test_failures;
static const char *volatile et_test_current = "(none)";
_Atomic uint64_t et_test_checks;

void et_test_register(const char *name, et_test_fn fn, unsigned flags) {
    if (et_test_n == ET_TEST_MAX) {
        fprintf(stderr, "et_test: more than %d tests\n", ET_TEST_MAX);
        abort();
    }
    et_tests[et_test_n].name = name;
    et_tests[et_test_n].fn = fn;
    et_tests[et_test_n].flags = flags;
    et_test_n++;
}

void et_test_fail(const char *file, int line, const char *fmt, ...) {
    /* the first few failures of a test are enough to see what went wrong */
    const uint64_t n = atomic_fetch_add(&et_test_failures, 1);
    if (n > 20) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stdout, "  FAIL %s:%d: %s\n", file, line, msg);
    fflush(stdout);
}

uint64_t et_test_failure_count(void) { return atomic_load(&et_test_failures); }

unsigned et_test_timeout(void) {
    const char *s = getenv("ET_TEST_TIMEOUT");
    const long v = s ? strtol(s, NULL, 10) : 0;
    return v > 0 ? (unsigned)v : 60u;
}

static void et_test_on_alarm(int sig) {
    (void)sig;
    static const char pre[] = "  FAIL timeout (deadlock?) in ";
    ssize_t r = write(1, pre, sizeof pre - 1);
    r = write(1, et_test_current, strlen(et_test_current));
    r = write(1, "\n", 1);
    (void)r;
    _exit(3);
}

static int et_test_selected(unsigned i, int argc, char **argv, int concurrent_only) {
    if (concurrent_only && !(et_tests[i].flags & ET_CONCURRENT)) return 0;
    int any = 0;
    for (int a = 1; a < argc; a++) {
        if (argv[a][0] == '-') continue;
        any = 1;
        if (strstr(et_tests[i].name, argv[a])) return 1;
    }
    return !any;
}

int main(int argc, char **argv) {
    int concurrent_only = 0, list = 0;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--concurrent")) concurrent_only = 1;
        else if (!strcmp(argv[a], "--list")) list = 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, et_test_on_alarm);
    unsigned passed = 0, failed = 0;
    for (unsigned i = 0; i < et_test_n; i++) {
        if (!et_test_selected(i, argc, argv, concurrent_only)) continue;
        if (list) {
            printf("%s\n", et_tests[i].name);
            continue;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        const uint64_t before = atomic_load(&et_test_failures);
        et_test_current = et_tests[i].name;
        alarm(et_test_timeout());
        et_tests[i].fn();
        alarm(0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        const double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (atomic_load(&et_test_failures) == before) {
            passed++;
            printf("ok   %-44s %8.1f ms\n", et_tests[i].name, ms);
        } else {
            failed++;
            printf("FAIL %-44s %8.1f ms\n", et_tests[i].name, ms);
        }
    }
    if (list) return 0;
    printf("%" PRIu64 " checks\n", atomic_load(&et_test_checks));
    printf("%u passed, %u failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif /* ET_TEST_MAIN */
#endif /* ET_TEST_H */
