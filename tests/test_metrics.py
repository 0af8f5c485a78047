"""``GET /metrics`` (``edgetelemetry.server.metrics``): the Prometheus text of a real endpoint fed
by real boto3 heartbeats, parsed with prometheus_client's own parser; its access rules; the
cardinality cap; a real Prometheus scraping it and answering PromQL; the shipped rules checked by
``promtool`` and evaluated by that Prometheus."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_server import CREDENTIALS, REGION, client
from prometheus_client.parser import text_string_to_metric_families
from realservices import Prometheus, start_or_fail
from store_backends import registered, store_factory_fixture, store_target_fixture  # noqa: F401
from test_fleet import FLEET, model_entry
from test_fleet_page import get
from test_server_cli import write_private

from edgetelemetry.server import EndpointServer
from edgetelemetry.server.cli import main as serve_main
from edgetelemetry.server.metrics import read_token_file

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "contrib" / "prometheus" / "edgetelemetry-rules.yml"
TOKEN = "scrape-token-0123456789abcdef"


def window(ts: float, p99: float, count: float = 40, dropped: float = 0) -> list[tuple[str, float]]:
    return [
        ("latency-ms-count", count),
        ("latency-ms-sum", count * 5),
        ("latency-ms-p50", 5.0),
        ("latency-ms-p90", 8.0),
        ("latency-ms-p99", p99),
        ("latency-ms-dropped", dropped),
        ("queue-depth", 3.0),
    ]


def send(
    server: EndpointServer,
    device: str,
    models: list[dict[str, Any]],
    agent: dict[str, float] | None = None,
) -> None:
    edge = client(server.url)
    params: dict[str, Any] = {
        "AgentVersion": "1.2",
        "DeviceName": device,
        "DeviceFleetName": FLEET,
        "Models": models,
    }
    if agent:
        now = time.time()
        params["AgentMetrics"] = [
            {"MetricName": k, "Value": v, "Timestamp": now, "Dimension": "all"}
            for k, v in agent.items()
        ]
    answer = edge.send_heartbeat(**params)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def entry(model: str, version: str, ts: float, p99: float, **kw: float) -> dict[str, Any]:
    return model_entry(model, version, ts, inference=ts, extra=window(ts, p99, **kw))


@pytest.fixture(name="fed")
def fed_fixture(tmp_path: Path) -> Iterator[EndpointServer]:
    """cam-1 (two windows of resnet18 1.0, then yolo 2.0), cam-2 (one window, drops and dead
    letters), cam-3 registered and silent."""
    server = EndpointServer(str(tmp_path / "m.sqlite3"), credentials=CREDENTIALS, region=REGION)
    server.start()
    try:
        registered(server.store, FLEET, ["cam-1", "cam-2", "cam-3"])
        now = time.time()
        send(server, "cam-1", [entry("resnet18", "1.0", now - 60, 30.0)])
        send(
            server,
            "cam-1",
            [entry("resnet18", "1.0", now, 42.5), entry("yolo", "2.0", now, 9)],
            agent={"spool-records": 7, "dead-letters": 0},
        )
        send(
            server,
            "cam-2",
            [entry("resnet18", "1.1", now, 12.0, dropped=3)],
            agent={"spool-records": 0, "dead-letters": 2},
        )
        yield server
    finally:
        server.stop()


def scrape(server: EndpointServer, **headers: str) -> dict[str, Any]:
    answer = get(server.port, "/metrics", headers=headers or None)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(answer.body.decode())}


def samples(families: dict[str, Any], family_name: str, /, **labels: str) -> list[Any]:
    family = families[family_name]
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def value(families: dict[str, Any], family_name: str, /, **labels: str) -> float:
    found = samples(families, family_name, **labels)
    assert len(found) == 1, (family_name, labels, found)
    return float(found[0].value)


def test_metrics_carry_the_latest_window_per_device_model_version(fed: EndpointServer) -> None:
    m = scrape(fed)
    one = {"device": "cam-1", "model": "resnet18", "version": "1.0", "metric": "latency-ms"}
    assert value(m, "edgetelemetry_window_quantile", quantile="0.99", **one) == 42.5
    assert value(m, "edgetelemetry_window_quantile", quantile="0.5", **one) == 5.0
    assert value(m, "edgetelemetry_window_count", **one) == 40
    assert value(m, "edgetelemetry_window_sum", **one) == 200
    assert value(m, "edgetelemetry_window_dropped", device="cam-2") == 3
    assert (
        value(m, "edgetelemetry_model_gauge", device="cam-1", model="yolo", metric="queue-depth")
        == 3
    )
    assert value(m, "edgetelemetry_agent_metric", device="cam-2", name="dead-letters") == 2
    assert value(m, "edgetelemetry_agent_metric", device="cam-1", name="spool-records") == 7
    assert value(m, "edgetelemetry_device_up", device="cam-1") == 1
    assert value(m, "edgetelemetry_device_up", device="cam-3") == 0
    assert samples(m, "edgetelemetry_device_last_heartbeat_timestamp_seconds", device="cam-3") == []
    seen = value(m, "edgetelemetry_device_last_heartbeat_timestamp_seconds", device="cam-1")
    assert abs(seen - time.time()) < 60
    assert value(m, "edgetelemetry_device_info", device="cam-1", agent_version="1.2") == 1
    # every model series has its window's end; metric names are labels, not family names
    stamps = samples(m, "edgetelemetry_window_timestamp_seconds", device="cam-1")
    assert {(s.labels["model"], s.labels["metric"]) for s in stamps} == {
        ("resnet18", "latency-ms"),
        ("resnet18", "queue-depth"),
        ("yolo", "latency-ms"),
        ("yolo", "queue-depth"),
    }
    assert value(m, "edgetelemetry_exporter_series_dropped") == 0
    # the endpoint's own requests: three heartbeats answered 200, this is the second scrape
    assert value(m, "edgetelemetry_endpoint_requests", operation="SendHeartbeat", status="200") == 3
    assert m["edgetelemetry_endpoint_requests"].type == "counter"
    again = scrape(fed)
    assert value(again, "edgetelemetry_endpoint_requests", operation="metrics", status="200") == 1


def test_metrics_access_rules(fed: EndpointServer, tmp_path: Path) -> None:
    # loopback peer but a foreign Host name: refused, as the fleet page does (DNS rebinding)
    assert get(fed.port, "/metrics", headers={"Host": "evil.example"}).status == 403
    assert get(fed.port, "/metrics", method="POST", body=b"").status == 405
    with EndpointServer(None, credentials=CREDENTIALS, metrics_token=TOKEN) as tokened:
        assert get(tokened.port, "/metrics").status == 401  # loopback is not enough with a token
        wrong = get(tokened.port, "/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401 and wrong.headers["www-authenticate"] == "Bearer"
        ok = get(
            tokened.port,
            "/metrics",
            headers={"Authorization": f"Bearer {TOKEN}", "Host": "metrics.example"},
        )
        assert ok.status == 200 and b"edgetelemetry_device_up" in ok.body
    with EndpointServer(None, credentials=CREDENTIALS, metrics=False) as off:
        assert get(off.port, "/metrics").status == 404
    with pytest.raises(ValueError, match="at least 16"):
        EndpointServer(None, credentials=CREDENTIALS, metrics_token="short")


def test_cardinality_cap_leaves_whole_devices_out_and_says_so(tmp_path: Path) -> None:
    with EndpointServer(
        str(tmp_path / "c.sqlite3"), credentials=CREDENTIALS, metrics_max_series=27
    ) as server:
        registered(server.store, FLEET, ["cam-1", "cam-2", "cam-3"])
        now = time.time()
        for device in ("cam-1", "cam-2", "cam-3"):
            send(server, device, [entry("resnet18", "1.0", now, 20.0)])
        m = scrape(server)
        # 3 devices x 3 device series = 9; each device's model series cost 7 metrics + 2 stamps
        assert value(m, "edgetelemetry_exporter_series") == 9 + 9 + 9
        assert value(m, "edgetelemetry_exporter_series_dropped") == 9
        assert {s.labels["device"] for s in m["edgetelemetry_window_count"].samples} == {
            "cam-1",
            "cam-2",
        }
        assert len(samples(m, "edgetelemetry_device_up")) == 3  # never dropped


def test_store_reads_for_metrics_and_alerts(store_factory: Callable[..., Any]) -> None:
    store = registered(store_factory(), FLEET, ["cam-1", "cam-2"])
    now = time.time()
    for i, status in enumerate(("SUCCESS", "FAIL")):
        store.record_heartbeat(
            {
                "AgentVersion": "1",
                "DeviceName": "cam-1",
                "DeviceFleetName": FLEET,
                "AgentMetrics": [
                    {
                        "MetricName": "dead-letters",
                        "Value": float(i),
                        "Timestamp": now + i,
                        "Dimension": "all",
                    }
                ],
                "DeploymentResult": {
                    "DeploymentName": f"d{i}",
                    "DeploymentStatus": status,
                    "DeploymentStartTime": now,
                    "DeploymentEndTime": now,
                    "DeploymentModels": [],
                },
            }
        )
    agent = store.latest_agent_points()
    assert [(p.device, p.metric, p.value) for p in agent] == [("cam-1", "dead-letters", 1.0)]
    assert store.latest_agent_points(fleet="other") == []
    assert store.latest_agent_points(names=["spool-records"]) == []
    assert len(store.latest_agent_points(names=["dead-letters"], device="cam-1")) == 1
    assert store.latest_agent_points(device="cam-2") == []
    results = store.latest_deployment_results()
    assert list(results) == ["cam-1"]
    assert (results["cam-1"].deployment_name, results["cam-1"].deployment_status) == ("d1", "FAIL")
    assert store.latest_deployment_results(fleet="other") == {}


@contextlib.contextmanager
def prometheus_with_rules(target: str, rules: Path | None) -> Iterator[Prometheus]:
    server = Prometheus([target])
    if rules is not None:
        server.config["rule_files"] = [str(rules)]
    try:
        yield start_or_fail(server)
    finally:
        server.stop()


def test_real_prometheus_scrapes_and_answers_promql(fed: EndpointServer) -> None:
    target = f"127.0.0.1:{fed.port}"
    with prometheus_with_rules(target, RULES) as prom:
        p99 = prom.wait_for(
            'edgetelemetry_window_quantile{device="cam-1",model="resnet18",quantile="0.99"}'
        )
        assert [float(r["value"][1]) for r in p99] == [42.5]
        up = prom.wait_for("sum(edgetelemetry_device_up)")
        assert float(up[0]["value"][1]) == 2
        # the shipped recording rule, evaluated by Prometheus: the worst p99 per model version
        worst = prom.wait_for('fleet_model_version:edgetelemetry_window_p99:max{model="resnet18"}')
        assert sorted((r["metric"]["version"], float(r["value"][1])) for r in worst) == [
            ("1.0", 42.5),
            ("1.1", 12.0),
        ]
        # the shipped alerts: cam-3 never heard from is down (pending for 5m), cam-2 dropped
        # values and has dead letters (firing at once)
        firing = prom.wait_for('ALERTS{alertstate="firing"}')
        deadline = time.monotonic() + 20
        while len(firing) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            firing = prom.query('ALERTS{alertstate="firing"}')
        assert {(r["metric"]["alertname"], r["metric"]["device"]) for r in firing} == {
            ("EdgeValuesDropped", "cam-2"),
            ("EdgeDeadLetters", "cam-2"),
        }
        pending = prom.wait_for('ALERTS{alertstate="pending",alertname="EdgeDeviceSilent"}')
        assert [r["metric"]["device"] for r in pending] == ["cam-3"]


def test_real_prometheus_with_a_bearer_token(
    tmp_path: Path, prometheus_server: Callable[..., Prometheus]
) -> None:
    with EndpointServer(
        str(tmp_path / "t.sqlite3"), credentials=CREDENTIALS, metrics_token=TOKEN
    ) as server:
        registered(server.store, FLEET, ["cam-1"])
        send(server, "cam-1", [entry("resnet18", "1.0", time.time(), 77.0)])
        prom = prometheus_server(
            scrape_configs=[
                {
                    "job_name": "edge",
                    "authorization": {"credentials": TOKEN},
                    "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                }
            ]
        )
        found = prom.wait_for('edgetelemetry_window_quantile{quantile="0.99"}')
        assert [float(r["value"][1]) for r in found] == [77.0]


def test_promtool_checks_the_shipped_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool is missing: scripts/setup.sh installs Debian's prometheus package")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout
    # and it does fail on a broken rule, so the check above means something
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("edgetelemetry_device_up == 0", "up ==", 1))
    bad = subprocess.run(
        [promtool, "check", "rules", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0


def test_serve_reads_a_private_token_file_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = write_private(tmp_path / "creds.json", {"AKIDEXAMPLE": "secret"})
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o644)
    args = [
        "--credentials-file",
        str(creds),
        "--store",
        ":memory:",
        "--port",
        "0",
        "--metrics-token-file",
        str(token),
    ]
    assert serve_main(args) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and TOKEN not in err
    token.chmod(0o600)
    assert read_token_file(str(token)) == TOKEN
    token.write_text("short")
    with pytest.raises(ValueError, match="16 characters"):
        read_token_file(str(token))


def test_one_fleet_per_scrape(fed: EndpointServer) -> None:
    registered(fed.store, "other", ["far-1"])
    send_other = {
        "AgentVersion": "1",
        "DeviceName": "far-1",
        "DeviceFleetName": "other",
        "Models": [entry("resnet18", "1.0", time.time(), 99.0)],
    }
    assert fed.store.record_heartbeat(send_other)
    answer = get(fed.port, "/metrics?fleet=other")
    assert answer.status == 200
    m = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    assert {s.labels["device"] for s in m["edgetelemetry_device_up"].samples} == {"far-1"}
    assert value(m, "edgetelemetry_window_quantile", quantile="0.99") == 99.0
    assert "edgetelemetry_endpoint_requests" not in m
    everything = scrape(fed)
    assert len(samples(everything, "edgetelemetry_device_up")) == 4
    assert get(fed.port, "/metrics?fleet=a&fleet=b").status == 400
