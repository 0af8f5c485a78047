"""The agent's own figures as ``AgentMetrics``: every name in one place, and the pure functions
that turn a window, the spool's and the sender's stats and the agent's counters into them.

A window's heartbeat carries its figures (``window_metrics``) and, with ``build_heartbeat(...,
window_seq=True)``, the ``window-seq`` metric: the window's sequence number, with the recorder
id as its dimension, so (device, recorder id, window seq) names a window uniquely.  Every request
made from a spool record carries one ``spool-seq`` metric (``spool_seq_metric``): the record's
seq, with ``<spool id>/<part>/<parts>`` as its dimension, the key the endpoint deduplicates a
resent request on (``record.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..recording.naming import AGENT_METRIC_RULE, DIMENSION_RULE
from ..snapshot import Snapshot

__all__ = [
    "AGENT_COUNTERS",
    "AGENT_FIGURE_NAMES",
    "NAME_CLASHES",
    "RECORDER_FIGURES",
    "SENDER_FIGURES",
    "SHARED_FIGURES",
    "SPOOL_FIGURES",
    "SPOOL_SEQ",
    "WINDOW_SEQ",
    "agent_figures",
    "spool_seq_metric",
    "window_metrics",
    "window_seq_metric",
]

WINDOW_SEQ = "window-seq"
SPOOL_SEQ = "spool-seq"
# Series entries a heartbeat left out because another series of their model claimed the same
# MetricName and Dimension first (build_heartbeat); absent when there were none.
NAME_CLASHES = "series-name-clashes"

# Snapshot.recorder figures reported with every window (the window's own values).
RECORDER_FIGURES = {
    "records_drained": "records-drained",
    "ring_high_water": "ring-high-water",
    "memory_bytes": "recorder-memory-bytes",
    "unknown_series": "dropped-unknown-series",
    "threads_active": "threads-active",
    "collector_passes": "collector-passes",
    "full_drains": "ring-full-drains",
    "direct_values": "values-past-ring",
    "pool_exhausted": "histogram-pool-exhausted",
    "pages_high_water": "histogram-pages-high-water",
    "integrity_errors": "recorder-integrity-errors",
}
_DROP_REASONS = ("ring_full", "no_ring", "closed")
_REJECT_REASONS = ("nan", "inf", "type")

# Spool stats() -> metric name.
SPOOL_FIGURES = {
    "records": "spool-records",
    "bytes": "spool-bytes",
    "files": "spool-files",
    "oldest_unsent_age_s": "oldest-unsent-age-s",
    "evicted_records": "evicted-records",
    "evicted_bytes": "evicted-bytes",
    "evicted_by_age_records": "evicted-by-age-records",
    "torn_tails": "torn-tails",
    "dead_letters": "dead-letters",
    "dead_letters_dropped": "dead-letters-dropped",
    "cursor_resets": "cursor-resets",
    "write_failures": "spool-write-failures",
    "write_faulted": "spool-faulted",
}
# Sender stats() -> metric name.
SENDER_FIGURES = {
    "attempts": "send-attempts",
    "successes": "send-successes",
    "retries": "send-retries",
    "failures_throttled": "send-failures-throttled",
    "failures_5xx": "send-failures-5xx",
    "failures_timeout": "send-failures-timeout",
    "failures_connection": "send-failures-connection",
    "failures_validation": "send-failures-validation",
    "failures_auth": "send-failures-auth",
    "failures_clock_skew": "send-failures-clock-skew",
    "failures_credentials": "send-failures-credentials",
    "failures_other": "send-failures-other",
    "clock_corrections": "clock-corrections",
    "credential_refreshes": "credential-refreshes",
    "clock_offset_s": "clock-offset-s",
}
# A device agent's shared recorder (``SharedRecorder.shared_info()`` and the agent's window
# hand-over) -> metric name; absent for an in-process recorder.  Totals since the segment was
# created, but ``segment-truncations`` and the hand-over's two, which count since this agent
# started.  Integrity errors are the windows' ``recorder-integrity-errors``.
SHARED_FIGURES = {
    "processes": "processes-attached",
    "max_processes": "process-slots",
    "attaches": "process-attaches",
    "attach_refusals": "attach-refusals",
    "slotless": "processes-slotless",
    "processes_reaped": "processes-reaped",
    "lock_steals": "lock-steals",
    "journal_replays": "journal-replays",
    "lock_timeouts": "lock-timeouts",
    "generation": "agent-generation",
    "segments_replaced": "segment-truncations",
    "close_timeouts": "window-close-timeouts",
    "found_spooled": "windows-found-spooled",
}
# The agent's own counters (since this agent started).
AGENT_COUNTERS = (
    "clock-jumps",
    "clock-unset",
    "windows-restamped",
    "windows-lost",
    "spool-append-failures",
    "records-undecodable",
    "records-unbuildable",
    "records-unrecoverable-time",
    "send-cycles-failed",
    "send-cycles-skipped",
    "deployment-results-dropped",
)


def _reason_metric(prefix: str, reason: str) -> str | None:
    name = f"{prefix}-{reason.replace('_', '-')}"
    return name if AGENT_METRIC_RULE.problem(name) is None else None


def window_metrics(snap: Snapshot) -> dict[str, float]:
    """The AgentMetrics that describe one window (sent with that window's heartbeat)."""
    out: dict[str, float] = {
        "window-duration-s": max(0, snap.end_mono_ns - snap.start_mono_ns) / 1e9,
    }
    for key, name in RECORDER_FIGURES.items():
        out[name] = float(snap.recorder.get(key, 0))
    out["values-coarse"] = float(sum(s.coarse for s in snap.series))
    dropped, rejected = snap.dropped, snap.rejected
    for prefix, counts, known in (("dropped", dropped, _DROP_REASONS),
                                  ("rejected", rejected, _REJECT_REASONS)):
        for reason in sorted(set(known) | set(counts)):
            metric = _reason_metric(prefix, reason)
            if metric is not None:
                out[metric] = float(counts.get(reason, 0))
    return out


def agent_figures(
    spool: Mapping[str, int],
    sender: Mapping[str, int | float],
    counters: Mapping[str, int],
    *,
    state_corruption_events: int,
    deployments_pending: int,
    uptime_s: float,
) -> dict[str, float]:
    """The agent's operating figures: ``spool`` and ``sender`` are their ``stats()`` (an empty
    ``spool`` when it is closed), ``counters`` the agent's own (``AGENT_COUNTERS``)."""
    out: dict[str, float] = {}
    for key, name in SPOOL_FIGURES.items():
        if key in spool:
            out[name] = float(spool[key])
    if spool:
        out["corruption-events"] = float(spool["corruption_events"] + state_corruption_events)
    for key, name in SENDER_FIGURES.items():
        if key in sender:
            out[name] = float(sender[key])
    for name, value in counters.items():
        out[name] = float(value)
    out["deployment-results-pending"] = float(deployments_pending)
    out["agent-uptime-s"] = round(uptime_s, 3)
    return out


def spool_seq_metric(spool_id: str, part: int, parts: int, seq: int,
                     when: datetime | None) -> dict[str, Any]:
    """The ``spool-seq`` metric of part ``part`` (1..``parts``) of the requests of record
    ``seq`` of the spool ``spool_id``."""
    metric: dict[str, Any] = {"MetricName": SPOOL_SEQ, "Dimension": f"{spool_id}/{part}/{parts}",
                              "Value": float(seq)}
    if when is not None:
        metric["Timestamp"] = when
    return metric


def window_seq_metric(snap: Snapshot, when: datetime | None) -> dict[str, Any] | None:
    """The ``window-seq`` metric of ``snap``'s (last) source, or None when its recorder id is
    not a valid dimension (a hand-made snapshot)."""
    src = snap.sources[-1]
    if DIMENSION_RULE.problem(src.recorder_id) is not None:
        return None
    metric: dict[str, Any] = {"MetricName": WINDOW_SEQ, "Dimension": src.recorder_id,
                              "Value": float(src.seq_last)}
    if when is not None:
        metric["Timestamp"] = when
    return metric


# Every name ``agent_figures`` can give: the room a record's first request keeps for them, so
# its split never depends on which of them are sent (``record.py``).
AGENT_FIGURE_NAMES: tuple[str, ...] = (
    *SPOOL_FIGURES.values(), "corruption-events", *SENDER_FIGURES.values(), *AGENT_COUNTERS,
    "deployment-results-pending", "agent-uptime-s",
)
