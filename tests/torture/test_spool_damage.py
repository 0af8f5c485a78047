"""Damaged spools on real files: truncations, bit flips, zeroed ranges and garbage, in
segments and in the cursor, then a reopen.

Each try writes a spool of random records (some acknowledged, several segments), closes it,
damages it one random way and opens it again.  The spool must open (never raise, never
block), return no record with a wrong payload, return no record twice, and return every
unacknowledged record whose frame the damage did not touch; a damaged cursor may resend
acknowledged records (by design, docs/spool-format.md) but must not lose any.  A second
open finds nothing new to repair, and the spool takes appends again.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

from edgetelemetry.agent.spool import Spool
from edgetelemetry.agent.spool.frames import FRAME_HEADER_SIZE, scan

from .conftest import torture_size

FAST = {"fsync": "never", "max_age_s": None}
DAMAGES = ("truncate", "flip", "zero", "garbage", "cursor-flip", "cursor-truncate")


def _frames(d: Path) -> dict[int, tuple[str, int, int]]:
    """seq -> (segment name, start, end) of every intact frame on disk."""
    out = {}
    for seg in sorted(d.glob("seg-*.log")):
        frames, _, _ = scan(seg.read_bytes(), 0)
        for f in frames:
            out[f.seq] = (seg.name, f.offset, f.offset + FRAME_HEADER_SIZE + f.length)
    return out


def _damage(d: Path, rng: random.Random, how: str) -> list[tuple[str, int, int]]:
    """Damage the spool; return the byte ranges of segments it touched."""
    if how.startswith("cursor"):
        cursor = d / "cursor"
        data = bytearray(cursor.read_bytes())
        if how == "cursor-flip":
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            del data[rng.randrange(len(data)):]
        cursor.write_bytes(bytes(data))
        return []
    seg = rng.choice(sorted(d.glob("seg-*.log")))
    data = bytearray(seg.read_bytes())
    touched: list[tuple[str, int, int]] = []
    if how == "truncate":
        cut = rng.randrange(len(data))
        touched.append((seg.name, cut, len(data)))
        del data[cut:]
    elif how == "flip":
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
            touched.append((seg.name, at, at + 1))
    else:
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randint(1, 300))
        data[start:end] = bytes(end - start) if how == "zero" else os.urandom(end - start)
        touched.append((seg.name, start, end))
    seg.write_bytes(bytes(data))
    return touched


def test_damaged_spools_open_and_lose_only_what_was_hit(
        tmp_path: Path, torture_report: Callable[..., None]) -> None:
    tries = torture_size(ci=240, full=5000)
    rng = random.Random(20261203)
    lost = duplicated = wrong = crashed = unstable = 0
    for t in range(tries):
        d = tmp_path / f"s{t}"
        payloads: dict[int, bytes] = {}
        with Spool(d, segment_bytes=rng.choice([256, 1024, 4096]), **FAST) as s:
            for _ in range(rng.randint(1, 40)):
                data = os.urandom(rng.randint(0, 200))
                payloads[s.append(data)] = data
            acked = set(rng.sample(sorted(payloads), k=rng.randint(0, len(payloads) // 2)))
            for seq in acked:
                s.ack(seq)
        on_disk = _frames(d)
        how = DAMAGES[t % len(DAMAGES)]
        touched = _damage(d, rng, how)
        hit = {seq for seq, (name, a, b) in on_disk.items()
               for (tname, x, y) in touched if name == tname and x < b and a < y}
        try:
            with Spool(d, **FAST) as s:
                got = [(r.seq, r.payload) for r in s.pending()]
                after = s.append(b"after")
                events = s.stats()["corruption_events"] + s.stats()["torn_tails"]
        except Exception:  # noqa: BLE001 - the figure is what counts, asserted below
            crashed += 1
            continue
        seqs = [seq for seq, _ in got]
        duplicated += len(seqs) - len(set(seqs))
        wrong += sum(1 for seq, p in got if payloads.get(seq) != p)
        must = {seq for seq in on_disk if seq not in acked and seq not in hit}
        lost += len(must - set(seqs))
        with Spool(d, **FAST) as s:  # repaired once: a second open finds nothing new
            again = {r.seq for r in s.pending()}
            if again != set(seqs) | {after} or \
                    s.stats()["corruption_events"] + s.stats()["torn_tails"] != events:
                unstable += 1
    torture_report(tries=tries, lost=lost, duplicated=duplicated, wrong=wrong, crashed=crashed,
                   unstable=unstable)
    assert crashed == 0 and wrong == 0 and duplicated == 0 and lost == 0
    assert unstable == 0
