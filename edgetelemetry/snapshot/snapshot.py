"""A snapshot: a closed window (or a merge of several) with its sources, and its msgpack form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from ..errors import SnapshotFormatError
from .codec import (
    I64_MAX,
    I64_MIN,
    U64_MAX,
    add_count,
    expect_counters,
    expect_int,
    expect_map,
    sum_counters,
)
from .layout import HistogramLayout
from .series import SeriesSnapshot

__all__ = ["RECORDER_COUNTERS", "RECORDER_GAUGES", "SCHEMA_VERSION", "Snapshot", "SnapshotSource"]

# 1.1: series carry "coarse"; series list only what had activity in the window; more
# recorder figures (docs/snapshot-format.md, "Changes").
SCHEMA_VERSION = (1, 1)

# Recorder figures that describe a state (take the max when merging); the rest are counters.
RECORDER_GAUGES = (
    "memory_bytes",
    "ring_capacity",
    "max_threads",
    "max_series",
    "series",
    "threads_active",
    "ring_high_water",
    "pages_high_water",
)
# Recorder figures counted over the window (added when merging).
RECORDER_COUNTERS = (
    "records_drained",
    "collector_passes",
    "unknown_series",
    "full_drains",
    "direct_values",
    "pool_exhausted",
    "integrity_errors",
)


@dataclass(frozen=True)
class SnapshotSource:
    """Which recorder windows a snapshot covers: a merged snapshot lists several."""

    recorder_id: str
    boot_id: str
    seq_first: int
    seq_last: int


@dataclass(frozen=True)
class Snapshot:
    """A closed window (or a merge of several): series aggregates plus the recorder's figures."""

    sources: tuple[SnapshotSource, ...]
    start_mono_ns: int
    end_mono_ns: int
    start_wall_ns: int
    end_wall_ns: int
    layout: HistogramLayout
    series: tuple[SeriesSnapshot, ...]
    recorder: Mapping[str, int] = field(default_factory=dict)
    # the version the snapshot was read as (or made at); it is always written as this
    # version's, so it takes no part in equality
    schema: tuple[int, int] = field(default=SCHEMA_VERSION, compare=False)

    @property
    def recorder_id(self) -> str:
        return self.sources[0].recorder_id

    @property
    def seq(self) -> int:
        """The sequence number of the (last) window this snapshot closes."""
        return self.sources[-1].seq_last

    @property
    def dropped(self) -> dict[str, int]:
        return sum_counters(s.dropped for s in self.series)

    @property
    def rejected(self) -> dict[str, int]:
        return sum_counters(s.rejected for s in self.series)

    def get(
        self, model: str, version: str, metric: str, dimension: str | None = None
    ) -> SeriesSnapshot | None:
        key = (model, version, metric, dimension)
        for s in self.series:
            if s.key == key:
                return s
        return None

    def merge(self, other: Snapshot) -> Snapshot:
        """The snapshot of both windows together: counts add, min/max widen, buckets add;
        a series in one of them only is taken as it is.  Refuses (ValueError) other layouts,
        a series with two units, and any count that would pass 2**64 - 1 or a sum that would
        overflow a double: it never saturates, and never makes what could not be encoded."""
        if other.layout != self.layout:
            raise ValueError("cannot merge snapshots with different histogram layouts")
        merged: dict[tuple[str, str, str, str | None], SeriesSnapshot] = {}
        for s in self.series + other.series:
            mine = merged.get(s.key)
            merged[s.key] = s if mine is None else mine.merge(s)
        figures: dict[str, int] = dict(self.recorder)
        for key, value in other.recorder.items():
            if key in RECORDER_GAUGES:
                figures[key] = max(figures.get(key, value), value)
            else:
                figures[key] = add_count(figures.get(key, 0), value, f"recorder {key}")
        return Snapshot(
            sources=_merge_sources(self.sources + other.sources),
            start_mono_ns=min(self.start_mono_ns, other.start_mono_ns),
            end_mono_ns=max(self.end_mono_ns, other.end_mono_ns),
            start_wall_ns=min(self.start_wall_ns, other.start_wall_ns),
            end_wall_ns=max(self.end_wall_ns, other.end_wall_ns),
            layout=self.layout,
            series=tuple(sorted(merged.values(), key=_series_order)),
            recorder=figures,
            schema=SCHEMA_VERSION,
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form (plain types), always at this version's schema."""
        return {
            "schema": list(SCHEMA_VERSION),
            "sources": [
                [s.recorder_id, s.boot_id, s.seq_first, s.seq_last] for s in self.sources
            ],
            "window": {
                "start_mono_ns": self.start_mono_ns,
                "end_mono_ns": self.end_mono_ns,
                "start_wall_ns": self.start_wall_ns,
                "end_wall_ns": self.end_wall_ns,
            },
            "histogram": self.layout.to_dict(),
            "series": [s.to_dict() for s in self.series],
            "recorder": dict(sorted(self.recorder.items())),
        }

    def to_msgpack(self) -> bytes:
        return msgpack.packb(self.to_dict(), use_bin_type=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> Snapshot:
        """Decode bytes from ``to_msgpack``; anything else raises ``SnapshotFormatError``.

        It accepts only what it can write back: for any bytes it accepts,
        ``from_msgpack(s.to_msgpack()) == s`` (keys it does not know, from a newer minor
        version, are left out)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SnapshotFormatError(f"expected bytes, got {type(data).__name__}")
        try:
            raw = msgpack.unpackb(
                bytes(data),
                raw=False,
                strict_map_key=True,
            )
        except msgpack.ExtraData as exc:
            raise SnapshotFormatError("trailing bytes after the snapshot") from exc
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise SnapshotFormatError(f"not a msgpack snapshot: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> Snapshot:
        d = expect_map(raw, "snapshot")
        schema = d.get("schema")
        if (
            not isinstance(schema, list)
            or len(schema) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in schema)
            or not all(0 <= v <= U64_MAX for v in schema)
        ):
            raise SnapshotFormatError("snapshot.schema must be [major, minor]")
        if schema[0] != SCHEMA_VERSION[0]:
            raise SnapshotFormatError(
                f"snapshot schema {schema[0]}.{schema[1]} is not readable by this version "
                f"(reads {SCHEMA_VERSION[0]}.x)"
            )
        raw_sources = d.get("sources")
        if not isinstance(raw_sources, list) or not raw_sources:
            raise SnapshotFormatError("snapshot.sources must be a non-empty list")
        sources = []
        for i, src in enumerate(raw_sources):
            if (
                not isinstance(src, list)
                or len(src) != 4
                or not isinstance(src[0], str)
                or not isinstance(src[1], str)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in src[2:])
                or not 0 <= src[2] <= src[3] <= U64_MAX
            ):
                raise SnapshotFormatError(
                    f"snapshot.sources[{i}] must be [recorder_id, boot_id, seq_first, seq_last]"
                )
            sources.append(SnapshotSource(*src))
        window = expect_map(d.get("window"), "snapshot.window")
        bounds = {
            key: expect_int(window, key, "snapshot.window", lo=I64_MIN, hi=I64_MAX)
            for key in ("start_mono_ns", "end_mono_ns", "start_wall_ns", "end_wall_ns")
        }
        layout = HistogramLayout.from_dict(d.get("histogram"))
        raw_series = d.get("series")
        if not isinstance(raw_series, list):
            raise SnapshotFormatError("snapshot.series must be a list")
        series = tuple(
            SeriesSnapshot.from_dict(s, layout, f"snapshot.series[{i}]")
            for i, s in enumerate(raw_series)
        )
        seen: set[tuple[str, str, str, str | None]] = set()
        for i, s in enumerate(series):
            if s.key in seen:
                raise SnapshotFormatError(f"snapshot.series[{i}] lists series {s.key} again")
            seen.add(s.key)
        recorder = expect_counters(d.get("recorder"), "snapshot.recorder")
        return cls(
            sources=tuple(sources),
            layout=layout,
            series=series,
            recorder=recorder,
            schema=(schema[0], schema[1]),
            **bounds,
        )


def _series_order(s: SeriesSnapshot) -> tuple[str, str, str, str]:
    return (s.model, s.version, s.metric, s.dimension or "")


def _merge_sources(sources: tuple[SnapshotSource, ...]) -> tuple[SnapshotSource, ...]:
    """Join adjacent windows of one recorder into one range; keep the rest in order."""
    out: list[SnapshotSource] = []
    for src in sorted(sources, key=lambda s: (s.recorder_id, s.seq_first)):
        last = out[-1] if out else None
        if (
            last is not None
            and last.recorder_id == src.recorder_id
            and last.boot_id == src.boot_id
            and src.seq_first <= last.seq_last + 1
        ):
            out[-1] = replace(last, seq_last=max(last.seq_last, src.seq_last))
        else:
            out.append(src)
    return tuple(out)


