"""The Agent over the device's shared recorder: each window spooled once, then acknowledged.

Real segment, real spool, real boto3 to a real endpoint (``EndpointServer``).  The crash
between the spool and the acknowledgement is a real process exit at that point; a lock held
too long and a failed append are played by making the call fail once (the core's own tests
hold real locks: csrc/tests/test_shared.c).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stored_rows import stored_rows
from test_agent import AKID, DEVICE, FLEET, SECRET, make_agent, server_fixture  # noqa: F401

import edgetelemetry as et
from edgetelemetry import Snapshot
from edgetelemetry.agent.spool import Spool, SpoolError
from edgetelemetry.errors import LockTimeoutError
from edgetelemetry.recording import SharedRecorder
from edgetelemetry.server import EndpointServer

MODEL, VERSION = "resnet18", "1.0"


@pytest.fixture(name="shared")
def shared_fixture(tmp_path: Path) -> Iterator[SharedRecorder]:
    rec = SharedRecorder.create(tmp_path / "recorder", collector_period=0.001)
    try:
        yield rec
    finally:
        rec.close()


def produce(path: str, n: int, value: float = 1.0) -> None:
    rec = et.Recorder.attach(path)
    h = rec.histogram("latency", unit="ms", model=MODEL, version=VERSION)
    for _ in range(n):
        h.record(value)
    rec.close()


def spooled_windows(spool_dir: Path) -> list[tuple[str, int, int]]:
    """(segment id, window seq, latency count) of every record in the spool."""
    spool = Spool(spool_dir, fsync="never", sinks=("sagemaker-edge",))
    try:
        out = []
        for record in spool.pending(sink="sagemaker-edge"):
            snap = Snapshot.from_msgpack(record.payload)
            src = snap.sources[-1]
            count = sum(s.count for s in snap.series)
            out.append((src.recorder_id, src.seq_last, count))
        return out
    finally:
        spool.close()


def stored(store_path: str, metric: str, model: str | None = MODEL) -> list[float]:
    return [r.value for r in stored_rows(store_path)
            if r.metric == metric and r.model == model and r.value is not None]


def test_windows_reach_the_endpoint_once_with_the_shared_figures(
        tmp_path: Path, server: EndpointServer, shared: SharedRecorder) -> None:
    path = shared.segment_path
    assert path is not None
    agent = make_agent(tmp_path, server.url, shared)
    try:
        produce(path, 3000)
        agent.tick()
        produce(path, 500, 2.0)
        agent.tick()
        agent.tick()  # an empty window
        figures = agent.stats()
    finally:
        agent.close()
    assert sum(stored(server.store.path, "latency-ms-count")) == 3500
    assert sum(stored(server.store.path, "latency-ms-sum")) == 4000.0
    # every window once, under the segment's id
    seqs = stored(server.store.path, "window-seq", None)
    assert sorted(seqs) == sorted(set(seqs)) and len(seqs) >= 3
    for name in ("processes-attached", "process-slots", "process-attaches", "attach-refusals",
                 "processes-slotless", "processes-reaped", "lock-steals", "journal-replays",
                 "lock-timeouts", "agent-generation", "segment-truncations",
                 "window-close-timeouts", "windows-found-spooled"):
        assert name in figures, name
    assert figures["process-attaches"] == 2 and figures["processes-attached"] == 0
    assert figures["agent-generation"] == 1
    assert stored(server.store.path, "process-attaches", None)  # sent as AgentMetrics
    assert shared.shared_info()["pending_seq"] > 1 << 63  # all acknowledged


def test_a_window_spooled_by_an_agent_killed_before_its_ack_is_not_spooled_again(
        tmp_path: Path, server: EndpointServer) -> None:
    path = str(tmp_path / "recorder")
    spool_dir = tmp_path / "spool"
    # the first agent: spools a window and dies (os._exit) where it would acknowledge it
    crash = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        import edgetelemetry as et
        from edgetelemetry.agent import Agent
        from edgetelemetry.recording import SharedRecorder
        rec = SharedRecorder.create({path!r}, collector_period=0.001)
        producer = et.Recorder.attach({path!r})
        h = producer.histogram("latency", unit="ms", model={MODEL!r}, version={VERSION!r})
        for _ in range(1234):
            h.record(1.0)
        producer.close()
        SharedRecorder.ack = lambda self, seq: os._exit(9)  # killed between spool and ack
        Agent(rec, device_name={DEVICE!r}, fleet={FLEET!r}, endpoint_url={server.url!r},
              spool_dir={str(spool_dir)!r}, fsync="never").tick(send=False)
        """)], capture_output=True, text=True, timeout=120)
    assert crash.returncode == 9, crash.stderr
    (first,) = spooled_windows(spool_dir)
    assert first[1:] == (0, 1234)

    rec = SharedRecorder.create(path, collector_period=0.001)  # the next agent
    try:
        assert rec.shared_info()["pending_seq"] == 0  # the window is still pending
        agent = make_agent(tmp_path, server.url, rec)
        try:
            produce(path, 10)
            agent.tick()
            agent.tick()
            figures = agent.stats()
        finally:
            agent.close()
        assert figures["windows-found-spooled"] == 1 and figures["agent-generation"] == 2
    finally:
        rec.close()
    assert sum(stored(server.store.path, "latency-ms-count")) == 1234 + 10
    seqs = stored(server.store.path, "window-seq", None)
    assert sorted(seqs) == sorted(set(seqs))


def test_a_close_that_times_out_is_tried_at_the_next_tick(
        tmp_path: Path, server: EndpointServer, shared: SharedRecorder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = shared.segment_path
    assert path is not None
    agent = make_agent(tmp_path, server.url, shared)
    real = SharedRecorder.snapshot
    fail = [True]

    def snapshot_once_timed_out(self: SharedRecorder) -> Snapshot:
        if fail.pop() if fail else False:
            raise LockTimeoutError(-21, "a live process held the lock", path)
        return real(self)

    monkeypatch.setattr(SharedRecorder, "snapshot", snapshot_once_timed_out)
    try:
        produce(path, 700)
        assert agent.tick().spooled_seq is None  # gave up: nothing spooled, nothing lost
        assert agent.tick().spooled_seq is not None
        assert agent.stats()["window-close-timeouts"] == 1
    finally:
        agent.close()
    assert sum(stored(server.store.path, "latency-ms-count")) == 700


def test_a_failed_append_leaves_the_window_in_the_segment_not_in_memory(
        tmp_path: Path, server: EndpointServer, shared: SharedRecorder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = shared.segment_path
    assert path is not None
    agent = make_agent(tmp_path, server.url, shared)
    real = Spool.append
    fail = [True]

    def append_fails_once(self: Spool, payload: Any) -> int:
        if fail and fail.pop():
            raise SpoolError("disk full")
        return real(self, payload)

    monkeypatch.setattr(Spool, "append", append_fails_once)
    try:
        produce(path, 300)
        assert agent.tick().spooled_seq is None
        produce(path, 5)  # recorded into the next window meanwhile
        first = agent.tick()
        assert first.window is not None and first.window[1] == 0  # the same window again
        agent.tick()
    finally:
        agent.close()
    counts = stored(server.store.path, "latency-ms-count")
    assert sum(counts) == 305 and 300 in counts  # nothing merged, nothing doubled
