"""The fleet view (``edgetelemetry fleet status``, ``edgetelemetry.server.fleet``): devices
connected or offline, models active or sampling, latest latency percentiles, series over time.
Heartbeats reach a real endpoint through real boto3, on each store backend; the status is read
from the store read-only."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest_server import AKID, CREDENTIALS, REGION, SECRET, client
from store_backends import store_target_fixture  # noqa: F401 - the fixture

from edgetelemetry.cli import main as cli_main
from edgetelemetry.server import EndpointServer, Store, StoreError
from edgetelemetry.server.fleet import (
    DEFAULT_OFFLINE_AFTER,
    fleet_status,
    latency_series,
    open_read_only,
    render_text,
)

REPO = Path(__file__).resolve().parents[1]
FLEET = "line-1"


class ShiftedClock:
    """The server clock: real time plus an offset the test moves (within SigV4's 15 minutes)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def model_entry(
    name: str,
    version: str,
    ts: float,
    latency: Mapping[str, float] | None = None,
    *,
    inference: float | None = None,
    sample: float | None = None,
    dimension: str = "all",
    metric: str = "latency-ms",
    extra: Sequence[tuple[str, float]] = (),
) -> dict[str, Any]:
    """One ``Models[]`` entry: percentiles of ``metric`` stamped ``ts``, plus ``extra`` metrics."""
    entry: dict[str, Any] = {"ModelName": name, "ModelVersion": version}
    if inference is not None:
        entry["LatestInference"] = inference
    if sample is not None:
        entry["LatestSampleTime"] = sample
    metrics = [
        {"MetricName": f"{metric}-{p}", "Value": v, "Timestamp": ts, "Dimension": dimension}
        for p, v in (latency or {}).items()
    ]
    metrics += [
        {"MetricName": n, "Value": v, "Timestamp": ts, "Dimension": dimension} for n, v in extra
    ]
    entry["ModelMetrics"] = metrics
    return entry


def send(edge: Any, device: str, models: list[dict[str, Any]], fleet: str = FLEET) -> None:
    answer = edge.send_heartbeat(
        AgentVersion="1.2", DeviceName=device, DeviceFleetName=fleet, Models=models
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def figures(n: int, i: int) -> dict[str, float]:
    """Distinct, recognisable percentiles of point ``i`` of ``n``."""
    base = 10.0 + i
    return {"p50": base, "p90": base * 1.5, "p99": base * 2 + n}


def populate(server: EndpointServer, clock: ShiftedClock, points: int = 8) -> float:
    """A fleet of five devices, every state represented; returns the real time of the last send.

    - cam-1: resnet18 1.0 and yolo-v5 2.0, ``points`` heartbeats a minute apart, active, sampling;
    - cam-2: resnet18 1.0, ``points`` heartbeats, active, sampling long ago;
    - cam-3: registered, never heard from;
    - cam-4: heartbeats received 10 minutes ago (server clock), so offline;
    - cam-5: sent heartbeats, then deregistered.
    """
    store = server.store
    store.register_fleet(FLEET)
    store.register_devices(FLEET, ["cam-1", "cam-2", "cam-3", "cam-4", "cam-5"])
    edge = client(server.url)
    now = time.time()
    clock.offset = -600.0
    t = now - 600
    send(edge, "cam-4", [model_entry("resnet18", "1.0", t, figures(1, 0), inference=t)])
    clock.offset = 0.0
    send(edge, "cam-5", [model_entry("resnet18", "1.0", now, figures(1, 0), inference=now)])
    store.deregister_devices(["cam-5"])
    for i in range(points):
        t = now - (points - 1 - i) * 60
        send(
            edge,
            "cam-1",
            [
                model_entry("resnet18", "1.0", t, figures(points, i), inference=t, sample=t),
                model_entry("yolo-v5", "2.0", t, figures(points, i + 100), inference=t, sample=t),
            ],
        )
        send(
            edge,
            "cam-2",
            [model_entry("resnet18", "1.0", t, figures(points, i), inference=t, sample=now - 3600)],
        )
    return time.time()


@pytest.fixture(name="fleet_server")
def fleet_server_fixture(store_target: str) -> Iterator[tuple[EndpointServer, ShiftedClock]]:
    """An endpoint on each store backend (``store_backends.py``): a SQLite file, a PostgreSQL
    database."""
    clock = ShiftedClock()
    server = EndpointServer(store_target, credentials=CREDENTIALS, region=REGION, clock=clock)
    server.start()
    try:
        yield server, clock
    finally:
        server.stop()


def by_name(status: Any) -> dict[str, Any]:
    return {d.name: d for d in status.devices}


# -- status ----------------------------------------------------------------------------------


def test_device_states_and_model_flags(
    fleet_server: tuple[EndpointServer, ShiftedClock],
) -> None:
    server, clock = fleet_server
    populate(server, clock, points=4)
    status = fleet_status(server.store)
    devices = by_name(status)
    assert {n: d.state for n, d in devices.items()} == {
        "cam-1": "connected",
        "cam-2": "connected",
        "cam-3": "never",
        "cam-4": "offline",
        "cam-5": "deregistered",
    }
    assert status.summary() == {
        "devices": 5,
        "connected": 2,
        "offline": 1,
        "never": 1,
        "deregistered": 1,
    }
    assert devices["cam-1"].connected and not devices["cam-4"].connected
    assert devices["cam-3"].last_heartbeat is None and devices["cam-3"].models == ()
    assert devices["cam-1"].agent_version == "1.2"

    cam1 = {m.name: m for m in devices["cam-1"].models}
    assert set(cam1) == {"resnet18", "yolo-v5"}
    assert cam1["yolo-v5"].version == "2.0"
    assert all(m.active and m.sampling for m in cam1.values())
    (cam2,) = devices["cam-2"].models
    assert cam2.active and not cam2.sampling  # LatestSampleTime an hour old
    (cam4,) = devices["cam-4"].models
    assert not cam4.active and not cam4.sampling  # LatestInference 10 min old, no sample time


def test_offline_after_is_the_recency_window(
    fleet_server: tuple[EndpointServer, ShiftedClock],
) -> None:
    server, clock = fleet_server
    populate(server, clock, points=2)
    last = by_name(fleet_status(server.store))["cam-1"].last_heartbeat
    assert last is not None
    assert DEFAULT_OFFLINE_AFTER == 180
    just_in = fleet_status(server.store, now=last + 180)
    just_out = fleet_status(server.store, now=last + 180.5)
    assert by_name(just_in)["cam-1"].state == "connected"
    assert by_name(just_out)["cam-1"].state == "offline"
    assert not any(m.active for m in by_name(just_out)["cam-1"].models)
    # a wider window brings cam-4 (10 minutes quiet) back
    wide = by_name(fleet_status(server.store, offline_after=900))
    assert wide["cam-4"].state == "connected" and wide["cam-4"].models[0].active
    with pytest.raises(ValueError):
        fleet_status(server.store, offline_after=0)
    assert [d.name for d in fleet_status(server.store, device="cam-2").devices] == ["cam-2"]
    assert fleet_status(server.store, fleet="no-such-fleet").devices == ()


def test_latest_percentiles_follow_the_metric_timestamp(
    fleet_server: tuple[EndpointServer, ShiftedClock],
) -> None:
    """The newest *Timestamp* wins, not the newest arrival; other names and stats are ignored;
    each dimension and each base name is its own series; each version its own figures."""
    server, _ = fleet_server
    server.store.register_fleet(FLEET)
    server.store.register_devices(FLEET, ["cam-9"])
    edge = client(server.url)
    now = time.time()
    send(
        edge,
        "cam-9",
        [
            model_entry(
                "resnet18",
                "1.0",
                now - 60,
                {"p50": 5.0, "p90": 6.0, "p99": 7.0},
                inference=now,
                extra=[
                    ("latency-ms-p95", 99.0),
                    ("latency-ms-mean", 98.0),
                    ("confidence-p50", 0.9),
                    ("latency-ms-count", 40.0),
                ],
            ),
            model_entry(
                "resnet18", "1.0", now - 60, {"p50": 1.5, "p99": 2.5}, dimension="camera-front"
            ),
            model_entry(
                "resnet18",
                "1.0",
                now - 60,
                {"p50": 300.0, "p90": 400.0, "p99": 500.0},
                metric="latency-preprocess-us",
            ),
        ],
    )
    # a backlog window arriving later, older Timestamp: it must not become "latest"
    send(
        edge,
        "cam-9",
        [model_entry("resnet18", "1.0", now - 600, {"p50": 1e3, "p90": 1e3, "p99": 1e3})],
    )
    # version 2.0 reports its own figures
    send(
        edge,
        "cam-9",
        [
            model_entry(
                "resnet18", "2.0", now - 30, {"p50": 8.0, "p90": 9.0, "p99": 10.0}, inference=now
            )
        ],
    )
    device = by_name(fleet_status(server.store))["cam-9"]
    models = {(m.name, m.version): m for m in device.models}
    v1 = {
        (f.metric, f.dimension): (f.p50, f.p90, f.p99, f.timestamp)
        for f in models[("resnet18", "1.0")].latency
    }
    assert v1 == {
        ("latency-ms", "all"): (5.0, 6.0, 7.0, pytest.approx(now - 60, abs=1)),
        ("latency-ms", "camera-front"): (1.5, None, 2.5, pytest.approx(now - 60, abs=1)),
        ("latency-preprocess-us", "all"): (300.0, 400.0, 500.0, pytest.approx(now - 60, abs=1)),
    }
    (v2,) = models[("resnet18", "2.0")].latency
    assert (v2.metric, v2.dimension, v2.p50, v2.p90, v2.p99) == ("latency-ms", "all", 8, 9, 10)


def test_latency_series_for_the_plots(fleet_server: tuple[EndpointServer, ShiftedClock]) -> None:
    server, clock = fleet_server
    n = 8
    populate(server, clock, points=n)
    series = {(s.model, s.metric, s.dimension): s for s in latency_series(server.store, "cam-1")}
    assert set(series) == {("resnet18", "latency-ms", "all"), ("yolo-v5", "latency-ms", "all")}
    resnet = series[("resnet18", "latency-ms", "all")]
    assert resnet.versions == ("1.0",) and not resnet.truncated
    for p in ("p50", "p90", "p99"):
        points = resnet.points[p]
        assert len(points) == n
        assert [t for t, _ in points] == sorted(t for t, _ in points)
        assert [v for _, v in points] == [figures(n, i)[p] for i in range(n)]
    # since: the newest three windows only
    newest = resnet.points["p50"][-1][0]
    recent = latency_series(server.store, "cam-1", since=newest - 150)
    assert all(len(s.points["p99"]) == 3 for s in recent)
    # more points than max_points: the newest kept, flagged
    cut = next(
        s for s in latency_series(server.store, "cam-1", max_points=5) if s.model == "yolo-v5"
    )
    assert cut.truncated and len(cut.points["p90"]) == 5
    assert cut.points["p90"][-1][1] == figures(n, n - 1 + 100)["p90"]
    assert latency_series(server.store, "cam-3") == []
    with pytest.raises(ValueError):
        latency_series(server.store, "cam-1", max_points=0)


def test_status_json_document_and_text(fleet_server: tuple[EndpointServer, ShiftedClock]) -> None:
    server, clock = fleet_server
    populate(server, clock, points=3)
    status = fleet_status(server.store)
    doc = json.loads(json.dumps(status.to_json(), allow_nan=False))
    assert doc["summary"]["connected"] == 2 and doc["offline_after"] == 180
    cam1 = next(d for d in doc["devices"] if d["name"] == "cam-1")
    assert cam1["state"] == "connected" and cam1["connected"] is True
    assert 0 <= cam1["heartbeat_age"] < 60
    resnet = next(m for m in cam1["models"] if m["name"] == "resnet18")
    assert resnet["active"] and resnet["sampling"]
    assert resnet["latency"][0] | {"timestamp": 0} == {
        "metric": "latency-ms",
        "dimension": "all",
        "timestamp": 0,
        **figures(3, 2),
    }
    text = render_text(status)
    lines = text.splitlines()
    assert "5 device(s), 2 connected, 1 offline, 1 never seen, 1 deregistered" in lines[0]
    assert lines[2].split()[:5] == ["DEVICE", "FLEET", "STATUS", "LAST", "HEARTBEAT"]
    row = next(line for line in lines if line.startswith("cam-1 "))
    assert row.split()[:4] == ["cam-1", FLEET, "connected", row.split()[3]]
    assert "resnet18" in row and "active" in row and "sampling" in row and "latency-ms" in row
    assert f"{figures(3, 2)['p99']:.2f}" in row
    assert next(line for line in lines if line.startswith("cam-3 ")).split()[2:4] == [
        "never",
        "never",
    ]
    assert "offline" in next(line for line in lines if line.startswith("cam-4 "))


# -- reading the file ----------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "edgetelemetry", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_reads_the_store_while_the_server_writes_it(
    fleet_server: tuple[EndpointServer, ShiftedClock], store_target: str
) -> None:
    server, clock = fleet_server
    populate(server, clock, points=3)
    path = store_target
    done = run_cli("fleet", "status", "--store", path, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert {d["name"]: d["state"] for d in doc["devices"]}["cam-1"] == "connected"
    # the server keeps writing while a reader holds the file
    send(
        client(server.url),
        "cam-2",
        [model_entry("resnet18", "1.0", time.time(), {"p50": 1.0, "p90": 2.0, "p99": 3.0})],
    )
    text = run_cli("fleet", "status", "--store", path)
    assert text.returncode == 0, text.stderr
    cam2 = next(line for line in text.stdout.splitlines() if line.startswith("cam-2 "))
    assert cam2.split()[-3:] == ["1.00", "2.00", "3.00"]
    quick = run_cli(
        "fleet", "status", "--store", path, "--json", "--offline-after", "0.001", "--fleet", FLEET
    )
    assert json.loads(quick.stdout)["summary"]["connected"] == 0
    assert server.store.heartbeat_count() == 2 * 3 + 2 + 1


def test_cli_in_process_and_bad_arguments(
    fleet_server: tuple[EndpointServer, ShiftedClock],
    store_target: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, clock = fleet_server
    populate(server, clock, points=1)
    assert cli_main(["fleet", "status", "--store", store_target, "--device", "cam-4"]) == 0
    out = capsys.readouterr().out
    assert "1 device(s), 0 connected, 1 offline" in out
    for bad in ("0", "-5", "nan", "soon"):
        with pytest.raises(SystemExit) as info:
            cli_main(["fleet", "status", "--store", store_target, "--offline-after", bad])
        assert info.value.code == 2
        assert "--offline-after" in capsys.readouterr().err


def status_exit(store: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``edgetelemetry fleet status --store STORE`` in this process: exit status and stderr."""
    status = cli_main(["fleet", "status", "--store", str(store)])
    return status, capsys.readouterr().err


def test_read_only_never_creates_or_changes_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.sqlite3"
    status, err = status_exit(missing, capsys)
    assert status == 2 and "no store at" in err
    assert not missing.exists()

    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = hashlib.sha256(foreign.read_bytes()).hexdigest()
    status, err = status_exit(foreign, capsys)
    assert status == 2 and "of another application" in err
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == before

    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    status, err = status_exit(text, capsys)
    assert status == 2 and "not a usable SQLite database" in err
    assert text.read_text() == "not a database\n" * 100

    with Store(str(tmp_path / "ok.sqlite3")) as store:
        store.register_fleet(FLEET)
    with open_read_only(tmp_path / "ok.sqlite3") as ro:
        assert [d.name for d in ro.devices()] == []
        with pytest.raises(StoreError, match="read-only"):
            ro.register_fleet("line-2")
    with Store(str(tmp_path / "ok.sqlite3")) as store:
        assert store.devices() == []
    with pytest.raises(StoreError):
        open_read_only(":memory:")


# -- the edgetelemetry command -----------------------------------------------------------------


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        cli_main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_serve_and_register_are_wired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "usage: edgetelemetry serve" in help_text(capsys, "serve")
    assert "--credentials-file" in help_text(capsys, "serve")
    assert "usage: edgetelemetry register" in help_text(capsys, "register")
    assert "usage: edgetelemetry fleet status" in help_text(capsys, "fleet", "status")
    assert "--offline-after" in help_text(capsys, "-v", "fleet", "status")
    top = help_text(capsys)
    assert all(word in top for word in ("demo", "serve", "register", "fleet"))
    assert "--seconds" in help_text(capsys, "demo")
    # as a process, the way a user runs it (python -m edgetelemetry)

    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"fleets": [{"name": FLEET, "devices": ["cam-1", "cam-2"]}]}))
    store = tmp_path / "s.sqlite3"
    done = run_cli("register", "--store", str(store), str(registry))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["devices"] == 2
    status = json.loads(run_cli("fleet", "status", "--store", str(store), "--json").stdout)
    assert [(d["name"], d["state"]) for d in status["devices"]] == [
        ("cam-1", "never"),
        ("cam-2", "never"),
    ]

    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({AKID: SECRET}))
    creds.chmod(0o644)
    refused = run_cli(
        "serve", "--store", str(store), "--port", "0", "--credentials-file", str(creds)
    )
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
