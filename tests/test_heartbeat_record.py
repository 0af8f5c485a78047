"""A spool record's requests (the agent's side of the resend-deduplication contract,
/work/notes/dedup-contract.md, docs/agent.md): every request made from a record carries one
``spool-seq`` metric, ``<spool id>/<part>/<parts>``, and the cut into parts is a pure function
of the record, whatever the agent's figures and model times are when it is (re)sent."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_server import Action, ScriptedServer

from edgetelemetry import Recorder, Snapshot
from edgetelemetry.agent import Agent
from edgetelemetry.agent.spool import Spool
from edgetelemetry.heartbeat import (
    DeviceIdentity,
    ModelState,
    SplitLimits,
    request_bytes,
    validate_send_heartbeat,
)
from edgetelemetry.heartbeat.agent_metrics import AGENT_FIGURE_NAMES, agent_figures
from edgetelemetry.heartbeat.record import record_requests

IDENTITY = DeviceIdentity("cam-01", "line-1")
SPOOL_ID = "0123456789abcdef0123456789abcdef"
SMALL = SplitLimits(max_model_metrics=30, max_bytes=16 * 1024)
KEYS = [("resnet18", "1.0"), ("yolo-v5", "2.0")]


@pytest.fixture(scope="module", name="snap")
def snap_fixture() -> Snapshot:
    with Recorder(max_series=64) as rec:
        for model, version in KEYS:
            for i in range(12):
                h = rec.histogram(f"metric{i}", unit="ms", model=model, version=version,
                                  dimension=f"camera-{i % 3}")
                h.record_many([float(v) for v in range(1, 50)])
        return rec.snapshot()


def spool_metric(part: dict[str, Any]) -> dict[str, Any]:
    (metric,) = [m for m in part["AgentMetrics"] if m["MetricName"] == "spool-seq"]
    return metric


def model_metrics(parts: list[dict[str, Any]]) -> list[list[Any]]:
    return [[(e["ModelName"], e["ModelVersion"], m["MetricName"], m["Dimension"], m["Value"])
             for e in p.get("Models", ()) for m in e["ModelMetrics"]] for p in parts]


def test_every_part_carries_one_spool_seq_naming_its_place(snap: Snapshot) -> None:
    parts = record_requests(snap, IDENTITY, spool_seq=4097, spool_id=SPOOL_ID,
                            limits=SMALL).filled({}, {})
    assert len(parts) > 3
    for k, part in enumerate(parts, 1):
        metric = spool_metric(part)
        assert metric["Dimension"] == f"{SPOOL_ID}/{k}/{len(parts)}"
        assert metric["Value"] == 4097.0
        assert metric["Timestamp"] == datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(
            microseconds=snap.end_wall_ns // 1000)
        validate_send_heartbeat(part)
        assert request_bytes(part) <= SMALL.max_bytes
        assert len(part["AgentMetrics"]) <= SMALL.max_agent_metrics


_figure_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                           st.integers(-10**15, 10**15).map(float))
_times = st.one_of(st.none(), st.integers(1_577_836_800_000_000_000, 253_402_300_799_000_000_000))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(figures=st.one_of(st.none(), st.dictionaries(st.sampled_from(AGENT_FIGURE_NAMES),
                                                    _figure_values)),
       states=st.dictionaries(st.sampled_from(KEYS + [("idle", "1.0")]),
                              st.tuples(_times, _times)))
def test_the_parts_never_depend_on_the_agent_state(
        snap: Snapshot, figures: dict[str, float] | None,
        states: dict[tuple[str, str], tuple[int | None, int | None]]) -> None:
    parts = record_requests(snap, IDENTITY, spool_seq=7, spool_id=SPOOL_ID, limits=SMALL)
    bare = parts.filled(None, {})
    models = {k: ModelState(*v) for k, v in states.items()}
    full = parts.filled(figures, models)
    assert len(full) == len(bare)
    assert model_metrics(full) == model_metrics(bare)
    assert [spool_metric(p) for p in full] == [spool_metric(p) for p in bare]
    sent = {m["MetricName"]: m["Value"] for p in full for m in p.get("AgentMetrics", ())}
    for name, value in (figures or {}).items():
        assert sent[name] == float(value)
    for part in full:
        validate_send_heartbeat(part)
        assert request_bytes(part) <= SMALL.max_bytes
        for entry in part.get("Models", ()):
            assert ("idle", "1.0") != (entry["ModelName"], entry["ModelVersion"])


def test_every_figure_the_agent_reports_has_its_room() -> None:
    spool = dict.fromkeys(["records", "bytes", "files", "oldest_unsent_age_s",
                           "evicted_records", "evicted_bytes", "evicted_by_age_records",
                           "torn_tails", "dead_letters", "dead_letters_dropped",
                           "cursor_resets", "write_failures", "write_faulted",
                           "corruption_events"], 1)
    from edgetelemetry.heartbeat.agent_metrics import AGENT_COUNTERS, SENDER_FIGURES
    sender = dict.fromkeys(SENDER_FIGURES, 1)
    counters = dict.fromkeys(AGENT_COUNTERS, 1)
    names = agent_figures(spool, sender, counters, state_corruption_events=0,
                          deployments_pending=0, uptime_s=1.0)
    assert set(names) <= set(AGENT_FIGURE_NAMES)
    assert len(AGENT_FIGURE_NAMES) == len(set(AGENT_FIGURE_NAMES))


def test_the_model_times_are_the_later_of_the_window_and_the_state(snap: Snapshot) -> None:
    parts = record_requests(snap, IDENTITY, spool_seq=1, spool_id=SPOOL_ID)
    window_ns = max(s.last_wall_ns for s in snap.series if s.model == "resnet18")
    later = window_ns + 5_000_000_000
    (part,) = parts.filled(None, {("resnet18", "1.0"): ModelState(later, later),
                                  ("yolo-v5", "2.0"): ModelState(window_ns - 10**9, None)})
    by_name = {e["ModelName"]: e for e in part["Models"]}
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert by_name["resnet18"]["LatestInference"] == epoch + timedelta(microseconds=later // 1000)
    assert by_name["resnet18"]["LatestSampleTime"] == by_name["resnet18"]["LatestInference"]
    assert "LatestSampleTime" not in by_name["yolo-v5"]
    yolo_ns = max(s.last_wall_ns for s in snap.series if s.model == "yolo-v5")
    assert by_name["yolo-v5"]["LatestInference"] == epoch + timedelta(
        microseconds=yolo_ns // 1000)


# -- the spool's identity -------------------------------------------------------------------


def test_a_spool_keeps_its_identity_and_a_recreated_one_gets_a_new_one(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, fsync="never") as s:
        first = s.spool_id
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert (d / "spool-id").read_text() == first + "\n"
    assert (d / "spool-id").stat().st_mode & 0o777 == 0o600
    (d / "cursor").unlink()  # a lost cursor resends everything: under the same identity
    with Spool(d, fsync="never") as s:
        assert s.spool_id == first
    (d / "spool-id").write_text("not an id\n")
    with Spool(d, fsync="never") as s:
        assert s.spool_id != first and s.stats()["corruption_events"] == 1
        second = s.spool_id
    for p in sorted(d.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    d.rmdir()
    with Spool(d, fsync="never") as s:
        assert s.spool_id not in (first, second)


# -- the agent: a resend after a restart matches the first send part for part ---------------


@pytest.fixture(name="scripted")
def scripted_fixture() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _agent(tmp_path: Path, url: str, rec: Recorder) -> Agent:
    return Agent(rec, device_name="cam-01", fleet="line-1", endpoint_url=url,
                 spool_dir=tmp_path / "spool", aws_access_key_id="AKIDRECORD000001",
                 aws_secret_access_key="s", fsync="never", max_attempts=1, jitter=0,
                 backoff_base_s=0, backoff_cap_s=0, send_backoff_cap_s=0, backlog_rate=1000,
                 split_limits=SMALL)


def test_a_record_resent_after_a_restart_is_cut_the_same_way(
        tmp_path: Path, scripted: ScriptedServer) -> None:
    with Recorder(max_series=64) as rec:
        for model, version in KEYS:
            for i in range(12):
                rec.histogram(f"metric{i}", unit="ms", model=model, version=version).record(1.0)
        # the status heartbeat, then part 1 of the record; part 2 fails, and so does every
        # request until the agent is gone (its close() cannot send either)
        scripted.script(Action.ok(), Action.ok())
        scripted.default = Action.unavailable()
        agent = _agent(tmp_path, scripted.url, rec)
        assert agent.tick().failure is not None
        agent.close()
        first = [r.json for r in scripted.requests if r.action.status == 200
                 and "spool-seq" in str(r.json.get("AgentMetrics"))]
        time.sleep(0.01)
        scripted.default = Action.ok()
        scripted.requests.clear()
        with Recorder(max_series=64) as rec2, _agent(tmp_path, scripted.url, rec2) as agent2:
            assert agent2.tick().failure is None
        resent = [r.json for r in scripted.requests
                  if spool_metric_or_none(r.json) is not None
                  and spool_metric_or_none(r.json)["Value"] == spool_metric(first[0])["Value"]]
    assert len(first) == 1 and len(resent) > 1
    assert spool_metric(resent[0]) == spool_metric(first[0])  # the same key: dropped as a dup
    assert model_metrics(resent[:1]) == model_metrics(first)
    assert [spool_metric(p)["Dimension"].split("/")[1:] for p in resent] == [
        [str(k), str(len(resent))] for k in range(1, len(resent) + 1)]


def spool_metric_or_none(body: dict[str, Any]) -> dict[str, Any] | None:
    found = [m for m in body.get("AgentMetrics", ()) if m["MetricName"] == "spool-seq"]
    return found[0] if found else None


def test_requests_that_are_not_records_carry_no_spool_seq(
        tmp_path: Path, scripted: ScriptedServer) -> None:
    with Recorder() as rec, _agent(tmp_path, scripted.url, rec) as agent:
        agent.report_deployment({"DeploymentName": "resnet-v2", "DeploymentStatus": "SUCCESS"})
        agent.tick()
    kinds = []
    for r in scripted.requests:
        body = r.json
        if "DeploymentResult" in body:
            kinds.append("deployment")
            assert spool_metric_or_none(body) is None
        elif spool_metric_or_none(body) is None:
            kinds.append("status")
            assert not any(e["ModelMetrics"] for e in body.get("Models", ()))
        else:
            kinds.append("record")
    assert {"deployment", "status", "record"} <= set(kinds)
