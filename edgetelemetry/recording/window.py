"""A closed window of the C core (``RawWindow``) as a ``Snapshot``: pure translation."""

from __future__ import annotations

from collections.abc import Mapping

from .._native import RawWindow
from ..snapshot import HistogramLayout, SeriesSnapshot, Snapshot, SnapshotSource

__all__ = ["snapshot_of"]


def snapshot_of(
    raw: RawWindow,
    layout: HistogramLayout,
    source: tuple[str, str],
    figures: Mapping[str, int],
) -> Snapshot:
    """The snapshot of ``raw``: ``source`` (recorder id, boot id), and the recorder's
    ``figures`` for this window.  Its series are the window's: those with activity in it."""
    per_sign = layout.buckets_per_sign
    series = []
    for rs in raw.series:
        pos: dict[int, int] = {}
        neg: dict[int, int] = {}
        for index, count in zip(rs.indexes, rs.counts):
            if index < per_sign:
                pos[index] = count
            else:
                neg[index - per_sign] = count
        model, version, metric, dimension = rs.names
        series.append(
            SeriesSnapshot(
                model=model,
                version=version,
                metric=metric,
                dimension=dimension or None,
                unit=rs.unit or None,
                layout=layout,
                count=rs.count,
                sum=rs.sum,
                min=rs.min if rs.count else None,
                max=rs.max if rs.count else None,
                first_mono_ns=rs.first_mono_ns or None,
                last_mono_ns=rs.last_mono_ns or None,
                first_wall_ns=rs.first_wall_ns or None,
                last_wall_ns=rs.last_wall_ns or None,
                zero=rs.zero,
                pos=pos,
                neg=neg,
                rejected={k: v for k, v in rs.rejected.items() if v},
                dropped={k: v for k, v in rs.dropped.items() if v},
                coarse=rs.coarse,
            )
        )
    recorder_id, boot = source
    return Snapshot(
        sources=(SnapshotSource(recorder_id, boot, raw.seq, raw.seq),),
        start_mono_ns=raw.start_mono_ns,
        end_mono_ns=raw.end_mono_ns,
        start_wall_ns=raw.start_wall_ns,
        end_wall_ns=raw.end_wall_ns,
        layout=layout,
        series=tuple(series),
        recorder=dict(figures),
    )
