/* -DET_DISABLE: every call, the shared recorder's included, is an inline no-op that succeeds,
 * with no library behind it (this file's calls never reach the core linked into the runner:
 * the header maps them to et__off_* inlines). */
#define ET_DISABLE
#include "et_test.h"

ET_TEST(disabled_build_makes_every_call_a_no_op) {
    et_recorder *rec = (et_recorder *)&rec;
    et_shared_options o;
    memset(&o, 0xff, sizeof o);
    et_shared_options_default(&o);
    ET_CHECK_EQ_U(o.max_processes, 0);
    ET_CHECK_RC(et_recorder_create_shared("/nonexistent/agent", NULL, &o, &rec), ET_OK);
    ET_CHECK(rec == NULL);
    rec = (et_recorder *)&rec;
    ET_CHECK_RC(et_recorder_attach("/nonexistent/recorder", &rec), ET_OK);
    ET_CHECK(rec == NULL);
    uint32_t id = 7;
    ET_CHECK_RC(et_series_add_unit(rec, "m", "1", "x", NULL, "ms", &id), ET_OK);
    ET_CHECK_EQ_U(id, 0);
    ET_CHECK_RC(et_record(rec, id, 1.0), ET_OK);
    et_window *w = (et_window *)&w;
    ET_CHECK_RC(et_window_close(rec, &w), ET_OK);
    ET_CHECK(w == NULL);
    ET_CHECK_RC(et_window_ack(rec, 0), ET_OK);
    ET_CHECK_RC(et_shared_reap(rec), ET_OK);
    et_shared_info si;
    memset(&si, 0xff, sizeof si);
    ET_CHECK_RC(et_recorder_shared_info(rec, &si), ET_OK);
    ET_CHECK_EQ_U(si.processes, 0);
    et_segment_info gi;
    memset(&gi, 0xff, sizeof gi);
    ET_CHECK_RC(et_segment_inspect("/nonexistent/recorder", &gi), ET_OK);
    ET_CHECK_EQ_U(gi.layout_version, 0);
    char buf[ET_SERIES_NAMES_MAX];
    ET_CHECK_RC(et_series_names(rec, 0, buf, sizeof buf), ET_ENOSERIES);
    et_recorder_free(rec);
}
