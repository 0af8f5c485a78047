"""``edgetelemetry serve`` as a process, embedded and ``--workers 2``, with ``--alerts``: each
worker evaluates and shows the alert, one sends it (the store's lead); ``/metrics`` answers from
whichever worker takes the scrape."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest_server import client, heartbeat
from prometheus_client.parser import text_string_to_metric_families
from serve_procs import ServeProcess, write_private
from test_alerts import SECRET_HEADER, Receiver, free_port
from test_fleet_page import get

MODES = {"embedded": (), "workers": ("--workers", "2", "--store-connections", "2")}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_serve_sends_an_alert_once_and_serves_metrics(tmp_path: Path, mode: str) -> None:
    port = free_port()
    receiver = Receiver(port).start()
    alerts = write_private(tmp_path / "alerts.json", {
        "interval_s": 0.2,
        "webhook": {"url": f"http://127.0.0.1:{port}/hook",
                    "headers": {"Authorization": SECRET_HEADER}},
        "rules": [{"name": "slow", "kind": "p99_above", "metric": "latency-ms",
                   "threshold": 10}],
    })
    try:
        with ServeProcess(tmp_path / "serve", "--alerts", str(alerts), *MODES[mode]) as serve:
            beat = heartbeat()
            beat["Models"][0]["ModelMetrics"][0]["MetricName"] = "latency-ms-p99"
            client(serve.url).send_heartbeat(**beat)  # p99 12.5 > 10
            docs = receiver.wait(1)
            assert len(docs) == 1 and [a["rule"] for a in docs[0]["firing"]] == ["slow"]
            time.sleep(2.0)  # ten more passes in every worker: nothing is sent twice
            assert len(receiver.received) == 1
            for _ in range(4):  # whichever worker answers shows the alert
                shown = get(serve.port, "/fleet/api/alerts").json()
                assert [a["rule"] for a in shown["firing"]] == ["slow"]
            scrape = get(serve.port, "/metrics")
            assert scrape.status == 200
            families = {f.name: f for f in text_string_to_metric_families(scrape.body.decode())}
            p99 = [s.value for s in families["edgetelemetry_window_quantile"].samples
                   if s.labels["quantile"] == "0.99" and s.labels["device"] == "cam-1"]
            assert p99 == [12.5]
            assert serve.stop() == 0
            log = serve.log()
    finally:
        receiver.stop()
    assert "Traceback" not in log and "hook-secret" not in log, log[-3000:]
    assert json.loads(json.dumps(docs[0]))["source"] == "edgetelemetry-endpoint"
