/* Shared recorders in one process: create, attach, record, the window hand-over, detach,
 * every attach and create error, permissions, names, the lock a live process keeps too long.
 * The cross-process and crash tests are in test_shared_procs.c. */
#include "shared_support.h"

#include "../src/internal.h"

#include <grp.h>

/* ---- the round trip ---- */

ET_TEST(shared_create_attach_record_close_ack) {
    char path[512];
    test_seg_path(path, sizeof path, "basic");
    et_recorder *agent = test_create_shared(path, 256, 4, 8, 4);
    ET_REQUIRE(agent);
    struct stat st;
    ET_REQUIRE(stat(path, &st) == 0);
    ET_CHECK_EQ_U(st.st_mode & 07777, 0660);
    ET_CHECK_EQ_U(st.st_uid, geteuid());
    char tmp[520];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ET_CHECK(access(tmp, F_OK) != 0); /* renamed into place */

    et_recorder *producer = test_attach(path);
    ET_REQUIRE(producer);
    et_shared_info ai = test_shared_info(agent), pi = test_shared_info(producer);
    ET_CHECK_EQ_U(ai.owner, 1);
    ET_CHECK_EQ_U(pi.owner, 0);
    ET_CHECK(memcmp(ai.segment_id, pi.segment_id, 16) == 0);
    static const uint8_t zero[16];
    ET_CHECK(memcmp(ai.segment_id, zero, 16) != 0);
    ET_CHECK_EQ_U(ai.generation, 1);
    ET_CHECK_EQ_U(ai.processes, 1);
    ET_CHECK_EQ_I(ai.process_slot, -1); /* the agent has recorded nothing yet */
    ET_CHECK(pi.process_slot >= 0);
    ET_CHECK_EQ_I(ai.agent_pid, getpid());
    ET_CHECK_EQ_U(ai.pending_seq, UINT64_MAX);
    ET_CHECK_EQ_U(ai.layout_version, ET_SEGMENT_LAYOUT);

    /* a series registered by either side is the same id for both */
    uint32_t lat = 99, lat2 = 99, conf = 99;
    ET_CHECK_RC(et_series_add_unit(producer, "m", "1", "latency", NULL, "ms", &lat), ET_OK);
    ET_CHECK_RC(et_series_add_unit(agent, "m", "1", "latency", NULL, "ms", &lat2), ET_OK);
    ET_CHECK_EQ_U(lat2, lat);
    ET_CHECK_RC(et_series_add_unit(agent, "m", "1", "latency", NULL, "s", &lat2), ET_EUNIT);
    ET_CHECK_RC(et_series_add(agent, "m", "1", "confidence", NULL, &conf), ET_OK);
    for (int i = 1; i <= 100; i++) ET_CHECK_RC(et_record(producer, lat, (double)i), ET_OK);
    ET_CHECK_RC(et_record(producer, conf, 0.5), ET_OK);
    ET_CHECK_RC(et_record(agent, conf, 0.25), ET_OK); /* the agent may record too */
    ai = test_shared_info(agent);
    ET_CHECK(ai.process_slot >= 0 && ai.process_slot != pi.process_slot);
    ET_CHECK_EQ_U(ai.processes, 2);

    /* only the agent closes, collects, acks, reaps */
    et_window *w = NULL;
    ET_CHECK_RC(et_window_close(producer, &w), ET_ENOTOWNER);
    ET_CHECK(w == NULL);
    ET_CHECK_RC(et_collect(producer), ET_ENOTOWNER);
    ET_CHECK_RC(et_collector_start(producer, 1000000), ET_ENOTOWNER);
    ET_CHECK_RC(et_collector_stop(producer), ET_ENOTOWNER);
    ET_CHECK_RC(et_window_ack(producer, 0), ET_ENOTOWNER);
    ET_CHECK_RC(et_shared_reap(producer), ET_ENOTOWNER);

    ET_CHECK_RC(et_window_close(agent, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_seq(w), 0);
    et_series_stats st0;
    ET_REQUIRE(test_stats_of(w, lat, &st0));
    ET_CHECK_EQ_U(st0.count, 100);
    ET_CHECK_EQ_D(st0.sum, 5050.0);
    ET_CHECK_EQ_D(st0.min, 1.0);
    ET_CHECK_EQ_D(st0.max, 100.0);
    const char *unit = NULL;
    uint32_t at;
    ET_CHECK_RC(et_window_series_find(w, lat, &at), ET_OK);
    ET_CHECK_RC(et_window_series_unit(w, at, &unit), ET_OK);
    ET_CHECK(unit && !strcmp(unit, "ms"));
    et_series_stats c0;
    ET_REQUIRE(test_stats_of(w, conf, &c0));
    ET_CHECK_EQ_U(c0.count, 2);
    ET_CHECK_EQ_D(c0.sum, 0.75);
    int64_t sm, em, sw, ew;
    et_window_bounds(w, &sm, &em, &sw, &ew);

    /* not acknowledged: every close returns the same window, whatever was recorded since */
    ET_CHECK_RC(et_record(producer, lat, 1000.0), ET_OK);
    ET_CHECK_EQ_U(test_shared_info(agent).pending_seq, 0);
    for (int again = 0; again < 2; again++) {
        et_window *w2 = NULL;
        ET_CHECK_RC(et_window_close(agent, &w2), ET_OK);
        ET_REQUIRE(w2);
        ET_CHECK_EQ_U(et_window_seq(w2), 0);
        et_series_stats st;
        ET_REQUIRE(test_stats_of(w2, lat, &st));
        ET_CHECK(memcmp(&st, &st0, sizeof st) == 0);
        int64_t a, b, c, d;
        et_window_bounds(w2, &a, &b, &c, &d);
        ET_CHECK(a == sm && b == em && c == sw && d == ew);
        ET_CHECK_EQ_U(et_window_series_count(w2), et_window_series_count(w));
        et_window_free(w2);
    }
    et_window_free(w);
    ET_CHECK_RC(et_window_ack(agent, 1), ET_EINVAL); /* not closed yet */
    ET_CHECK_RC(et_window_ack(agent, 0), ET_OK);
    ET_CHECK_RC(et_window_ack(agent, 0), ET_OK); /* again: nothing to do */
    ET_CHECK_EQ_U(test_shared_info(agent).pending_seq, UINT64_MAX);
    ET_CHECK_RC(et_window_close(agent, &w), ET_OK);
    ET_REQUIRE(w);
    ET_CHECK_EQ_U(et_window_seq(w), 1);
    int64_t sm1;
    et_window_bounds(w, &sm1, NULL, NULL, NULL);
    ET_CHECK_EQ_I(sm1, em); /* windows tile time */
    ET_REQUIRE(test_stats_of(w, lat, &st0));
    ET_CHECK_EQ_U(st0.count, 1);
    ET_CHECK_EQ_D(st0.sum, 1000.0);
    ET_CHECK_EQ_U(et_window_series_count(w), 1);
    et_window_free(w);
    ET_CHECK_RC(et_window_ack(agent, 1), ET_OK);

    /* detach: the slot and its rings come back; records still pending stay for the agent */
    ET_CHECK_RC(et_record(producer, lat, 7.0), ET_OK);
    et_recorder_free(producer);
    ai = test_shared_info(agent);
    ET_CHECK_EQ_U(ai.processes, 1); /* the agent's own */
    et_info info;
    ET_CHECK_RC(et_recorder_info(agent, &info), ET_OK);
    ET_CHECK_EQ_U(info.threads_active, 1); /* the agent's thread's ring */
    test_totals t[8];
    test_totals_init(t, 8);
    test_close_ack(agent, t, 8);
    ET_CHECK_EQ_U(t[lat].count, 1);
    ET_CHECK_EQ_D(t[lat].sum, 7.0);
    ET_CHECK_EQ_U(info.integrity_errors, 0);
    et_recorder_free(agent);
    unlink(path);
}

/* A private recorder acknowledges at close; shared info is for shared recorders. */
ET_TEST(private_recorder_ack_is_implicit) {
    et_recorder *rec = test_recorder(64, 1, 1);
    ET_REQUIRE(rec);
    ET_CHECK_RC(et_window_ack(rec, 0), ET_EINVAL); /* nothing closed yet */
    test_series(rec, "x");
    ET_CHECK_RC(et_record(rec, 0, 1.0), ET_OK);
    test_totals t;
    test_totals_init(&t, 1);
    ET_CHECK_EQ_U(test_close_into(rec, &t, 1), 0);
    ET_CHECK_RC(et_window_ack(rec, 0), ET_OK);
    ET_CHECK_RC(et_window_ack(rec, 1), ET_EINVAL);
    ET_CHECK_EQ_U(test_close_into(rec, &t, 1), 1); /* a new window, not the same again */
    ET_CHECK_EQ_U(t.count, 1);
    et_shared_info si;
    ET_CHECK_RC(et_recorder_shared_info(rec, &si), ET_EINVAL);
    ET_CHECK_RC(et_shared_reap(rec), ET_EINVAL);
    ET_CHECK_RC(et_window_ack(NULL, 0), ET_EINVAL);
    et_recorder_free(rec);
}

/* ---- names ---- */

ET_TEST(shared_series_names_from_any_process) {
    char path[512];
    test_seg_path(path, sizeof path, "names");
    et_recorder *agent = test_create_shared(path, 64, 2, 4, 2);
    ET_REQUIRE(agent);
    et_recorder *producer = test_attach(path);
    ET_REQUIRE(producer);
    uint32_t a, b;
    ET_CHECK_RC(et_series_add_unit(producer, "resnet", "2.1", "latency", "gpu", "ms", &a), ET_OK);
    ET_CHECK_RC(et_series_add(producer, "resnet", "2.1", "confidence", NULL, &b), ET_OK);
    char buf[ET_SERIES_NAMES_MAX];
    const int n = et_series_names(agent, a, buf, sizeof buf);
    ET_CHECK_EQ_I(n, (int)sizeof "resnet\0" "2.1\0" "latency\0" "gpu\0" "ms");
    ET_CHECK(!memcmp(buf, "resnet\0" "2.1\0" "latency\0" "gpu\0" "ms", (size_t)n));
    ET_CHECK_EQ_I(et_series_names(agent, b, buf, sizeof buf),
                  (int)sizeof "resnet\0" "2.1\0" "confidence\0" "\0");
    ET_CHECK(!strcmp(buf + 11, "confidence") && buf[22] == '\0' && buf[23] == '\0');
    ET_CHECK_RC(et_series_names(producer, a, buf, 5), ET_EINVAL);
    ET_CHECK_RC(et_series_names(producer, 2, buf, sizeof buf), ET_ENOSERIES);
    ET_CHECK_RC(et_series_names(NULL, 0, buf, sizeof buf), ET_EINVAL);
    ET_CHECK_RC(et_series_names(producer, 0, NULL, 0), ET_EINVAL);
    /* private recorders too */
    et_recorder *rec = test_recorder(64, 1, 1);
    ET_REQUIRE(rec);
    test_series(rec, "x");
    ET_CHECK_EQ_I(et_series_names(rec, 0, buf, sizeof buf), (int)sizeof "model\0" "1\0" "x\0\0");
    et_recorder_free(rec);
    et_recorder_free(producer);
    et_recorder_free(agent);
    unlink(path);
}

/* ---- attach errors ---- */

static void write_file(const char *path, const void *data, size_t n, mode_t mode) {
    unlink(path);
    const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    ET_REQUIRE(fd >= 0);
    ET_CHECK(write(fd, data, n) == (ssize_t)n);
    close(fd);
}

/* A copy of a real segment, with `patch` bytes written at offset `at`. */
static void patched_copy(const char *from, const char *to, size_t at, const void *patch,
                         size_t n) {
    const int in = open(from, O_RDONLY);
    ET_REQUIRE(in >= 0);
    struct stat st;
    ET_REQUIRE(fstat(in, &st) == 0);
    char *buf = malloc((size_t)st.st_size);
    ET_REQUIRE(buf);
    ET_CHECK(read(in, buf, (size_t)st.st_size) == st.st_size);
    close(in);
    if (patch != NULL) memcpy(buf + at, patch, n);
    write_file(to, buf, (size_t)st.st_size, 0600);
    free(buf);
}

static int attach_rc(const char *path) {
    et_recorder *rec = (et_recorder *)&path;
    const int rc = et_recorder_attach(path, &rec);
    if (rc == ET_OK) {
        et_recorder_free(rec);
    } else {
        ET_CHECKF(rec == NULL, "%s: *out set on error", path);
    }
    return rc;
}

ET_TEST(shared_attach_errors_are_clear) {
    char path[512], bad[512];
    test_seg_path(path, sizeof path, "good");
    test_seg_path(bad, sizeof bad, "bad");
    et_recorder *agent = test_create_shared(path, 64, 2, 2, 2);
    ET_REQUIRE(agent);

    ET_CHECK_RC(attach_rc(bad), ET_ENOSEGMENT);        /* nothing there */
    ET_CHECK_RC(attach_rc(""), ET_EINVAL);
    ET_CHECK_RC(et_recorder_attach(path, NULL), ET_EINVAL);
    et_recorder *none = (et_recorder *)&none;
    ET_CHECK_RC(et_recorder_attach(NULL, &none), ET_EINVAL);
    ET_CHECK(none == NULL);
    ET_CHECK_RC(attach_rc(test_dir()), ET_ENOTSEGMENT); /* a directory */
    ET_CHECK(mkfifo(bad, 0600) == 0);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT);        /* a FIFO: refused, not blocked on */
    unlink(bad);
    write_file(bad, "", 0, 0600);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT);        /* empty */
    static const char text[] = "[agent]\nendpoint = http://localhost\n";
    write_file(bad, text, sizeof text, 0600);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT);        /* a foreign file */
    static char noise[1 << 16];
    uint64_t seed = 1;
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (char)test_rand(&seed);
    write_file(bad, noise, sizeof noise, 0600);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT);

    /* another layout version: refused before anything else is read, and inspect says which */
    const uint32_t v1 = 1;
    patched_copy(path, bad, offsetof(et_segment, layout_version), &v1, sizeof v1);
    ET_CHECK_RC(attach_rc(bad), ET_ELAYOUT);
    et_segment_info si;
    ET_CHECK_RC(et_segment_inspect(bad, &si), ET_ELAYOUT);
    ET_CHECK_EQ_U(si.layout_version, 1);
    ET_CHECK_EQ_U(si.library_layout_version, ET_SEGMENT_LAYOUT);
    ET_CHECK(strstr(et_strerror(ET_ELAYOUT), "layout 2") != NULL);
    const uint32_t v99 = 99;
    patched_copy(path, bad, offsetof(et_segment, layout_version), &v99, sizeof v99);
    ET_CHECK_RC(attach_rc(bad), ET_ELAYOUT);
    /* the same version built with other structure sizes (another ABI) */
    const uint32_t abi = 12345;
    patched_copy(path, bad, offsetof(et_segment, abi), &abi, sizeof abi);
    ET_CHECK_RC(attach_rc(bad), ET_ELAYOUT);
    /* a header that does not add up */
    const uint32_t huge = 1u << 20;
    patched_copy(path, bad, offsetof(et_segment, max_processes), &huge, sizeof huge);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT);
    const uint32_t ring63 = 63;
    patched_copy(path, bad, offsetof(et_segment, config.ring_capacity), &ring63, sizeof ring63);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT);
    const uint32_t more_series = 3;
    patched_copy(path, bad, offsetof(et_segment, config.max_series), &more_series,
                 sizeof more_series);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT); /* sizes no longer match the file's */
    const uint64_t offset = 8;
    patched_copy(path, bad, offsetof(et_segment, region_offset), &offset, sizeof offset);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT);
    /* the region's own header damaged */
    et_segment_info good;
    ET_CHECK_RC(et_segment_inspect(path, &good), ET_OK);
    const uint64_t junk = 42;
    const et_segment *h = agent->seg;
    patched_copy(path, bad, (size_t)h->region_offset, &junk, sizeof junk);
    ET_CHECK_RC(attach_rc(bad), ET_ENOTSEGMENT);
    /* truncated on disk, anywhere: in the header, in the process table, in the region */
    const off_t cuts[] = {12, 100, (off_t)h->procs_offset + 8, (off_t)h->region_offset + 100,
                          (off_t)h->file_bytes - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        patched_copy(path, bad, 0, NULL, 0);
        ET_REQUIRE(truncate(bad, cuts[i]) == 0);
        ET_CHECKF(attach_rc(bad) == ET_ETRUNCATED, "cut at %lld: %s", (long long)cuts[i],
                  et_strerror(attach_rc(bad)));
        ET_CHECK_RC(et_segment_inspect(bad, &si), ET_ETRUNCATED);
        ET_CHECK_EQ_U(si.file_bytes, (uint64_t)cuts[i]);
    }
    /* a copy that is whole attaches (nobody holds its agent lock: no agent, which is fine) */
    patched_copy(path, bad, 0, NULL, 0);
    ET_CHECK_RC(attach_rc(bad), ET_OK);
    ET_CHECK_RC(et_segment_inspect(bad, &si), ET_OK);
    ET_CHECK_EQ_U(si.agent_running, 0);
    ET_CHECK_EQ_U(good.agent_running, 1);
    ET_CHECK_EQ_I(good.agent_pid, getpid());
    ET_CHECK_EQ_U(good.max_processes, 2);
    ET_CHECK_EQ_U(good.config.ring_capacity, 64);
    ET_CHECK_EQ_U(good.expected_bytes, good.file_bytes);
    ET_CHECK_RC(et_segment_inspect(bad + 0, NULL), ET_EINVAL);
    ET_CHECK_RC(et_segment_inspect("/nonexistent/x", &si), ET_ENOSEGMENT);

    /* a full process table: counted, and the agent keeps serving the others */
    et_recorder *p1 = test_attach(path), *p2 = test_attach(path);
    ET_REQUIRE(p1 && p2);
    ET_CHECK_RC(attach_rc(path), ET_EPROCFULL);
    ET_CHECK_RC(attach_rc(path), ET_EPROCFULL);
    et_shared_info ai = test_shared_info(agent);
    ET_CHECK_EQ_U(ai.attach_refusals, 2);
    ET_CHECK_EQ_U(ai.processes, 2);
    ET_CHECK_RC(et_record(p1, 0, 1.0), ET_OK); /* no series 0: counted as unknown */
    et_recorder_free(p1);
    ET_CHECK_RC(attach_rc(path), ET_OK); /* its slot is free again */
    et_recorder_free(p2);
    et_recorder_free(agent);
    unlink(path);
    unlink(bad);
}

/* ---- create errors ---- */

ET_TEST(shared_create_errors_and_replace) {
    char path[512];
    test_seg_path(path, sizeof path, "create");
    et_config c = test_config(64, 2, 4);
    et_shared_options o = test_shared_options(4);
    et_recorder *a = NULL, *b = (et_recorder *)&c;
    ET_REQUIRE_OK(et_recorder_create_shared(path, &c, &o, &a));
    /* one agent at a time */
    ET_CHECK_RC(et_recorder_create_shared(path, &c, &o, &b), ET_EBUSY);
    ET_CHECK(b == NULL);
    et_shared_info first = test_shared_info(a);
    uint32_t id;
    ET_CHECK_RC(et_series_add(a, "m", "1", "x", NULL, &id), ET_OK);
    et_recorder_free(a);
    /* the same configuration: the same segment, a new generation */
    ET_REQUIRE_OK(et_recorder_create_shared(path, &c, &o, &a));
    et_shared_info second = test_shared_info(a);
    ET_CHECK(memcmp(first.segment_id, second.segment_id, 16) == 0);
    ET_CHECK_EQ_U(second.generation, 2);
    et_info info;
    ET_CHECK_RC(et_recorder_info(a, &info), ET_OK);
    ET_CHECK_EQ_U(info.series, 1);
    et_recorder_free(a);
    /* another configuration: refused, or replaced by a fresh segment */
    et_config other = test_config(128, 2, 4);
    ET_CHECK_RC(et_recorder_create_shared(path, &other, &o, &b), ET_ECONFIG);
    et_shared_options more = o;
    more.max_processes = 5;
    ET_CHECK_RC(et_recorder_create_shared(path, &c, &more, &b), ET_ECONFIG);
    et_shared_options replace = o;
    replace.flags = ET_SHARED_REPLACE;
    ET_REQUIRE_OK(et_recorder_create_shared(path, &other, &replace, &b));
    et_shared_info third = test_shared_info(b);
    ET_CHECK(memcmp(first.segment_id, third.segment_id, 16) != 0);
    ET_CHECK_EQ_U(third.generation, 1);
    ET_CHECK_RC(et_recorder_info(b, &info), ET_OK);
    ET_CHECK_EQ_U(info.series, 0);
    ET_CHECK_EQ_U(info.config.ring_capacity, 128);
    et_recorder_free(b);
    /* a foreign file at the path: refused, or replaced */
    write_file(path, "not a segment", 13, 0600);
    ET_CHECK_RC(et_recorder_create_shared(path, &c, &o, &b), ET_ENOTSEGMENT);
    char buf[16] = {0};
    const int fd = open(path, O_RDONLY);
    ET_CHECK(fd >= 0 && read(fd, buf, 13) == 13 && !strcmp(buf, "not a segment"));
    if (fd >= 0) close(fd);
    ET_REQUIRE_OK(et_recorder_create_shared(path, &c, &replace, &b));
    et_recorder_free(b);
    /* a truncated one likewise */
    ET_REQUIRE(truncate(path, 4096 + 10) == 0);
    ET_CHECK_RC(et_recorder_create_shared(path, &c, &o, &b), ET_ETRUNCATED);
    ET_REQUIRE_OK(et_recorder_create_shared(path, &c, &replace, &b));
    et_recorder_free(b);
    /* arguments and options */
    ET_CHECK_RC(et_recorder_create_shared(path, &c, &o, NULL), ET_EINVAL);
    ET_CHECK_RC(et_recorder_create_shared(NULL, &c, &o, &b), ET_EINVAL);
    et_shared_options bad = o;
    bad.max_processes = 0;
    ET_CHECK_RC(et_recorder_create_shared(path, &c, &bad, &b), ET_EINVAL);
    bad = o;
    bad.flags = 8;
    ET_CHECK_RC(et_recorder_create_shared(path, &c, &bad, &b), ET_EINVAL);
    bad = o;
    bad.steal_after_ns = 10;
    ET_CHECK_RC(et_recorder_create_shared(path, &c, &bad, &b), ET_EINVAL);
    et_config badc = test_config(63, 1, 1);
    ET_CHECK_RC(et_recorder_create_shared(path, &badc, &o, &b), ET_EINVAL);
    /* no such directory: the agent's setup is wrong, errno says what */
    char nodir[600];
    snprintf(nodir, sizeof nodir, "%s/missing-dir/recorder", test_dir());
    ET_CHECK_RC(et_recorder_create_shared(nodir, &c, &o, &b), ET_ESYSTEM);
    ET_CHECK_EQ_I(errno, ENOENT);
    /* defaults: NULL config and options */
    unlink(path);
    ET_REQUIRE_OK(et_recorder_create_shared(path, NULL, NULL, &b));
    struct stat st;
    ET_CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0660);
    ET_CHECK_EQ_U(test_shared_info(b).max_processes, 64);
    et_recorder_free(b);
    /* a mode and a group of the agent's choice */
    unlink(path);
    et_shared_options mine = o;
    mine.mode = 0640;
    mine.gid = (int32_t)getegid();
    ET_REQUIRE_OK(et_recorder_create_shared(path, &c, &mine, &b));
    ET_CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640 && st.st_gid == getegid());
    et_recorder_free(b);
    unlink(path);
}

/* ---- permissions: a real second uid ---- */

typedef struct perm_case {
    const char *path;
    uid_t uid;
    gid_t gid;
    int want;
} perm_case;

static void attach_as(void *arg) {
    const perm_case *pc = arg;
    ET_REQUIRE(setgroups(0, NULL) == 0);
    ET_REQUIRE(setgid(pc->gid) == 0);
    ET_REQUIRE(setuid(pc->uid) == 0);
    ET_REQUIRE(getuid() == pc->uid);
    et_recorder *rec = NULL;
    const int rc = et_recorder_attach(pc->path, &rec);
    ET_CHECKF(rc == pc->want, "uid %u gid %u: %s (want %s)", (unsigned)pc->uid,
              (unsigned)pc->gid, et_strerror(rc), et_strerror(pc->want));
    if (rc == ET_OK) {
        uint32_t id;
        ET_CHECK_RC(et_series_add(rec, "m", "1", "from-nobody", NULL, &id), ET_OK);
        ET_CHECK_RC(et_record(rec, id, 3.0), ET_OK);
        et_recorder_free(rec);
    }
}

ET_TEST(shared_outside_the_group_cannot_attach) {
    if (!test_as_root()) {
        printf("     skipped: needs root to switch to a second uid (nobody); not root here\n");
        return;
    }
    const uid_t nobody = 65534;
    const gid_t producers = 65534, other = 1; /* nogroup; daemon */
    /* the device's layout: a directory 0750 for the agent and the producers' group */
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/run-edgetelemetry", test_dir());
    ET_REQUIRE(mkdir(dir, 0750) == 0 || errno == EEXIST);
    ET_REQUIRE(chown(dir, 0, producers) == 0 && chmod(dir, 0750) == 0);
    snprintf(path, sizeof path, "%s/recorder", dir);
    et_config c = test_config(64, 2, 4);
    et_shared_options o = test_shared_options(4);
    o.gid = (int32_t)producers;
    et_recorder *agent = NULL;
    ET_REQUIRE_OK(et_recorder_create_shared(path, &c, &o, &agent));
    struct stat st;
    ET_REQUIRE(stat(path, &st) == 0);
    ET_CHECK_EQ_U(st.st_mode & 07777, 0660);
    ET_CHECK_EQ_U(st.st_gid, producers);
    ET_CHECK_EQ_U(st.st_uid, 0);

    perm_case in_group = {path, nobody, producers, ET_OK};
    perm_case outside = {path, nobody, other, ET_EACCES};
    pid_t pid = test_spawn(attach_as, &in_group);
    ET_CHECK_EQ_I(test_wait_child(pid, 30), 0);
    pid = test_spawn(attach_as, &outside);
    ET_CHECK_EQ_I(test_wait_child(pid, 30), 0);
    /* the directory is what stops it first; with a directory it can enter, the file's mode */
    char open_dir_path[600];
    snprintf(open_dir_path, sizeof open_dir_path, "%s/open-dir-recorder", test_dir());
    et_recorder *agent2 = NULL;
    ET_REQUIRE_OK(et_recorder_create_shared(open_dir_path, &c, &o, &agent2));
    perm_case file_only = {open_dir_path, nobody, other, ET_EACCES};
    pid = test_spawn(attach_as, &file_only);
    ET_CHECK_EQ_I(test_wait_child(pid, 30), 0);
    et_recorder_free(agent2);
    unlink(open_dir_path);

    /* what the producer in the group recorded reached the agent */
    test_totals t[4];
    test_totals_init(t, 4);
    test_close_ack(agent, t, 4);
    ET_CHECK_EQ_U(t[0].count, 1);
    ET_CHECK_EQ_D(t[0].sum, 3.0);
    ET_CHECK_EQ_U(test_shared_info(agent).processes, 0);
    et_recorder_free(agent);
    unlink(path);
    rmdir(dir);
}

/* ---- threads of one process, one mapping: what TSan can follow ---- */

typedef struct shared_thread {
    pthread_t th;
    et_recorder *rec;
    uint32_t index, series;
    uint64_t n, count[4];
    double sum[4];
} shared_thread;

static void *shared_thread_main(void *arg) {
    shared_thread *t = arg;
    double batch[200];
    uint32_t ids[4] = {0, 1, 2, 3};
    for (uint64_t i = 0; i < t->n;) {
        const uint32_t s = (uint32_t)((i + t->index) % t->series);
        const double v = (double)(1 + (i * 7 + t->index) % 64);
        if (i % 997 == 5) { /* larger than the ring: aggregated by the caller, journaled */
            for (int k = 0; k < 200; k++) batch[k] = v;
            ET_CHECK_EQ_I(et_record_many(t->rec, s, batch, 200), 200);
            t->count[s] += 200;
            t->sum[s] += 200 * v;
            i += 200;
        } else if (i % 11 == 4) {
            const double g[4] = {v, v, v, v};
            ET_CHECK_EQ_I(et_record_group(t->rec, ids, g, 4), 4);
            for (int k = 0; k < 4; k++) {
                t->count[k]++;
                t->sum[k] += v;
            }
            i += 4;
        } else {
            ET_CHECK_RC(et_record(t->rec, s, v), ET_OK);
            t->count[s]++;
            t->sum[s] += v;
            i++;
        }
    }
    return NULL;
}

typedef struct shared_closer {
    pthread_t th;
    et_recorder *agent;
    _Atomic bool stop;
    test_totals totals[4];
    uint64_t windows, repeats;
} shared_closer;

static void *shared_closer_main(void *arg) {
    shared_closer *c = arg;
    uint64_t i = 0;
    while (!atomic_load(&c->stop)) {
        et_window *w = NULL;
        ET_CHECK_RC(et_window_close(c->agent, &w), ET_OK);
        if (w == NULL) continue;
        const uint64_t seq = et_window_seq(w);
        if (i++ % 3 == 0) { /* not acknowledged yet: the same window comes back */
            et_window *again = NULL;
            ET_CHECK_RC(et_window_close(c->agent, &again), ET_OK);
            ET_CHECK_EQ_U(et_window_seq(again), seq);
            ET_CHECK_EQ_U(et_window_series_count(again), et_window_series_count(w));
            et_window_free(again);
            c->repeats++;
        }
        test_totals_add(c->totals, 4, w);
        et_window_free(w);
        ET_CHECK_RC(et_window_ack(c->agent, seq), ET_OK);
        c->windows++;
        test_sleep_us(200);
    }
    return NULL;
}

ET_TEST_FLAGS(shared_threads_record_while_the_agent_closes, ET_CONCURRENT) {
    char path[512];
    test_seg_path(path, sizeof path, "threads");
    /* 2 rings for 4 threads: two of them aggregate through the lock, journaled */
    et_recorder *agent = test_create_shared(path, 128, 2, 4, 2);
    ET_REQUIRE(agent);
    for (int s = 0; s < 4; s++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", s);
        test_series(agent, name);
    }
    ET_CHECK_RC(et_collector_start(agent, 100000), ET_OK);
    shared_closer *c = calloc(1, sizeof *c);
    ET_REQUIRE(c);
    c->agent = agent;
    test_totals_init(c->totals, 4);
    ET_REQUIRE(pthread_create(&c->th, NULL, shared_closer_main, c) == 0);
    enum { THREADS = 4 };
    shared_thread t[THREADS];
    memset(t, 0, sizeof t);
    for (uint32_t k = 0; k < THREADS; k++) {
        t[k].rec = agent;
        t[k].index = k;
        t[k].series = 4;
        t[k].n = TEST_SANITIZED ? 20000 : 300000;
        ET_REQUIRE(pthread_create(&t[k].th, NULL, shared_thread_main, &t[k]) == 0);
    }
    for (int k = 0; k < THREADS; k++) pthread_join(t[k].th, NULL);
    atomic_store(&c->stop, true);
    pthread_join(c->th, NULL);
    ET_CHECK_RC(et_collector_stop(agent), ET_OK);
    test_close_ack(agent, c->totals, 4);
    for (uint32_t s = 0; s < 4; s++) {
        uint64_t count = 0;
        double sum = 0;
        for (int k = 0; k < THREADS; k++) {
            count += t[k].count[s];
            sum += t[k].sum[s];
        }
        ET_CHECKF(c->totals[s].count == count, "series %u: %" PRIu64 " of %" PRIu64, s,
                  c->totals[s].count, count);
        ET_CHECK_EQ_D(c->totals[s].sum, sum);
        ET_CHECK_EQ_U(c->totals[s].buckets_total, count);
    }
    et_info info;
    ET_CHECK_RC(et_recorder_info(agent, &info), ET_OK);
    ET_CHECK_EQ_U(info.integrity_errors, 0);
    ET_CHECK(info.direct_values > 0);
    printf("     %" PRIu64 " windows (%" PRIu64 " closed twice before the ack), %" PRIu64
           " values through the lock\n",
           c->windows, c->repeats, info.direct_values);
    free(c);
    et_recorder_free(agent);
    unlink(path);
}

/* ---- the fragment at the top of docs/shared-recorder.md, compiled and run ---- */

/* The block between the markers below must be the doc's ```c block, line for line: a test
 * reads both (from the repository; an sdist has no docs/, and says so). */
static void docs_example(const char *path, et_config cfg, int *checks) {
    /* docs/shared-recorder.md: begin */
    /* the agent: one per device */
    et_shared_options opts;
    et_shared_options_default(&opts);                 /* 0660, the agent's group, 64 processes */
    et_recorder *agent;
    et_recorder_create_shared(path, &cfg, &opts, &agent); /* or open and recover it */
    et_collector_start(agent, 1000000);               /* drains, and reaps dead processes */

    /* a producer, in any process that may open the file */
    et_recorder *rec;
    uint32_t latency;
    et_recorder_attach(path, &rec);
    et_series_add_unit(rec, "resnet18-int8", "1.0", "latency", NULL, "ms", &latency);
    et_record(rec, latency, 3.2);                     /* the in-process fast path */
    et_recorder_free(rec);                            /* detach: the records stay */

    /* the agent, every period */
    et_window *w;
    if (et_window_close(agent, &w) == ET_OK) {        /* the same window until it is acked */
        /* store it durably, keyed by (segment id, et_window_seq(w)), then: */
        et_window_ack(agent, et_window_seq(w));
        et_window_free(w);
    }
    /* docs/shared-recorder.md: end */
    /* what the fragment did, checked */
    et_shared_info si;
    ET_CHECK_RC(et_recorder_shared_info(agent, &si), ET_OK);
    ET_CHECK_EQ_U(si.pending_seq, UINT64_MAX); /* acked */
    ET_CHECK_EQ_U(si.processes, 0);            /* detached */
    et_info info;
    ET_CHECK_RC(et_recorder_info(agent, &info), ET_OK);
    ET_CHECK_EQ_U(info.window_seq, 1);
    ET_CHECK_EQ_U(info.records_drained, 1);
    (*checks)++;
    et_recorder_free(agent);
}

/* The lines of the file at path between a line containing `from` and one containing `to`
 * (exclusive), each with its leading indent up to `indent` spaces removed. */
static char *lines_between(const char *path, const char *from, const char *to, int indent) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *out = calloc(1, cap), line[512];
    bool in = false;
    while (out && fgets(line, sizeof line, f)) {
        if (!in) {
            in = strstr(line, from) != NULL;
            continue;
        }
        if (strstr(line, to)) break;
        const char *p = line;
        for (int i = 0; i < indent && *p == ' '; i++) p++;
        const size_t k = strlen(p);
        if (n + k + 1 > cap) break;
        memcpy(out + n, p, k + 1);
        n += k;
    }
    fclose(f);
    return out;
}

ET_TEST(docs_shared_recorder_example) {
    char path[512];
    test_seg_path(path, sizeof path, "docs");
    et_config cfg;
    et_config_default(&cfg);
    int checks = 0;
    docs_example(path, cfg, &checks);
    ET_CHECK_EQ_I(checks, 1);
    unlink(path);
    /* the doc shows what ran: run from csrc/ (make -C csrc) in the repository */
    char *doc = lines_between("../docs/shared-recorder.md", "```c", "```", 0);
    char *code = lines_between("tests/test_shared.c", "docs/shared-recorder.md: begin",
                               "docs/shared-recorder.md: end", 4);
    if (doc == NULL || code == NULL) {
        printf("     the doc was not compared: ../docs/shared-recorder.md or "
               "tests/test_shared.c not found from here (an sdist has no docs/)\n");
    } else {
        ET_CHECKF(strcmp(doc, code) == 0, "docs/shared-recorder.md's example differs from "
                  "docs_example() in tests/test_shared.c:\n%s\n---\n%s", doc, code);
    }
    free(doc);
    free(code);
}
