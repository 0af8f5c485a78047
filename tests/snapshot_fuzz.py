"""A structure-aware fuzzer for the snapshot decoder, shared by the bounded hypothesis test
(tests/test_snapshot.py) and the torture-size run (tests/torture/test_snapshot_fuzz.py).

Each input starts as a valid snapshot, made at random, and is then damaged: values replaced by
ones a hostile or buggy writer could put there (binary keys and strings, -inf and NaN, counts at
and past 2**64 - 1, times past int64, wrong types, duplicated series, keys removed or added),
sometimes packed with 32-bit floats, sometimes with bytes flipped after packing.  The property:
whatever ``Snapshot.from_msgpack`` accepts, it writes back and reads again as the same snapshot
(decode -> encode -> decode is the identity), and encoding is then a fixed point; whatever it
refuses, it refuses with ``SnapshotFormatError`` and nothing else.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any

import msgpack

from edgetelemetry import SnapshotFormatError
from edgetelemetry.snapshot import Snapshot

EDGES = [0, 371, 775, 1216, 1697, 2221, 2793, 3417, 4096]
BUCKETS_PER_SIGN = 8 * 70

# values a writer could put anywhere: the decoder must sort them out
INTERESTING: list[Any] = [
    None, True, False, 0, 1, -1, 2**32, 2**63 - 1, 2**63, -(2**63), 2**64 - 1, 0.0, -0.0, 1.5,
    math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, "", "x", "latency", b"", b"nan",
    [], [0], [[0, [1]]], {}, {"nan": 1}, {b"nan": 1}, {1: 2}, [1, 2, 3, 4],
]


@dataclass
class Outcome:
    accepted: int = 0
    refused: int = 0
    crashed: int = 0
    first_crash: str | None = None

    @property
    def tries(self) -> int:
        return self.accepted + self.refused + self.crashed


def valid_snapshot(rng: random.Random) -> dict[str, Any]:
    """A snapshot's wire form, valid: what a recorder or a merge could write."""
    series = []
    for i in range(rng.randint(0, 4)):
        count = rng.choice([0, 1, 2, 5, 100, 2**40, 2**64 - 1])
        buckets: dict[str, dict[int, int]] = {"pos": {}, "neg": {}}
        left, zero = count, 0
        while left:
            share = left if rng.random() < 0.3 else rng.randint(1, left)
            where = rng.choice(["pos", "neg", "zero"])
            if where == "zero":
                zero += share
            else:
                index = rng.randrange(BUCKETS_PER_SIGN)
                buckets[where][index] = buckets[where].get(index, 0) + share
            left -= share
        lo, hi = sorted(rng.uniform(-1e6, 1e6) for _ in range(2))
        first = rng.randint(-(2**62), 2**62)
        series.append({
            "model": rng.choice(["resnet18", "yolo-v8"]),
            "version": "1.0",
            "metric": f"metric-{i}",
            "dimension": rng.choice([None, "camera-front"]),
            "unit": rng.choice([None, "ms"]),
            "count": count,
            "sum": rng.uniform(-1e9, 1e9) if count else 0.0,
            "min": lo if count else None,
            "max": hi if count else None,
            "first_mono_ns": first if count else None,
            "last_mono_ns": first + rng.randint(0, 10**9) if count else None,
            "first_wall_ns": None,
            "last_wall_ns": None,
            "zero": zero,
            "pos": _runs(buckets["pos"]),
            "neg": _runs(buckets["neg"]),
            "rejected": rng.choice([{}, {"nan": 2}, {"type": 2**64 - 1}]),
            "dropped": rng.choice([{}, {"ring_full": 3}]),
            "coarse": rng.randint(0, count) if rng.random() < 0.8 else None,
        })
        if series[-1]["coarse"] is None:
            del series[-1]["coarse"]  # a 1.0 series
    start = rng.randint(0, 2**62)
    return {
        "schema": [1, rng.choice([0, 1, 7])],
        "sources": [["0123456789abcdef", "boot-1", 4, 4 + rng.randint(0, 3)]],
        "window": {"start_mono_ns": start, "end_mono_ns": start + 10**9,
                   "start_wall_ns": 1_790_000_000 * 10**9, "end_wall_ns": 1_790_000_001 * 10**9},
        "histogram": {"scheme": "log2-mantissa", "buckets_per_octave": 8, "mantissa_bits": 12,
                      "min_exponent": -30, "octaves": 70, "edges": list(EDGES)},
        "series": series,
        "recorder": {"memory_bytes": 273840, "records_drained": rng.choice([0, 9, 2**64 - 1])},
    }


def _runs(counts: dict[int, int]) -> list[list[Any]]:
    return [[index, [value]] for index, value in sorted(counts.items())]


def _containers(node: Any, out: list[Any]) -> None:
    if isinstance(node, (dict, list)):
        out.append(node)
        for child in (node.values() if isinstance(node, dict) else node):
            _containers(child, out)


def damage(doc: dict[str, Any], rng: random.Random) -> None:
    """Change one thing somewhere in ``doc``, in place."""
    nodes: list[Any] = []
    _containers(doc, nodes)
    node = rng.choice(nodes)
    if isinstance(node, dict):
        if node and rng.random() < 0.8:
            key = rng.choice(list(node))
            action = rng.random()
            if action < 0.6:
                node[key] = _interesting(rng)
            elif action < 0.75:
                del node[key]
            elif action < 0.9 and isinstance(key, str):
                node[key.encode()] = node.pop(key)  # the same key, as binary
            else:
                node[key] = _nudge(node[key], rng)
        else:
            node[rng.choice(["extra", b"extra", "coarse", "nan"])] = _interesting(rng)
    elif node:
        i = rng.randrange(len(node))
        action = rng.random()
        if action < 0.5:
            node[i] = _interesting(rng)
        elif action < 0.7:
            node.append(copy.deepcopy(node[i]))  # a series (or run, or source) twice
        elif action < 0.85:
            del node[i]
        else:
            node[i] = _nudge(node[i], rng)
    else:
        node.append(_interesting(rng))


def _interesting(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(INTERESTING))


def _nudge(value: Any, rng: random.Random) -> Any:
    """A near miss: an int or float just off, a count just past what adds up."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([-1, 1, 2**32, -(2**32)])
    if isinstance(value, float):
        return rng.choice([-value, value * 2, math.nextafter(value, math.inf), math.inf])
    return value


def fuzz_input(rng: random.Random) -> bytes:
    doc = valid_snapshot(rng)
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        damage(doc, rng)
    try:
        data: bytes = msgpack.packb(doc, use_bin_type=True,
                                    use_single_float=rng.random() < 0.1)
    except (OverflowError, ValueError, TypeError):
        data = msgpack.packb(valid_snapshot(rng), use_bin_type=True)
    if rng.random() < 0.15:
        raw = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        data = bytes(raw)
    return data


def check_one(data: bytes, outcome: Outcome) -> None:
    """Decode ``data``; if accepted, the round trip must be the identity."""
    try:
        snap = Snapshot.from_msgpack(data)
    except SnapshotFormatError:
        outcome.refused += 1
        return
    except Exception as exc:  # anything else is a decoder bug
        _crash(outcome, data, f"decode raised {type(exc).__name__}: {exc}")
        return
    try:
        encoded = snap.to_msgpack()
        again = Snapshot.from_msgpack(encoded)
        if again != snap:
            raise AssertionError("decode(encode(s)) != s")
        if again.to_msgpack() != encoded:
            raise AssertionError("encoding is not a fixed point")
        for s in snap.series:
            s.quantile(0.99)
        try:
            merged = snap.merge(snap)
        except ValueError:
            pass  # refused: a count past 2**64 - 1 or a sum past the double range
        else:
            if Snapshot.from_msgpack(merged.to_msgpack()) != merged:
                raise AssertionError("a merge does not survive its own round trip")
    except Exception as exc:
        _crash(outcome, data, f"accepted, then {type(exc).__name__}: {exc}")
        return
    outcome.accepted += 1


def _crash(outcome: Outcome, data: bytes, what: str) -> None:
    outcome.crashed += 1
    if outcome.first_crash is None:
        outcome.first_crash = f"{what} (input {data.hex()})"


def run(tries: int, seed: int) -> Outcome:
    rng = random.Random(seed)
    outcome = Outcome()
    for _ in range(tries):
        check_one(fuzz_input(rng), outcome)
    return outcome
