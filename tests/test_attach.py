"""``Recorder.attach``: other processes record into the device agent's shared recorder.

A real segment file (``SharedRecorder``, the agent's side) in a temporary directory; the
producers are this process, its fork children (``multiprocessing``'s fork) and spawned
processes that attach by path.  Every count is exact; every bad input is a clear error.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pwd
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgetelemetry as et
from edgetelemetry._native import SEGMENT_LAYOUT
from edgetelemetry.recording import SharedRecorder

MODEL, VERSION = "resnet18", "1.0"


@pytest.fixture(name="segment")
def segment_fixture(tmp_path: Path) -> Iterator[tuple[SharedRecorder, str]]:
    path = str(tmp_path / "recorder")
    agent = SharedRecorder.create(path, max_threads=16, max_processes=8, collector_period=0.001)
    try:
        yield agent, path
    finally:
        agent.close()


def counts(agent: SharedRecorder) -> dict[str, tuple[int, float]]:
    """(count, sum) per metric of the agent's pending window, which is then acknowledged."""
    snap = agent.snapshot()
    agent.ack(snap.sources[-1].seq_last)
    return {s.metric: (s.count, s.sum) for s in snap.series}


def test_every_record_path_of_an_attached_recorder_reaches_the_agent(segment) -> None:
    agent, path = segment
    rec = et.Recorder.attach(path)
    assert rec.attached and rec.segment_path == path
    lat = rec.histogram("latency", unit="ms", model=MODEL, version=VERSION)
    conf = rec.histogram("confidence", model=MODEL, version=VERSION)
    for _ in range(5000):  # more than a ring: the producer drains its own full ring
        lat.record(2.0)
    group = rec.group(lat, conf)
    group.record(4.0, 0.5)
    group.record_since(group.start(), 0.25)
    assert conf.record_many(array("d", [1.0] * 3000)) == 3000
    assert conf.record_many([1.0, "x", 2.0]) == 2  # the "x" is counted as rejected

    with lat.time():
        pass

    @lat.time()
    def timed() -> None:
        pass

    @lat.time()
    async def timed_async() -> None:
        await asyncio.sleep(0)

    timed()
    asyncio.run(timed_async())
    got = counts(agent)
    assert got["latency"][0] == 5000 + 2 + 3
    assert got["confidence"] == (1 + 1 + 3000 + 2, 0.5 + 0.25 + 3000 + 3.0)
    rec.close()


def test_windows_are_the_agents_and_close_detaches(segment) -> None:
    agent, path = segment
    rec = et.Recorder.attach(path)
    h = rec.histogram("latency", unit="ms", model=MODEL, version=VERSION)
    h.record(1.0)
    for call in (rec.snapshot, rec.drain):
        with pytest.raises(et.NotOwnerError, match="closed by the device agent"):
            call()
    assert rec.shared_info()["processes"] == 1
    assert rec.close() is None  # detached: the record stays for the agent
    assert agent.shared_info()["processes"] == 0
    h.record(5.0)  # a detached handle does nothing
    assert counts(agent) == {"latency": (1, 1.0)}
    with pytest.raises(ValueError, match="private recorder"):
        et.Recorder().shared_info()


def test_names_are_checked_against_every_series_of_the_segment(segment, tmp_path) -> None:
    agent, path = segment
    # another process registers "latency" in ms (and records into it)
    other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import edgetelemetry as et
        rec = et.Recorder.attach({path!r})
        rec.histogram("latency", unit="ms", model={MODEL!r}, version={VERSION!r}).record(3.0)
        rec.close()
        """)], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    rec = et.Recorder.attach(path)
    # the same series from this process: the same id; another unit: refused
    same = rec.histogram("latency", unit="ms", model=MODEL, version=VERSION)
    same.record(1.0)
    with pytest.raises(et.UnitConflictError, match="registered with unit 'ms'"):
        rec.histogram("latency", unit="s", model=MODEL, version=VERSION)
    # the heartbeat's names would collide with the other process's series: refused
    with pytest.raises(et.NameClashError, match="'latency' \\(unit 'ms'\\)") as clash:
        rec.histogram("latency-ms", model=MODEL, version=VERSION)
    assert clash.value.existing == (MODEL, VERSION, "latency", None, "ms")
    with pytest.raises(ValueError, match="model"):  # the naming rules, before the segment
        rec.histogram("latency", model="x", version=VERSION)
    assert counts(agent) == {"latency": (2, 4.0)}
    rec.close()


def _pool_work(n: int) -> int:
    assert _POOL_RECORDER is not None
    h = _POOL_RECORDER.histogram("latency", unit="ms", model=MODEL, version=VERSION)
    for _ in range(n):
        h.record(1.0)
    return os.getpid()


_POOL_RECORDER: et.Recorder | None = None


def test_fork_children_record_through_slots_of_their_own(segment) -> None:
    global _POOL_RECORDER
    agent, path = segment
    rec = et.Recorder.attach(path)
    rec.histogram("latency", unit="ms", model=MODEL, version=VERSION).record(1.0)
    _POOL_RECORDER = rec
    try:
        with multiprocessing.get_context("fork").Pool(3) as pool:
            pids = pool.map(_pool_work, [4000] * 6)
    finally:
        _POOL_RECORDER = None
    assert len(set(pids)) >= 2  # several processes took part
    assert counts(agent) == {"latency": (1 + 6 * 4000, 1 + 6 * 4000.0)}
    info = agent.shared_info()
    assert info["attaches"] >= 1 + len(set(pids))  # each child took a slot of its own
    assert info["slotless"] == 0
    rec.close()


def _spawned(path: str, n: int) -> int:
    rec = et.Recorder.attach(path)  # a spawned process attaches by path itself
    h = rec.histogram("latency", unit="ms", model=MODEL, version=VERSION)
    for _ in range(n):
        h.record(2.0)
    rec.close()
    return n


def test_spawned_processes_attach_by_path(segment) -> None:
    agent, path = segment
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = pool.starmap(_spawned, [(path, 3000)] * 4)
    assert counts(agent) == {"latency": (sum(done), 2.0 * sum(done))}


def test_a_killed_producer_loses_nothing_it_recorded(segment) -> None:
    agent, path = segment
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, edgetelemetry as et
        rec = et.Recorder.attach({path!r})
        h = rec.histogram("latency", unit="ms", model={MODEL!r}, version={VERSION!r})
        for _ in range(1000):  # fewer than a ring: nothing drained by the producer itself
            h.record(1.0)
        print("recorded", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "recorded"
    child.kill()
    child.wait()
    deadline = time.monotonic() + 10
    while agent.shared_info()["processes"] and time.monotonic() < deadline:
        time.sleep(0.01)  # the collector reaps the dead process's slot
    info = agent.shared_info()
    assert info["processes"] == 0 and info["processes_reaped"] == 1
    assert counts(agent) == {"latency": (1000, 1000.0)}


# -- bad input: each a clear error for the producer; the agent keeps serving the others -------


def test_missing_and_foreign_paths(tmp_path: Path) -> None:
    missing = tmp_path / "no-agent-here"
    with pytest.raises(et.NoSegmentError, match="start the agent") as err:
        et.Recorder.attach(missing)
    assert err.value.path == str(missing)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a segment\n" * 100)
    for path in (foreign, tmp_path):
        with pytest.raises(et.NotASegmentError, match="not an edgetelemetry shared recorder"):
            et.Recorder.attach(path)


def test_another_layout_version_names_both(segment, tmp_path: Path) -> None:
    agent, path = segment
    old = tmp_path / "old-layout"
    data = bytearray(Path(path).read_bytes())
    data[8:12] = struct.pack("=I", SEGMENT_LAYOUT - 1)  # the header's layout version
    old.write_bytes(bytes(data))
    with pytest.raises(et.LayoutMismatchError) as err:
        et.Recorder.attach(old)
    assert err.value.file_layout == SEGMENT_LAYOUT - 1
    assert err.value.library_layout == SEGMENT_LAYOUT
    assert (f"layout {SEGMENT_LAYOUT - 1}, this edgetelemetry reads layout {SEGMENT_LAYOUT}"
            in str(err.value))
    assert "install the agent's version here" in str(err.value)


def test_a_full_process_table_is_refused_counted_and_the_others_record(tmp_path: Path) -> None:
    path = str(tmp_path / "recorder")
    agent = SharedRecorder.create(path, max_processes=2, collector_period=0.001)
    try:
        holders = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, edgetelemetry as et
            rec = et.Recorder.attach({path!r})
            rec.histogram("latency", unit="ms", model={MODEL!r}, version={VERSION!r}).record(1)
            print("in", flush=True)
            sys.stdin.read()
            rec.close()
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for p in holders:
            assert p.stdout is not None and p.stdout.readline().strip() == "in"
        for _ in range(3):
            with pytest.raises(et.ProcessTableFullError, match="all 2 process slots") as err:
                et.Recorder.attach(path)
            assert "raise max_processes" in str(err.value)
        assert agent.shared_info()["attach_refusals"] == 3
        for p in holders:
            p.communicate("", timeout=30)
            assert p.returncode == 0
        assert counts(agent) == {"latency": (2, 2.0)}  # the agent served the others
        rec = et.Recorder.attach(path)  # slots given back: attaching works again
        rec.close()
    finally:
        agent.close()


def test_a_segment_truncated_on_disk(segment, tmp_path: Path) -> None:
    agent, path = segment
    cut = tmp_path / "cut"
    cut.write_bytes(Path(path).read_bytes()[: 64 * 1024])
    with pytest.raises(et.SegmentTruncatedError, match="truncated") as err:
        et.Recorder.attach(cut)
    assert "65536 of" in str(err.value)
    rec = et.Recorder.attach(path)  # the real one still serves
    rec.histogram("latency", unit="ms", model=MODEL, version=VERSION).record(1.0)
    rec.close()
    assert counts(agent) == {"latency": (1, 1.0)}


def test_truncated_under_the_agent_is_replaced_and_counted(segment) -> None:
    agent, path = segment
    old_id = agent.recorder_id
    os.truncate(path, 4096)
    assert agent.renew_if_truncated()
    info = agent.shared_info()
    assert info["segments_replaced"] == 1 and agent.recorder_id != old_id
    assert not agent.renew_if_truncated()
    rec = et.Recorder.attach(path)  # producers attach again to the fresh one
    rec.histogram("latency", unit="ms", model=MODEL, version=VERSION).record(7.0)
    rec.close()
    assert counts(agent) == {"latency": (1, 7.0)}


def _attach_as(path: str, uid: int, gids: list[int]) -> str:
    """Attach in a fork child running as ``uid`` with groups ``gids`` (the interpreter stays
    the parent's: another user may not be able to start it); what happened, as text."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:
            os.setgroups(gids[1:])
            os.setgid(gids[0])
            os.setuid(uid)
            try:
                et.Recorder.attach(path).close()
                answer = "attached"
            except et.SegmentPermissionError as exc:
                answer = f"{exc.group}|{exc}"
            os.write(write_fd, answer.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as f:
        return f.read().decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a producer as another user")
def test_a_process_outside_the_group_cannot_attach() -> None:
    import grp
    import tempfile

    nobody = pwd.getpwnam("nobody")
    group = grp.getgrnam("adm")  # a group nobody is not in
    top = tempfile.mkdtemp(prefix="et-perm-")
    os.chmod(top, 0o755)
    run_dir = os.path.join(top, "run")
    os.mkdir(run_dir, 0o750)
    os.chown(run_dir, 0, group.gr_gid)
    path = os.path.join(run_dir, "recorder")
    agent = SharedRecorder.create(path, gid=group.gr_gid, collector_period=None)
    try:
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == group.gr_gid
        outside = _attach_as(path, nobody.pw_uid, [nobody.pw_gid])
        name, _, message = outside.partition("|")
        assert name == "adm", outside
        assert "permission denied" in message
        assert "add this process's user 'nobody' to group 'adm'" in message
        assert _attach_as(path, nobody.pw_uid, [nobody.pw_gid, group.gr_gid]) == "attached"
    finally:
        agent.close()
        shutil.rmtree(top, ignore_errors=True)
