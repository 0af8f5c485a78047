"""One spool record as ``SendHeartbeat`` requests, the same every time it is sent.

A record sent and not acknowledged before a crash is sent again after the restart, and the
endpoint drops the resend by its ``spool-seq`` key, ``(device, "<spool id>/<part>/<parts>",
seq)`` (``docs/agent.md``).  That only works if the resend is cut into the same parts with the
same model metrics as the first send, so the parts are a pure function of the record (its
snapshot and seq), the spool's id, the identity, the options and the limits.

What changes between sends, the agent's own figures and the models' ``LatestInference`` /
``LatestSampleTime`` from its state, only fills room reserved for it:

- the split is made with every figure name the agent can send (``AGENT_FIGURE_NAMES``, plus
  its other sinks' figures) present at the widest value a double can print as, and every
  model head carrying both times at the widest timestamp;
- ``RecordRequests.filled`` then puts in the real values, or removes what is not sent.

Filling only ever shrinks a request, so a filled request is within the limits its template was
cut to.  Each part also keeps room for its ``spool-seq`` metric, added after the split.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from ..snapshot import Snapshot
from .agent_metrics import (
    AGENT_FIGURE_NAMES,
    SPOOL_SEQ,
    spool_seq_metric,
    window_metrics,
)
from .payload import DeviceIdentity, ModelState, PayloadOptions, build_heartbeat
from .split import SplitLimits, request_bytes, split_heartbeat

__all__ = ["RecordRequests", "record_requests"]

# The longest JSON a finite double prints as (24 characters): the room one figure keeps.
_WIDEST_VALUE = -2.2250738585072014e-308
_MAX_PARTS = 999_999  # the widest part numbers the spool-seq metric's room is kept for
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LAST_DAY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


@dataclass(frozen=True)
class RecordRequests:
    """The parts of one record, with room kept for the agent's figures and the model times.

    ``templates`` are not sendable as they are: call ``filled``."""

    templates: tuple[dict[str, Any], ...]
    window_inference_ns: Mapping[tuple[str, str], int]  # each model's last record time in it
    figure_names: frozenset[str] = frozenset(AGENT_FIGURE_NAMES)  # the names room is kept for

    def __len__(self) -> int:
        return len(self.templates)

    def filled(
        self,
        figures: Mapping[str, float] | None,
        models: Mapping[tuple[str, str], ModelState],
    ) -> list[dict[str, Any]]:
        """The requests to send: ``figures`` (the agent's, by ``AgentMetrics`` name; None to
        send none) in their kept places, and each model's times: ``LatestInference`` the later
        of the window's and ``models``', ``LatestSampleTime`` from ``models``."""
        return [self._fill(t, figures or {}, models) for t in self.templates]

    def _fill(self, template: dict[str, Any], figures: Mapping[str, float],
              models: Mapping[tuple[str, str], ModelState]) -> dict[str, Any]:
        out = dict(template)
        if "AgentMetrics" in template:
            metrics = []
            for metric in template["AgentMetrics"]:
                name = metric["MetricName"]
                if name not in self.figure_names:
                    metrics.append(metric)
                elif name in figures:
                    metrics.append({**metric, "Value": float(figures[name])})
            out["AgentMetrics"] = metrics
        if "Models" in template:
            out["Models"] = [self._fill_model(m, models) for m in template["Models"]]
        return out

    def _fill_model(self, entry: dict[str, Any],
                    models: Mapping[tuple[str, str], ModelState]) -> dict[str, Any]:
        key = (entry["ModelName"], entry["ModelVersion"])
        state = models.get(key, ModelState())
        out = {k: v for k, v in entry.items()
               if k not in ("LatestInference", "LatestSampleTime")}
        inference = [ns for ns in (self.window_inference_ns.get(key),
                                   state.latest_inference_ns) if ns is not None]
        if state.latest_sample_ns is not None:
            out["LatestSampleTime"] = _datetime(state.latest_sample_ns)
        if inference:
            out["LatestInference"] = _datetime(max(inference))
        return out


def record_requests(
    snap: Snapshot,
    identity: DeviceIdentity,
    *,
    spool_seq: int,
    spool_id: str,
    limits: SplitLimits | None = None,
    options: PayloadOptions | None = None,
    agent_version: str | None = None,
    figure_names: Collection[str] = AGENT_FIGURE_NAMES,
) -> RecordRequests:
    """The requests of the spool record ``spool_seq`` (the window ``snap``) of the spool
    ``spool_id``, with room for the agent's figures named in ``figure_names`` (a figure not
    named there is not sent with a window); raises ``HeartbeatValidationError`` (or its
    ``HeartbeatTooLargeError``) when the window cannot make a valid request.  ``limits`` and
    ``options`` default to ``SplitLimits()`` and ``PayloadOptions()``."""
    limits = SplitLimits() if limits is None else limits
    options = PayloadOptions() if options is None else options
    figures = dict.fromkeys(figure_names, _WIDEST_VALUE)
    own = window_metrics(snap)
    assert not own.keys() & figures.keys(), "a window metric may not share a figure's name"
    widest = _widest_time_ns()
    keys = {(s.model, s.version) for s in snap.series}
    params = build_heartbeat(
        [snap], identity, agent_metrics={**own, **figures},
        model_state={key: ModelState(widest, widest) for key in keys},
        agent_version=agent_version, options=options, window_seq=True,
    )
    when = params["AgentMetrics"][0].get("Timestamp")
    room = spool_seq_metric(spool_id, _MAX_PARTS, _MAX_PARTS, spool_seq, when)
    reserve = request_bytes({"AgentMetrics": [room]}) - request_bytes({}) + len(", ")
    if limits.max_agent_metrics < 2 or limits.max_bytes <= reserve:
        raise ValueError(f"split limits {limits} leave no room for the {SPOOL_SEQ} metric")
    parts = split_heartbeat(params, replace(limits, max_bytes=limits.max_bytes - reserve,
                                            max_agent_metrics=limits.max_agent_metrics - 1))
    if len(parts) > _MAX_PARTS:
        raise ValueError(f"a record cut into {len(parts)} requests; at most {_MAX_PARTS}")
    for k, part in enumerate(parts, 1):
        metric = spool_seq_metric(spool_id, k, len(parts), spool_seq, when)
        part["AgentMetrics"] = [*part.get("AgentMetrics", ()), metric]
    inference: dict[tuple[str, str], int] = {}
    for s in snap.series:
        if s.last_wall_ns is not None and s.count:
            key = (s.model, s.version)
            inference[key] = max(inference.get(key, s.last_wall_ns), s.last_wall_ns)
    return RecordRequests(tuple(parts), inference, frozenset(figure_names))


def _datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


@functools.lru_cache(maxsize=1)
def _widest_time_ns() -> int:
    """A valid timestamp whose wire form (as the installed botocore writes it) is at least as
    long as any other valid timestamp's: the room one model time keeps."""
    base = int((_LAST_DAY - _EPOCH).total_seconds()) * 1_000_000_000
    candidates = [base + us * 1000 for us in (0, 123457, 234567, 345679, 456791, 987653)]
    return max(candidates,
               key=lambda ns: request_bytes({"AgentMetrics": [
                   {"MetricName": "room", "Dimension": "all", "Value": 0.0,
                    "Timestamp": _datetime(ns)}]}))
