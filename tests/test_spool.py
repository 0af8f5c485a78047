"""Spool: framing, cursor, recovery, bounds, permissions and dead letters, on real files."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

import edgetelemetry.agent.spool as spool_mod
from edgetelemetry.agent.spool import (
    FRAME_HEADER_SIZE,
    RecordTooLargeError,
    Spool,
    SpoolClosedError,
    SpoolError,
    SpoolLockedError,
    SpoolPermissionError,
)
from edgetelemetry.agent.spool.frames import encode_frame, scan
from edgetelemetry.errors import EdgeTelemetryError

FAST: dict[str, Any] = {"fsync": "never", "max_age_s": None}


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.log"))


def payloads(s: Spool) -> list[bytes]:
    return [r.payload for r in s.pending()]


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- API and round trip ----------------------------------------------------------------------


def test_module_surface() -> None:
    assert set(spool_mod.__all__) >= {"Spool", "Record", "SpoolError", "RecordTooLargeError"}
    assert issubclass(SpoolError, EdgeTelemetryError)
    assert issubclass(RecordTooLargeError, ValueError)
    for name in spool_mod.__all__:
        assert hasattr(spool_mod, name)


def test_round_trip_oldest_first(tmp_path: Path) -> None:
    clock = FakeClock()
    with Spool(tmp_path / "s", clock=clock, **FAST) as s:
        data = [b"", b"a", bytes(range(256)), b"x" * 5000, bytearray(b"ba"), memoryview(b"mv")]
        seqs = []
        for p in data:
            clock.now += 1
            seqs.append(s.append(p))
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        recs = s.pending()
        assert [r.seq for r in recs] == seqs
        assert [r.payload for r in recs] == [bytes(p) for p in data]
        assert [r.timestamp for r in recs] == [1_000_001.0 + i for i in range(len(data))]
        assert all(type(r.payload) is bytes for r in recs)
        assert [r.seq for r in s.pending(limit=2)] == seqs[:2]
        assert s.pending(limit=0) == []
        assert s.newest() == recs[-1]
        st_ = s.stats()
        assert st_["records"] == len(data) and st_["oldest_unsent_age_s"] == len(data) - 1
        assert st_["bytes"] == sum(p.stat().st_size for p in segments(tmp_path / "s"))
        with pytest.raises(TypeError):
            s.append("text")  # type: ignore[arg-type]


def test_out_of_order_acks_newest_first_then_backlog(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, segment_bytes=100, **FAST) as s:
        seqs = [s.append(b"%d" % i * 10) for i in range(12)]
        newest = s.newest()
        assert newest is not None and newest.seq == seqs[-1]
        assert s.ack(newest.seq) is True
        assert s.ack(newest.seq) is False  # idempotent
        assert [r.seq for r in s.pending()] == seqs[:-1]
        assert s.ack(seqs[5]) and s.ack(seqs[0])
        assert [r.seq for r in s.pending()] == seqs[1:5] + seqs[6:-1]
        assert s.ack_upto(seqs[3]) == 3
        assert s.ack_upto(seqs[3]) == 0
        assert [r.seq for r in s.pending()] == [seqs[4]] + seqs[6:-1]
    with Spool(d, segment_bytes=100, **FAST) as s:
        assert [r.seq for r in s.pending()] == [seqs[4]] + seqs[6:-1]
        cursor = (d / "cursor").read_bytes().split(b"\n", 1)[1]
        doc = json.loads(cursor)
        assert doc["acked_upto"] == seqs[3]
        assert doc["acked_above"] == [[seqs[5], seqs[5]], [seqs[-1], seqs[-1]]]


def test_ack_of_unissued_seq_is_an_error(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", **FAST) as s:
        seq = s.append(b"x")
        for bad in (seq + 1, 0, -1):
            with pytest.raises(ValueError):
                s.ack(bad)
        with pytest.raises(ValueError):
            s.ack_upto(seq + 10)
        with pytest.raises(ValueError):
            s.ack(True)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_restart_resends_nothing_acked_and_skips_nothing(tmp_path: Path, policy: str) -> None:
    d = tmp_path / "s"
    opts: dict[str, Any] = {"fsync": policy, "segment_bytes": 64, "max_age_s": None}
    expect: dict[int, bytes] = {}
    issued: list[int] = []
    for round_ in range(4):
        with Spool(d, **opts) as s:
            assert {r.seq: r.payload for r in s.pending()} == expect
            for i in range(7):
                p = b"r%d-%d" % (round_, i)
                seq = s.append(p)
                assert not issued or seq > issued[-1]
                issued.append(seq)
                expect[seq] = p
            for seq in sorted(expect)[::3]:
                assert s.ack(seq)
                del expect[seq]
            assert {r.seq: r.payload for r in s.pending()} == expect
    with Spool(d, **opts) as s:
        s.ack_upto(max(expect))
        assert s.pending() == [] and s.stats()["files"] <= 1
    # Fully drained: every segment but possibly the active one is gone, and seqs keep growing.
    with Spool(d, **opts) as s:
        assert s.stats()["files"] == 0
        assert s.append(b"z") > issued[-1]


def test_fully_acked_segments_are_deleted(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, segment_bytes=FRAME_HEADER_SIZE + 4, **FAST) as s:
        seqs = [s.append(b"%04d" % i) for i in range(5)]
        assert len(segments(d)) == 5
        s.ack(seqs[2])
        assert len(segments(d)) == 4
        s.ack_upto(seqs[3])
        assert len(segments(d)) == 1
        s.ack(seqs[4])  # the active segment stays until it is rotated
        assert [p.name for p in segments(d)] == [f"seg-{seqs[4]:016x}.log"]
        nxt = s.append(b"next")
        assert [p.name for p in segments(d)] == [f"seg-{nxt:016x}.log"]
        assert s.stats()["bytes"] == segments(d)[0].stat().st_size


# -- recovery ----------------------------------------------------------------------------------


def test_torn_tail_at_every_offset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = [b"first", b"second" * 3, bytes(range(40))]
    with Spool(src, **FAST) as s:
        issued = [s.append(p) for p in data]
    (seg,) = segments(src)
    full = seg.read_bytes()
    last_start = len(full) - (FRAME_HEADER_SIZE + len(data[-1]))
    for cut in range(last_start, len(full)):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        (d / seg.name).write_bytes(full[:cut])
        with Spool(d, **FAST) as s:
            recs = s.pending()
            assert [r.payload for r in recs] == data[:-1], cut
            st_ = s.stats()
            assert st_["torn_tails"] == (1 if cut > last_start else 0)
            assert st_["corruption_events"] == 0
            assert st_["quarantined_bytes"] == cut - last_start
            new = s.append(b"after")
            assert new > issued[-1]
        with Spool(d, **FAST) as s:
            assert payloads(s) == data[:-1] + [b"after"]
            assert s.stats()["torn_tails"] == (1 if cut > last_start else 0)
        shutil.rmtree(d)


def test_zero_filled_tail_is_torn(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        s.append(b"kept")
    (seg,) = segments(d)
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)  # what a lost file extension looks like after power loss
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"kept"]
        assert s.stats()["torn_tails"] == 1 and s.stats()["corruption_events"] == 0
    assert seg.stat().st_size == FRAME_HEADER_SIZE + 4


# Offsets inside record 5's frame: magic, length, seq, timestamp, payload crc, header crc, payload.
@pytest.mark.parametrize("where", [0, 5, 9, 17, 25, 29, FRAME_HEADER_SIZE + 3])
def test_corruption_in_the_middle_is_salvaged_around(tmp_path: Path, where: int) -> None:
    d = tmp_path / "s"
    data = [b"record-%02d" % i * 3 for i in range(10)]
    with Spool(d, **FAST) as s:
        seqs = [s.append(p) for p in data]
    (seg,) = segments(d)
    raw = bytearray(seg.read_bytes())
    frame = FRAME_HEADER_SIZE + len(data[0])
    start = 5 * frame
    raw[start + where] ^= 0x5A
    seg.write_bytes(bytes(raw))
    with Spool(d, **FAST) as s:
        recs = s.pending()
        assert [r.payload for r in recs] == data[:5] + data[6:]
        assert [r.seq for r in recs] == seqs[:5] + seqs[6:]
        st_ = s.stats()
        assert st_["corruption_events"] == 1 and st_["torn_tails"] == 0
        assert st_["quarantined_files"] == 1 and st_["quarantined_bytes"] == frame
        (q,) = (d / "quarantine").iterdir()
        assert q.read_bytes() == bytes(raw[start : start + frame])
        s.ack(seqs[7])
        s.append(b"more")
    with Spool(d, **FAST) as s:  # the segment was rewritten clean: no new events
        assert payloads(s) == data[:5] + data[6:7] + data[8:] + [b"more"]
        assert s.stats()["corruption_events"] == 1


def test_damaged_tail_of_an_older_segment_is_corruption(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, segment_bytes=3 * (FRAME_HEADER_SIZE + 2), **FAST) as s:
        [s.append(b"%02d" % i) for i in range(6)]
    first, second = segments(d)
    first.write_bytes(first.read_bytes()[:-5])
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"00", b"01", b"03", b"04", b"05"]
        assert s.stats()["corruption_events"] == 1 and s.stats()["torn_tails"] == 0


def test_garbage_files_never_block_startup(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        s.append(b"good")
    (d / "seg-00000000000000ff.log").write_bytes(os.urandom(3000))
    (d / "seg-0000000000000100.log").write_bytes(b"")
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"good"]
        assert s.stats()["corruption_events"] == 1
        assert s.stats()["quarantined_bytes"] == 3000
        assert s.stats()["files"] == 1
        s.append(b"after")
        assert payloads(s) == [b"good", b"after"]


@pytest.mark.parametrize("damage", ["missing", "garbage", "bad-crc", "bad-json"])
def test_lost_cursor_resends_rather_than_skips(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "s"
    with Spool(d, segment_bytes=1, **FAST) as s:  # one record per segment
        seqs = [s.append(b"%d" % i) for i in range(5)]
        s.ack_upto(seqs[2])
    cursor = d / "cursor"
    if damage == "missing":
        cursor.unlink()
    elif damage == "garbage":
        cursor.write_bytes(b"\x00\xff" * 20)
    elif damage == "bad-crc":
        cursor.write_bytes(cursor.read_bytes().replace(b'"acked_upto":3', b'"acked_upto":4'))
    else:
        body = b"{not json"
        crc = zlib.crc32(body)
        cursor.write_bytes(b"edgetelemetry-spool-cursor 1 %08x\n%s" % (crc, body))
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"3", b"4"]  # segments of acked records were already deleted
        assert s.stats()["cursor_resets"] == 1
        assert s.stats()["corruption_events"] == (0 if damage == "missing" else 1)
        assert s.append(b"new") > seqs[-1]


def test_lost_cursor_with_partially_acked_segment_resends_it(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        seqs = [s.append(b"%d" % i) for i in range(5)]
        s.ack_upto(seqs[2])
    (d / "cursor").unlink()
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"%d" % i for i in range(5)]  # duplicates, never a gap


def test_damage_found_while_running_is_quarantined(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        seqs = [s.append(b"payload-%d" % i) for i in range(3)]
        (seg,) = segments(d)
        with open(seg, "r+b") as f:
            f.seek(FRAME_HEADER_SIZE + len(b"payload-0") + FRAME_HEADER_SIZE + 2)
            f.write(b"#")
        assert [r.seq for r in s.pending()] == [seqs[0], seqs[2]]
        assert s.stats()["corruption_events"] == 1
        assert s.dead_letter(seqs[1], "gone") is False


def test_fresh_spool_is_not_a_cursor_reset(tmp_path: Path) -> None:
    d = tmp_path / "s"
    Spool(d, **FAST).close()
    with Spool(d, **FAST) as s:
        assert s.stats()["cursor_resets"] == 0
        assert s.append(b"x") >= 1


# -- permissions and ownership -----------------------------------------------------------------


def _modes(d: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(d.stat().st_mode)}
    for p in d.rglob("*"):
        out[str(p.relative_to(d))] = stat.S_IMODE(p.lstat().st_mode)
    return out


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_private_permissions_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    d = tmp_path / "s"
    old = os.umask(umask)
    try:
        with Spool(d, segment_bytes=40, **FAST) as s:
            seqs = [s.append(b"x" * 5) for _ in range(3)]
            s.dead_letter(seqs[0], "bad")
        (d / segments(d)[-1].name).write_bytes(segments(d)[-1].read_bytes()[:-3])
        Spool(d, **FAST).close()  # quarantines the torn tail
    finally:
        os.umask(old)
    modes = _modes(d)
    assert any(k.startswith("quarantine/") for k in modes)
    assert any(k.startswith("dead/") for k in modes)
    for name, mode in modes.items():
        is_dir = name in (".", "quarantine", "dead")
        assert mode == (0o700 if is_dir else 0o600), (name, oct(mode))


def test_existing_wide_permissions_are_tightened(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        s.append(b"x")
    os.chmod(d, 0o755)
    for p in d.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"x"]
    for name, mode in _modes(d).items():
        assert mode & 0o077 == 0, name


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_foreign_owned_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    os.chown(d, 54321, 54321)
    with pytest.raises(SpoolPermissionError, match="uid 54321"):
        Spool(d, **FAST)


def test_unusable_entries_are_moved_aside_not_followed(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        s.append(b"kept")
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not truncate me")
    os.symlink(victim, d / "seg-00000000000000f0.log")
    (d / "seg-00000000000000f1.log").mkdir()
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"kept"]
        assert s.stats()["corruption_events"] == 2
    assert victim.read_bytes() == b"do not truncate me"
    assert len(list((d / "quarantine").glob("*.unusable"))) == 2
    assert not (d / "seg-00000000000000f0.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_foreign_owned_segment_is_moved_aside(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        s.append(b"kept")
    planted = d / "seg-00000000000000f0.log"
    planted.write_bytes(b"x")
    os.chown(planted, 54321, 54321)
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"kept"] and s.stats()["corruption_events"] == 1


def test_segment_deleted_underneath_is_counted_not_raised(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, segment_bytes=FRAME_HEADER_SIZE + 1, **FAST) as s:
        seqs = [s.append(b"%d" % i) for i in range(3)]
        os.unlink(d / f"seg-{seqs[0]:016x}.log")
        assert payloads(s) == [b"1", b"2"]
        assert s.stats()["corruption_events"] == 1 and s.stats()["files"] == 2
        assert s.dead_letter(seqs[0], "x") is False


# -- single owner --------------------------------------------------------------------------------


def test_second_owner_gets_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "s"
    s = Spool(d, **FAST)
    with pytest.raises(SpoolLockedError, match="already open"):
        Spool(d, **FAST)
    code = "import sys; from edgetelemetry.agent.spool import Spool; Spool(sys.argv[1])"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(d)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=30,
    )
    assert proc.returncode != 0 and "SpoolLockedError" in proc.stderr
    assert str(os.getpid()) in proc.stderr
    s.close()
    s.close()
    with pytest.raises(SpoolClosedError):
        s.append(b"x")
    Spool(d, **FAST).close()


# -- bounds --------------------------------------------------------------------------------------


def test_byte_bound_evicts_oldest_and_counts(tmp_path: Path) -> None:
    d = tmp_path / "s"
    frame = FRAME_HEADER_SIZE + 10
    opts: dict[str, Any] = {"max_bytes": 6 * frame, "segment_bytes": 2 * frame, **FAST}
    with Spool(d, **opts) as s:
        seqs = [s.append(bytes([i]) * 10) for i in range(11)]
        recs = s.pending()
        assert [r.seq for r in recs] == seqs[-len(recs) :]  # a suffix: oldest went first
        lost = len(seqs) - len(recs)
        st_ = s.stats()
        assert st_["bytes"] <= 6 * frame
        assert st_["bytes"] == sum(p.stat().st_size for p in segments(d))
        assert st_["evicted_records"] == st_["evicted_by_size_records"] == lost > 0
        assert st_["evicted_bytes"] == 10 * lost and st_["evicted_by_age_records"] == 0
        # Acked records are not losses: ack the oldest pending, then force its segment out.
        # recs[0] and recs[1] share the oldest segment.
        s.ack(recs[0].seq)
        while recs[1].seq in [r.seq for r in s.pending()]:
            s.append(b"y" * 10)
        after = s.stats()
        assert after["evicted_records"] == lost + 1
        assert after["evicted_bytes"] == 10 * (lost + 1)
    with Spool(d, **opts) as s:  # counters are durable
        assert s.stats()["evicted_records"] == after["evicted_records"]


def test_lowering_the_byte_bound_applies_at_open(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, segment_bytes=100, **FAST) as s:
        [s.append(b"z" * 50) for _ in range(10)]
    with Spool(d, max_bytes=250, segment_bytes=100, **FAST) as s:
        assert s.stats()["bytes"] <= 250
        assert s.stats()["evicted_by_size_records"] == 10 - len(s.pending())


def test_record_larger_than_the_bound_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", max_bytes=100, fsync="never") as s:
        with pytest.raises(RecordTooLargeError, match="max_bytes=100"):
            s.append(b"x" * (100 - FRAME_HEADER_SIZE + 1))
        assert s.stats()["records"] == 0
        seq = s.append(b"x" * (100 - FRAME_HEADER_SIZE))
        assert [r.seq for r in s.pending()] == [seq]


def test_age_bound_evicts_oldest_with_a_fake_clock(tmp_path: Path) -> None:
    d = tmp_path / "s"
    clock = FakeClock(1000.0)
    opts: dict[str, Any] = {"max_age_s": 10.0, "clock": clock, "fsync": "never"}
    with Spool(d, segment_bytes=200, **opts) as s:
        seqs = []
        for i in range(10):
            clock.now = 1000.0 + i
            seqs.append(s.append(b"t%d" % i))
        clock.now = 1015.0  # cutoff 1005: records stamped 1000..1004 are too old
        assert [r.seq for r in s.pending()] == seqs[5:]
        st_ = s.stats()
        assert st_["evicted_by_age_records"] == st_["evicted_records"] == 5
        assert st_["evicted_bytes"] == 10 and st_["oldest_unsent_age_s"] == 10
        s.ack(seqs[9])
        clock.now = 1100.0
        assert s.pending() == []
        assert s.stats()["evicted_by_age_records"] == 9  # the acked one was not lost
    clock.now = 1200.0
    with Spool(d, **opts) as s:
        assert s.stats()["evicted_by_age_records"] == 9


def test_age_eviction_stays_oldest_first_when_the_clock_jumps(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    with Spool(tmp_path / "s", max_age_s=10.0, clock=clock, fsync="never") as s:
        s.append(b"old")
        clock.now = 1020.0
        s.append(b"young")
        clock.now = 990.0  # the clock stepped back (NTP)
        s.append(b"stepped-back")
        clock.now = 1015.0
        assert payloads(s) == [b"young", b"stepped-back"]


# -- dead letters --------------------------------------------------------------------------------


def test_dead_letter_moves_the_record_aside(tmp_path: Path) -> None:
    d = tmp_path / "s"
    clock = FakeClock(5000.0)
    with Spool(d, clock=clock, fsync="never") as s:
        seqs = [s.append(b"snap-%d" % i) for i in range(3)]
        assert s.dead_letter(seqs[1], "ValidationException: metric name too long") is True
        assert s.dead_letter(seqs[1], "again") is False
        assert [r.seq for r in s.pending()] == [seqs[0], seqs[2]]
        assert s.stats()["dead_letters"] == 1
    (f,) = (d / "dead").iterdir()
    meta, payload = f.read_bytes().split(b"\n", 1)
    assert payload == b"snap-1"
    assert json.loads(meta) == {
        "seq": seqs[1],
        "timestamp": 5000.0,
        "dead_lettered_at": 5000.0,
        "reason": "ValidationException: metric name too long",
    }
    with Spool(d, clock=clock, fsync="never") as s:
        assert [r.seq for r in s.pending()] == [seqs[0], seqs[2]]
        assert s.stats()["dead_letters"] == 1


def test_dead_letters_are_bounded(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, dead_letter_max_bytes=300, **FAST) as s:
        seqs = [s.append(b"p" * 100) for _ in range(5)]
        for seq in seqs:
            s.dead_letter(seq, "bad")
        kept = sorted(p.name for p in (d / "dead").iterdir())
        assert kept[-1] == f"dl-{seqs[-1]:016x}.rec"
        assert sum((d / "dead" / k).stat().st_size for k in kept) <= 300
        assert s.stats()["dead_letters_dropped"] == 5 - len(kept)


def test_quarantine_is_bounded(tmp_path: Path) -> None:
    d = tmp_path / "s"
    Spool(d, **FAST).close()
    for i in range(5):
        (d / f"seg-{i + 1:016x}.log").write_bytes(b"\x01" * 200)
        Spool(d, quarantine_max_bytes=500, **FAST).close()
    sizes = [p.stat().st_size for p in (d / "quarantine").iterdir()]
    assert sum(sizes) <= 500 and len(sizes) == 2
    with Spool(d, **FAST) as s:
        assert s.stats()["quarantined_files"] == 5


# -- fsync policy and write failures -------------------------------------------------------------


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_fsync_policy_is_honoured(tmp_path: Path, policy: str, monkeypatch: Any) -> None:
    calls: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        calls.append("data")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with Spool(tmp_path / "s", fsync=policy, batch_interval_s=3600, max_age_s=None) as s:
        s.append(b"first")  # creates the segment and reserves a seq block
        calls.clear()
        s.append(b"second")
        s.append(b"third")
        if policy == "always":
            assert calls == ["data", "data"]
        else:
            assert calls == []
        s.sync()
        assert calls[-1:] == ["data"]
        calls.clear()
        s.ack(1)
        assert calls == ([] if policy == "never" else ["file", "dir"])
        calls.clear()
    if policy == "never":
        assert calls == []


def test_new_segment_fsyncs_the_directory(tmp_path: Path, monkeypatch: Any) -> None:
    dirs: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            dirs.append("dir")
        real_fsync(fd)

    with Spool(tmp_path / "s", segment_bytes=40, max_age_s=None) as s:
        s.append(b"a" * 8)
        monkeypatch.setattr(os, "fsync", fsync)
        s.append(b"b" * 8)  # rotates: one directory fsync for the new name
        assert dirs == ["dir"]


def test_failed_write_stores_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    d = tmp_path / "s"
    s = Spool(d, **FAST)
    s.append(b"before")
    real_write = os.write
    state = {"n": 0}

    def flaky(fd: int, data: Any) -> int:
        state["n"] += 1
        if state["n"] == 1:
            return real_write(fd, bytes(data)[:10])  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", flaky)
    with pytest.raises(SpoolError, match="No space left"):
        s.append(b"lost" * 10)
    monkeypatch.setattr(os, "write", real_write)
    assert payloads(s) == [b"before"]
    s.append(b"after")
    assert payloads(s) == [b"before", b"after"]
    s.close()
    with Spool(d, **FAST) as s:
        assert payloads(s) == [b"before", b"after"]
        st_ = s.stats()
        assert st_["corruption_events"] == st_["torn_tails"] == 0


# -- threads -------------------------------------------------------------------------------------


def test_writer_and_sender_threads_account_exactly(tmp_path: Path) -> None:
    n = 400
    s = Spool(tmp_path / "s", segment_bytes=256, **FAST)
    acked: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(n):
                s.append(i.to_bytes(4, "big"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def sender() -> None:
        deadline = time.monotonic() + 20
        try:
            while len(acked) < n and time.monotonic() < deadline:
                first = s.newest()
                if first is not None and s.ack(first.seq):
                    acked.append(int.from_bytes(first.payload, "big"))
                for rec in s.pending(limit=7):
                    if s.ack(rec.seq):
                        acked.append(int.from_bytes(rec.payload, "big"))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=sender)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert sorted(acked) == list(range(n))
    assert s.stats()["records"] == 0 and s.stats()["files"] <= 1
    s.close()


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.binary(max_size=48), min_size=1, max_size=8),
    draw=st.data(),
)
def test_scan_salvages_every_untouched_record(data: list[bytes], draw: st.DataObject) -> None:
    frames = [encode_frame(i + 1, float(i), p) for i, p in enumerate(data)]
    blob = b"".join(frames)
    bounds, pos = [], 0
    for f in frames:
        bounds.append((pos, pos + len(f)))
        pos += len(f)
    start = draw.draw(st.integers(0, len(blob) - 1))
    end = draw.draw(st.integers(start + 1, min(len(blob), start + 40)))
    noise = draw.draw(st.binary(min_size=end - start, max_size=end - start))
    cut = draw.draw(st.integers(end, len(blob)))
    damaged = blob[:start] + noise + blob[end:cut]
    found, bad, _ = scan(damaged, 0)
    got = {
        f.seq: damaged[f.offset + FRAME_HEADER_SIZE : f.offset + FRAME_HEADER_SIZE + f.length]
        for f in found
    }
    for seq, payload in got.items():
        assert payload == data[seq - 1]  # never a wrong payload
    for i, (a, b) in enumerate(bounds):
        if (b <= start or a >= end) and b <= cut:
            assert got.get(i + 1) == data[i]  # nothing untouched is lost
    spans = sorted([(f.offset, f.offset + FRAME_HEADER_SIZE + f.length) for f in found] + bad)
    assert [a for a, _ in spans] == [0] + [b for _, b in spans[:-1]]  # they tile the file
    assert (spans[-1][1] if spans else 0) == len(damaged)


class SpoolModel(RuleBasedStateMachine):
    """append/ack/dead-letter/reopen against a dict of what must be pending."""

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="spool-model-")
        self.path = os.path.join(self.root, "s")
        self.spool = self._open()
        self.model: dict[int, bytes] = {}
        self.done: set[int] = set()
        self.last = 0

    def _open(self) -> Spool:
        return Spool(self.path, segment_bytes=120, fsync="never", max_age_s=None)

    @rule(payload=st.binary(max_size=60))
    def append(self, payload: bytes) -> None:
        seq = self.spool.append(payload)
        assert seq > self.last
        self.last = seq
        self.model[seq] = payload

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.model)))
        assert self.spool.ack(seq) is True
        del self.model[seq]
        self.done.add(seq)

    @precondition(lambda self: self.model)
    @rule()
    def ack_newest(self) -> None:
        rec = self.spool.newest()
        assert rec is not None and rec.seq == max(self.model)
        assert self.spool.ack(rec.seq)
        del self.model[rec.seq]
        self.done.add(rec.seq)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def ack_upto(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.model)))
        gone = [s for s in self.model if s <= seq]
        assert self.spool.ack_upto(seq) == len(gone)
        for s in gone:
            del self.model[s]
            self.done.add(s)

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def ack_again(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.done)))
        assert self.spool.ack(seq) is False
        assert self.spool.dead_letter(seq, "late") is False

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.model)))
        assert self.spool.dead_letter(seq, "bad") is True
        del self.model[seq]
        self.done.add(seq)

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = self._open()

    @invariant()
    def pending_matches_model(self) -> None:
        got = [(r.seq, r.payload) for r in self.spool.pending()]
        assert got == sorted(self.model.items())
        stats = self.spool.stats()
        assert stats["records"] == len(self.model)
        on_disk = [p for p in os.listdir(self.path) if p.startswith("seg-")]
        assert stats["files"] == len(on_disk)
        assert stats["bytes"] == sum(os.path.getsize(os.path.join(self.path, p)) for p in on_disk)
        assert stats["corruption_events"] == stats["torn_tails"] == stats["cursor_resets"] == 0

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.root, ignore_errors=True)


TestSpoolModel = SpoolModel.TestCase
TestSpoolModel.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class BoundedSpoolModel(SpoolModel):
    """The same, with byte and age bounds: whatever goes missing must have been evicted,
    oldest first, and counted."""

    MAX_BYTES, MAX_AGE = 400, 50.0

    def __init__(self) -> None:
        self.clock = FakeClock(10_000.0)
        self.evicted = 0
        super().__init__()

    def _open(self) -> Spool:
        return Spool(
            self.path,
            max_bytes=self.MAX_BYTES,
            segment_bytes=100,
            max_age_s=self.MAX_AGE,
            clock=self.clock,
            fsync="never",
        )

    @rule(dt=st.floats(0, 30))
    def tick(self, dt: float) -> None:
        self.clock.now += dt

    @invariant()
    def pending_matches_model(self) -> None:
        recs = self.spool.pending()
        got = {r.seq: r.payload for r in recs}
        lost = [s for s in self.model if s not in got]
        if lost and got:
            assert max(lost) < min(got)  # eviction only ever takes the oldest
        for s in lost:
            del self.model[s]
            self.done.add(s)
        self.evicted += len(lost)
        assert sorted(got.items()) == sorted(self.model.items())
        assert all(r.timestamp >= self.clock.now - self.MAX_AGE for r in recs)
        stats = self.spool.stats()
        assert stats["records"] == len(self.model)
        assert stats["evicted_records"] == self.evicted
        assert stats["evicted_by_size_records"] + stats["evicted_by_age_records"] == self.evicted
        assert stats["bytes"] <= self.MAX_BYTES


TestBoundedSpoolModel = BoundedSpoolModel.TestCase
TestBoundedSpoolModel.settings = TestSpoolModel.settings


def test_pending_and_newest_read_in_order_and_close_every_descriptor(tmp_path: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with Spool(tmp_path / "s", segment_bytes=FRAME_HEADER_SIZE + 2, **FAST) as s:
        seqs = [s.append(b"%02d" % i) for i in range(12)]  # two records per segment
        s.ack(seqs[3])
        s.ack(seqs[11])
        s.ack_upto(seqs[1])
        before = open_fds()
        for limit in (0, 1, 2, 3, 5, None):  # stopping inside a segment, between, at the end
            expect = [b"%02d" % i for i in range(2, 11) if i != 3][:limit]
            assert [r.payload for r in s.pending(limit)] == expect
        newest = s.newest()
        assert newest is not None and newest.payload == b"10"
        assert open_fds() == before
