"""One spool, several sinks: each with its own durable cursor, records kept until every sink has
them, losses counted per sink, and a random walk against a model with exact accounting."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat

import pytest
from fs_helpers import run_python

from edgetelemetry.agent.spool import Spool, SpoolPermissionError


def open_spool(path, sinks=("heartbeat", "otlp"), **kw) -> Spool:  # type: ignore[no-untyped-def]
    kw.setdefault("fsync", "never")
    return Spool(path, sinks=sinks, **kw)


def seqs(records) -> list[int]:  # type: ignore[no-untyped-def]
    return [r.seq for r in records]


def accounted(spool: Spool, sink: str, appended: int) -> None:
    st = spool.sink_stats(sink)
    assert st["delivered"] + st["lost"] + st["dead_letters"] + st["records"] == appended, st


def test_a_record_stays_until_every_sink_has_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with open_spool(tmp_path / "s") as spool:
        for i in range(10):
            spool.append(b"r%d" % i)
        for seq in range(1, 11):
            assert spool.ack(seq, sink="otlp")
        assert not spool.ack(5, sink="otlp")  # already had
        assert spool.pending(sink="otlp") == [] and spool.newest(sink="otlp") is None
        assert seqs(spool.pending(sink="heartbeat")) == list(range(1, 11))
        assert spool.stats()["records"] == 10  # held for the heartbeat sink
        for seq in (10, 1, 2, 3):  # newest first, then the backlog
            assert spool.ack(seq, sink="heartbeat")
        assert seqs(spool.pending()) == [4, 5, 6, 7, 8, 9]
        assert spool.newest(sink="heartbeat").seq == 9  # type: ignore[union-attr]
        assert spool.sink_stats("otlp") == {"records": 0, "oldest_unsent_age_s": 0,
                                            "delivered": 10, "lost": 0, "dead_letters": 0}
        assert spool.sink_stats("heartbeat")["records"] == 6
        for sink in ("heartbeat", "otlp"):
            accounted(spool, sink, 10)


def test_cursors_are_durable_private_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s"
    with open_spool(path, fsync="always") as spool:
        for i in range(6):
            spool.append(b"x%d" % i)
        spool.ack(2, sink="otlp")
        spool.ack(6, sink="otlp")
        spool.ack(1, sink="heartbeat")
    for name in ("sink-otlp.cursor", "sink-heartbeat.cursor"):
        assert stat.S_IMODE(os.stat(path / name).st_mode) == 0o600
    with open_spool(path) as spool:
        assert seqs(spool.pending(sink="otlp")) == [1, 3, 4, 5]
        assert seqs(spool.pending(sink="heartbeat")) == [2, 3, 4, 5, 6]
        assert spool.sink_stats("otlp")["delivered"] == 2


def test_an_outage_of_one_sink_does_not_hold_the_other(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with open_spool(tmp_path / "s") as spool:
        for i in range(50):
            seq = spool.append(b"w%d" % i)
            assert spool.newest(sink="otlp").seq == seq  # type: ignore[union-attr]
            assert spool.ack(seq, sink="otlp")  # otlp delivers as it comes; heartbeat is down
        assert spool.sink_stats("heartbeat")["records"] == 50
        assert len(spool.pending(limit=8, sink="heartbeat")) == 8
        # the backlog drains oldest first once it is back
        done = []
        while batch := spool.pending(limit=8, sink="heartbeat"):
            for rec in batch:
                spool.ack(rec.seq, sink="heartbeat")
                done.append(rec.seq)
        assert done == list(range(1, 51))
        assert spool.stats()["records"] == 0 and spool.stats()["files"] <= 1


def test_bounds_count_losses_per_sink(tmp_path) -> None:  # type: ignore[no-untyped-def]
    payload = b"p" * 900
    with open_spool(tmp_path / "s", max_bytes=65536, segment_bytes=4096) as spool:
        appended = 0
        for _ in range(200):  # far more than 64 KiB: the oldest segments go
            seq = spool.append(payload)
            appended += 1
            spool.ack(seq, sink="otlp")
        st_hb, st_otlp = spool.sink_stats("heartbeat"), spool.sink_stats("otlp")
        evicted = spool.stats()["evicted_records"]
        assert evicted > 100
        assert st_hb["lost"] == evicted and st_otlp["lost"] == 0
        assert st_otlp["delivered"] == 200
        for sink in ("heartbeat", "otlp"):
            accounted(spool, sink, appended)


def test_dead_letter_for_one_sink_keeps_the_record_for_the_other(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s"
    with open_spool(path) as spool:
        spool.append(b"fine for heartbeat, refused by the collector")
        assert spool.dead_letter(1, "400: bad data", sink="otlp")
        assert not spool.dead_letter(1, "again", sink="otlp")
        assert spool.pending(sink="otlp") == []
        assert seqs(spool.pending(sink="heartbeat")) == [1]
        dead = os.listdir(path / "dead")
        assert dead == ["dl-0000000000000001-otlp.rec"]
        head = (path / "dead" / dead[0]).read_bytes().split(b"\n", 1)[0]
        assert b'"sink": "otlp"' in head and b"400: bad data" in head
        assert spool.ack(1, sink="heartbeat")
        assert spool.stats()["records"] == 0
        assert spool.sink_stats("otlp")["dead_letters"] == 1


def test_crash_between_sink_cursor_and_spool_cursor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The sink cursor is written first: a crash before the spool's cursor leaves records every
    sink has; the next open lets them go instead of sending them again."""
    path = tmp_path / "s"
    with open_spool(path) as spool:
        for i in range(4):
            spool.append(b"r%d" % i)
        for seq in (1, 2, 3, 4):
            spool.ack(seq, sink="otlp")
        spool.ack(1, sink="heartbeat")
        shutil.copy(path / "cursor", tmp_path / "old-cursor")
        spool.ack(2, sink="heartbeat")
        spool.ack(3, sink="heartbeat")
    shutil.copy(tmp_path / "old-cursor", path / "cursor")  # as if the last writes never landed
    with open_spool(path) as spool:
        assert seqs(spool.pending()) == [4]
        assert seqs(spool.pending(sink="heartbeat")) == [4] and spool.pending(sink="otlp") == []


def test_a_new_sink_gets_what_the_spool_holds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s"
    with Spool(path, fsync="never", sinks=("heartbeat",)) as spool:
        for i in range(3):
            spool.append(b"r%d" % i)
        spool.ack(1, sink="heartbeat")
        assert not (path / "sink-heartbeat.cursor").exists()  # one sink: the spool's cursor
        assert spool.sink_stats("heartbeat")["records"] == 2
    with open_spool(path, sinks=("heartbeat", "otlp", "mqtt")) as spool:
        for sink in ("heartbeat", "otlp", "mqtt"):
            assert seqs(spool.pending(sink=sink)) == [2, 3]


def test_a_damaged_sink_cursor_means_resending_never_losing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s"
    with open_spool(path) as spool:
        for i in range(3):
            spool.append(b"r%d" % i)
        spool.ack(1, sink="otlp")
        spool.ack(2, sink="otlp")
    data = bytearray((path / "sink-otlp.cursor").read_bytes())
    data[-3] ^= 0xFF
    (path / "sink-otlp.cursor").write_bytes(bytes(data))
    with open_spool(path) as spool:
        assert seqs(spool.pending(sink="otlp")) == [1, 2, 3]
        assert spool.stats()["corruption_events"] == 1
        assert any("sink-otlp.cursor" in n for n in os.listdir(path / "quarantine"))


def test_names_are_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for bad in (("a", "a"), ("Upper",), ("-x",), ("x" * 33,), ("a/b",)):
        with pytest.raises(ValueError, match="sinks must be"):
            Spool(tmp_path / "s", fsync="never", sinks=bad)
    with open_spool(tmp_path / "s") as spool:
        spool.append(b"x")
        with pytest.raises(ValueError, match="not one of this spool's sinks"):
            spool.pending(sink="mqtt")
        with pytest.raises(ValueError, match="not one of this spool's sinks"):
            spool.ack(1, sink="mqtt")


@pytest.mark.parametrize("seed", range(6))
def test_random_walk_against_a_model(tmp_path, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Appends, acks in any order, dead letters, evictions and reopenings: every sink's
    delivered + lost + dead letters + pending equals what was appended, nothing is delivered
    twice, and what is pending is exactly what the model says."""
    rng = random.Random(seed)
    sinks = ("heartbeat", "otlp", "mqtt")
    path = tmp_path / "s"
    kw = {"max_bytes": 65536, "segment_bytes": 4096}
    spool = open_spool(path, sinks=sinks, **kw)
    had: dict[str, set[int]] = {s: set() for s in sinks}
    appended: list[int] = []
    try:
        for _ in range(500):
            op = rng.random()
            if op < 0.35:
                appended.append(spool.append(os.urandom(rng.randrange(50, 1500))))
            elif op < 0.9:
                sink = rng.choice(sinks)
                pending = spool.pending(sink=sink)
                if pending:
                    rec = rng.choice(pending[:5] + pending[-2:])
                    assert rec.seq not in had[sink]
                    if rng.random() < 0.05:
                        assert spool.dead_letter(rec.seq, "refused", sink=sink)
                    else:
                        assert spool.ack(rec.seq, sink=sink)
                    had[sink].add(rec.seq)
            elif op < 0.97:
                spool.close()
                spool = open_spool(path, sinks=sinks, **kw)
            else:
                sink = rng.choice(sinks)
                assert spool.pending(sink=sink) == [] or spool.newest(sink=sink) is not None
            held = set(seqs(spool.pending()))
            for sink in sinks:
                pending = set(seqs(spool.pending(sink=sink)))
                assert pending == held - had[sink]
                assert not pending & had[sink]
                accounted(spool, sink, len(appended))
    finally:
        spool.close()


# -- a sink's cursor follows the spool's private-file rules (issue 12 item 1) ----------------

SINK_CURSOR = "sink-otlp.cursor"
_OPEN_WITH_PLANTED = """
import json, os, sys
from edgetelemetry.agent.spool import Spool
d = sys.argv[1]
with Spool(d, sinks=("heartbeat", "otlp"), fsync="never") as s:
    out = {"otlp": [r.seq for r in s.pending(sink="otlp")],
           "heartbeat": [r.seq for r in s.pending(sink="heartbeat")],
           "corruption": s.stats()["corruption_events"],
           "aside": sorted(os.listdir(os.path.join(d, "quarantine")))}
    s.ack(1, sink="otlp")
print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["symlink-file", "symlink-dir", "fifo"])
def test_a_planted_sink_cursor_is_never_followed_or_opened(tmp_path, kind) -> None:  # type: ignore[no-untyped-def]
    # The victims a careless spool would read, chmod or overwrite through the link.
    victim, victim_dir = tmp_path / "victim.txt", tmp_path / "victim-dir"
    victim.write_bytes(b"do not touch")
    victim.chmod(0o644)
    victim_dir.mkdir()
    victim_dir.chmod(0o755)
    (victim_dir / "inside").write_bytes(b"x")
    d = tmp_path / "s"
    with open_spool(d) as spool:
        for i in range(3):
            spool.append(b"r%d" % i)
        spool.ack(2, sink="otlp")
    (d / SINK_CURSOR).unlink()
    if kind == "symlink-file":
        (d / SINK_CURSOR).symlink_to(victim)
    elif kind == "symlink-dir":
        (d / SINK_CURSOR).symlink_to(victim_dir)
    else:
        os.mkfifo(d / SINK_CURSOR)  # opened for reading, it would block start-up forever
    # A fresh interpreter with a timeout: a hang fails the test instead of the run.
    done = run_python(_OPEN_WITH_PLANTED, str(d), timeout=30)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # the sink's cursor is gone, so that sink gets every record again: resent, never lost
    assert result["otlp"] == [1, 2, 3] and result["heartbeat"] == [1, 2, 3]
    assert result["corruption"] == 1
    assert [n for n in result["aside"] if SINK_CURSOR in n and n.endswith(".unusable")]
    # nothing behind the entry was read, changed or replaced
    assert victim.read_bytes() == b"do not touch"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert stat.S_IMODE(victim_dir.stat().st_mode) == 0o755
    assert sorted(p.name for p in victim_dir.iterdir()) == ["inside"]
    # the cursor written since is a regular private file of ours, in the spool itself
    st = os.lstat(d / SINK_CURSOR)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    with open_spool(d) as spool:
        assert seqs(spool.pending(sink="otlp")) == [2, 3]


def test_a_symlink_where_a_sink_cursor_is_written_is_refused_and_left_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch")
    victim.chmod(0o644)
    d = tmp_path / "s"
    with open_spool(d) as spool:
        spool.append(b"r")
    (d / (SINK_CURSOR + ".tmp")).symlink_to(victim)
    with open_spool(d) as spool:  # nothing to write at open: the planted temp name is idle
        assert seqs(spool.pending(sink="otlp")) == [1]
        # the ack's cursor write would go through the link: refused, naming it
        with pytest.raises(SpoolPermissionError, match=r"sink-otlp\.cursor\.tmp is a symlink"):
            spool.ack(1, sink="otlp")
        assert victim.read_bytes() == b"do not touch"
        assert stat.S_IMODE(victim.stat().st_mode) == 0o644
        assert (d / (SINK_CURSOR + ".tmp")).is_symlink()  # not ours: left where it was
        (d / (SINK_CURSOR + ".tmp")).unlink()  # its owner takes it away: the ack is written
    with open_spool(d) as spool:
        assert spool.pending(sink="otlp") == [] and seqs(spool.pending(sink="heartbeat")) == [1]
