"""fork(): the child gets a working recorder holding only what it records itself."""

import os
import time

import pytest

import edgetelemetry as et

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork only")


def test_child_records_alone_and_parent_keeps_its_own() -> None:
    with et.Recorder(collector_period=0.002) as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        for _ in range(100):
            h.record(1.0)  # pending in the ring at fork time
        parent_id = rec.recorder_id
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report through the pipe, never return into pytest
            code = 1
            try:
                for _ in range(7):
                    h.record(2.0)
                time.sleep(0.02)  # the restarted collector drains in the background
                snap = rec.snapshot()
                s = snap.series[0]
                ok = (s.count == 7 and s.min == 2.0 and rec.recorder_id != parent_id
                      and rec.info()["collector_period_ns"] > 0)
                os.write(write_fd, f"{s.count} {s.min} {ok}".encode())
                code = 0 if ok else 2
            finally:
                os._exit(code)
        os.close(write_fd)
        _, status = os.waitpid(pid, 0)
        report = os.read(read_fd, 100).decode()
        os.close(read_fd)
        assert os.WEXITSTATUS(status) == 0, report
        s = rec.snapshot().series[0]
        assert s.count == 100 and s.max == 1.0, "the parent keeps its records, once"
