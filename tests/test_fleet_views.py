"""The fleet page's views beyond the status (``fleet/device_view.py``, ``fleet.js``): 10,000
devices a page at a time, a device's every metric with versions overlaid and a time range,
drops, backlog, dead letters, deployment results and alerts - checked in headless Chromium by
the DOM its script builds and by the pixels of its screenshots."""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_server import CREDENTIALS, REGION
from store_backends import registered
from test_fleet import FLEET
from test_fleet_page import chromium_fixture, get, parse, run_chromium  # noqa: F401

from edgetelemetry.server import EndpointServer
from edgetelemetry.server.alerts import parse_alert_config

MANY = 10_000
STEP = 600.0  # a window every ten minutes
WINDOWS = 36  # six hours of them
# the page's colours (fleet.css): the two versions' lines, p99, a failed deployment's badge text
V0, V1, P99, BAD = (0x7C, 0x3A, 0xED), (0x05, 0x96, 0x69), (0xDC, 0x26, 0x26), (0xB4, 0x23, 0x18)


def name(i: int) -> str:
    return f"cam-{i:05d}"


def heartbeat(
    device: str,
    ts: float,
    version: str,
    p99: float,
    *,
    dropped: float = 0,
    agent: dict[str, float] | None = None,
    deployment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metrics = [
        ("latency-ms-count", 100.0),
        ("latency-ms-sum", 100.0 * p99 / 3),
        ("latency-ms-p50", p99 / 3),
        ("latency-ms-p90", p99 / 1.5),
        ("latency-ms-p99", p99),
        ("latency-ms-dropped", dropped),
        ("confidence-mean", 0.9),
        ("queue-depth", 4.0),
    ]
    request: dict[str, Any] = {
        "AgentVersion": "1.2",
        "DeviceName": device,
        "DeviceFleetName": FLEET,
        "Models": [
            {
                "ModelName": "detector",
                "ModelVersion": version,
                "LatestInference": ts,
                "ModelMetrics": [
                    {"MetricName": n, "Value": v, "Timestamp": ts, "Dimension": "all"}
                    for n, v in metrics
                ],
            }
        ],
    }
    if agent:
        request["AgentMetrics"] = [
            {"MetricName": k, "Value": v, "Timestamp": ts, "Dimension": "all"}
            for k, v in agent.items()
        ]
    if deployment:
        request["DeploymentResult"] = deployment
    return request


def deployment(name: str, status: str, ts: float, message: str) -> dict[str, Any]:
    return {
        "DeploymentName": name,
        "DeploymentStatus": status,
        "DeploymentStatusMessage": message,
        "DeploymentStartTime": ts - 30,
        "DeploymentEndTime": ts,
        "DeploymentModels": [
            {"ModelHandle": "h", "ModelName": "detector", "ModelVersion": "1.1", "Status": status}
        ],
    }


@pytest.fixture(name="fleet", scope="module")
def fleet_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EndpointServer, float]]:
    """10,000 registered devices; cam-00000 upgraded detector 1.0 -> 1.1 halfway through six
    hours of windows (latency up from 30 to 60 ms), with drops, a backlog, dead letters and a
    failed deployment after a successful one; a few others sent one heartbeat."""
    alerts = parse_alert_config(
        {
            "interval_s": 0.2,
            "rules": [
                {"name": "slow", "kind": "p99_above", "metric": "latency-ms", "threshold": 50},
                {"name": "deploy", "kind": "deployment_failed", "severity": "critical"},
            ],
        }
    )
    server = EndpointServer(
        str(tmp_path_factory.mktemp("views") / "v.sqlite3"),
        credentials=CREDENTIALS,
        region=REGION,
        alerts=alerts,
    )
    store = registered(server.store, FLEET, [name(i) for i in range(MANY)])
    now = time.time()
    first = now - (WINDOWS - 1) * STEP
    for k in range(WINDOWS):
        ts = first + k * STEP
        upgraded = k >= WINDOWS // 2
        last = k == WINDOWS - 1
        store.record_heartbeat(
            heartbeat(
                name(0),
                ts,
                "1.1" if upgraded else "1.0",
                60.0 if upgraded else 30.0,
                dropped=5 if last else 0,
                agent={"spool-records": 12 if last else 0, "dead-letters": 3 if last else 0},
                deployment=(
                    deployment("rollout-7", "SUCCESS", ts, "ok")
                    if k == 1
                    else deployment("rollout-8", "FAIL", ts, "model did not load")
                    if last
                    else None
                ),
            )
        )
    for i in range(1, 40):
        store.record_heartbeat(heartbeat(name(i), now, "1.0", 20.0))
    server.start()
    try:
        assert server.alerts is not None
        deadline = time.monotonic() + 20
        while len(server.alerts.firing()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield server, now
    finally:
        server.stop()


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows, bytes per pixel) of an 8-bit RGB/RGBA non-interlaced PNG: what
    Chromium writes.  Undoes the five row filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def count_colour(rows: list[bytes], bpp: int, rgb: tuple[int, int, int], tol: int = 24) -> int:
    r0, g0, b0 = rgb
    found = 0
    for row in rows:
        for i in range(0, len(row), bpp):
            if (
                abs(row[i] - r0) <= tol
                and abs(row[i + 1] - g0) <= tol
                and abs(row[i + 2] - b0) <= tol
            ):
                found += 1
    return found


def screenshot(chromium: str, url: str, path: Path, size: str) -> tuple[int, int, list[bytes], int]:
    run_chromium(
        chromium, url, f"--screenshot={path}", f"--window-size={size}", "--hide-scrollbars"
    )
    keep = os.environ.get("EDGETELEMETRY_FLEET_SCREENSHOT_DIR")
    if keep:
        shutil.copyfile(path, Path(keep) / path.name)
    return decode_png(path.read_bytes())


# -- 10,000 devices, a page at a time -----------------------------------------------------------


def test_status_pages_through_ten_thousand_devices(fleet: tuple[EndpointServer, float]) -> None:
    server, _ = fleet
    started = time.perf_counter()
    last = get(server.port, f"/fleet/api/status?offset={MANY - 10}&limit=50").json()
    took = time.perf_counter() - started
    assert last["total"] == MANY and last["summary"]["devices"] == MANY
    assert [d["name"] for d in last["devices"]] == [name(i) for i in range(MANY - 10, MANY)]
    first = get(server.port, "/fleet/api/status?offset=0&limit=3").json()
    cam0 = first["devices"][0]
    assert (cam0["drops"], cam0["backlog"], cam0["dead_letters"]) == (5, 12, 3)
    assert cam0["deployment"]["name"] == "rollout-8" and cam0["deployment"]["status"] == "FAIL"
    assert first["devices"][1]["backlog"] is None and first["devices"][1]["drops"] == 0
    found = get(server.port, "/fleet/api/status?q=cam-0123&limit=50").json()
    assert found["total"] == 10 and found["devices"][0]["name"] == "cam-01230"
    never = get(server.port, "/fleet/api/status?state=never&limit=1").json()
    assert never["total"] == MANY - 40
    assert get(server.port, "/fleet/api/status?limit=501").status == 400
    assert get(server.port, "/fleet/api/status?state=asleep&limit=5").status == 400
    print(f"\n/fleet/api/status, last page of {MANY} devices: {took * 1000:.0f} ms")


def test_chromium_shows_one_page_of_ten_thousand(
    fleet: tuple[EndpointServer, float], chromium: str
) -> None:
    server, _ = fleet
    dom = parse(
        run_chromium(chromium, f"{server.url}/fleet?refresh=0&page=200&page_size=50", "--dump-dom")
    )
    assert dom.first("body").attrs["data-state"] == "ready"
    rows = dom.first("table", id="devices").all("tr")[1:]
    assert [r.attrs["data-device"] for r in rows] == [name(i) for i in range(9950, MANY)]
    assert dom.first("span", id="page-info").full_text() == "9951\u201310000 of 10000 devices"
    assert "disabled" in dom.first("button", id="next").attrs
    assert "disabled" not in dom.first("button", id="prev").attrs
    assert dom.first("span", id="count-devices").full_text() == str(MANY)
    first = parse(run_chromium(chromium, f"{server.url}/fleet?refresh=0&limit=2", "--dump-dom"))
    row = first.first("tr", data_device=name(0))
    cells = {td.attrs["data-figure"]: td for td in row.all("td") if "data-figure" in td.attrs}
    assert [cells[k].full_text() for k in ("drops", "backlog", "dead-letters")] == ["5", "12", "3"]
    assert "bad" in cells["drops"].attrs["class"]
    assert (
        "rollout-8" in cells["deployment"].full_text() and "FAIL" in cells["deployment"].full_text()
    )
    link = row.first("a")
    assert link.attrs["href"].startswith("/fleet/device?device=cam-00000")
    alerts = first.all("li", class_="alert")
    assert {(a.attrs["data-rule"], a.attrs["data-device"]) for a in alerts} == {
        ("slow", name(0)),
        ("deploy", name(0)),
    }


# -- one device -------------------------------------------------------------------------------


def figures_of(dom: Any) -> dict[tuple[str, str, str], Any]:
    """Charts by (kind, metric base name, statistic)."""
    return {
        (f.attrs["data-kind"], f.attrs["data-metric"], f.attrs.get("data-stat", "")): f
        for f in dom.all("figure", class_="chart")
    }


def test_chromium_device_page_every_metric_and_versions_overlaid(
    fleet: tuple[EndpointServer, float], chromium: str, tmp_path: Path
) -> None:
    server, _ = fleet
    url = f"{server.url}/fleet/device?device={name(0)}&refresh=0&hours=6.5"
    dom = parse(run_chromium(chromium, url, "--dump-dom"))
    assert dom.first("body").attrs["data-state"] == "ready", dom.first(
        "p", id="summary"
    ).full_text()
    assert dom.first("section", id="fleet-view").attrs.get("hidden") is not None
    figs = figures_of(dom)
    # every metric the model reports: percentiles together, each other statistic and the gauge
    # alone, and each metric by version (the model was upgraded in range)
    assert set(figs) == {
        ("percentiles", "latency-ms", ""),
        ("versions", "latency-ms", "p99"),
        ("stat", "latency-ms", "count"),
        ("stat", "latency-ms", "sum"),
        ("stat", "latency-ms", "dropped"),
        ("stat", "confidence", "mean"),
        ("versions", "confidence", "mean"),
        ("stat", "queue-depth", "value"),
        ("versions", "queue-depth", ""),
    }
    pct = figs[("percentiles", "latency-ms", "")]
    assert [p.attrs["data-stat"] for p in pct.all("path")] == ["p50", "p90", "p99"]
    assert {p.attrs["data-points"] for p in pct.all("path")} == {str(WINDOWS)}
    versions = figs[("versions", "latency-ms", "p99")]
    assert versions.attrs["data-versions"] == "1.0,1.1"
    lines = {p.attrs["data-version"]: p for p in versions.all("path")}
    half = WINDOWS // 2
    assert (lines["1.0"].attrs["data-points"], lines["1.1"].attrs["data-points"]) == (
        str(half),
        str(WINDOWS - half),
    )
    # the upgrade doubled latency: version 1.1's line sits higher (SVG y grows downwards)
    y10 = [float(c.attrs["cy"]) for c in versions.all("circle", class_="v0")]
    y11 = [float(c.attrs["cy"]) for c in versions.all("circle", class_="v1")]
    assert max(y11) < min(y10)
    facts = {
        f.attrs["data-fact"]: f.first("span", class_="value").full_text()
        for f in dom.all("div", class_="fact")
    }
    assert (facts["drops"], facts["backlog"], facts["dead-letters"]) == ("5", "12", "3")
    assert facts["deployment"] == "rollout-8 FAIL"
    deployments = dom.first("table", id="deployments").all("tr")[1:]
    assert [(r.attrs["data-deployment"], r.attrs["data-status"]) for r in deployments] == [
        ("rollout-8", "FAIL"),
        ("rollout-7", "SUCCESS"),
    ]
    assert "model did not load" in deployments[0].full_text()
    agent = {
        r.attrs["data-agent-metric"] for r in dom.first("table", id="agent-metrics").all("tr")[1:]
    }
    assert agent == {"spool-records", "dead-letters"}
    assert {a.attrs["data-rule"] for a in dom.all("li", class_="alert")} == {"slow", "deploy"}

    width, height, rows, bpp = screenshot(chromium, url, tmp_path / "fleet-device.png", "1400,1300")
    assert (width, height) == (1400, 1300)
    # the pixels: both versions' lines drawn in their colours, p99 red, the failure's red text
    assert count_colour(rows, bpp, V0) > 150 and count_colour(rows, bpp, V1) > 150
    assert count_colour(rows, bpp, P99) > 150
    assert count_colour(rows, bpp, BAD) > 20


def test_chromium_time_range_and_zoom(fleet: tuple[EndpointServer, float], chromium: str) -> None:
    server, now = fleet
    base = f"{server.url}/fleet/device?device={name(0)}&refresh=0"
    hour = parse(run_chromium(chromium, base + "&hours=1", "--dump-dom"))
    pct = figures_of(hour)[("percentiles", "latency-ms", "")]
    assert {p.attrs["data-points"] for p in pct.all("path")} == {"6"}  # 6 windows in the hour
    assert hour.first("select", id="range").attrs is not None
    assert hour.first("span", id="zoom").attrs.get("hidden") is not None
    # a zoomed range (what a drag across a chart sets): 5 windows, only version 1.0 in it
    since, until = int(now - 30 * STEP - 1), int(now - 26 * STEP + 1)
    zoomed = parse(run_chromium(chromium, base + f"&since={since}&until={until}", "--dump-dom"))
    figs = figures_of(zoomed)
    assert {
        p.attrs["data-points"] for p in figs[("percentiles", "latency-ms", "")].all("path")
    } == {"5"}
    assert not [k for k in figs if k[0] == "versions"]
    assert zoomed.first("span", id="zoom").attrs.get("hidden") is None
    assert "From " in zoomed.first("span", id="zoom-range").full_text()


def test_chromium_fleet_page_screenshot_pixels(
    fleet: tuple[EndpointServer, float], chromium: str, tmp_path: Path
) -> None:
    server, _ = fleet
    width, height, rows, bpp = screenshot(
        chromium,
        f"{server.url}/fleet?refresh=0&limit=1&page_size=5",
        tmp_path / "fleet-page.png",
        "1400,1100",
    )
    assert (width, height) == (1400, 1100)
    assert count_colour(rows, bpp, P99) > 100  # cam-00000's latency plot
    assert count_colour(rows, bpp, BAD) > 20  # its drops, dead letters, failed deployment


def test_device_api_answers(fleet: tuple[EndpointServer, float]) -> None:
    server, _ = fleet
    assert get(server.port, "/fleet/api/device?device=nobody").status == 404
    assert get(server.port, "/fleet/api/device").status == 400
    metrics = get(server.port, f"/fleet/api/metrics?device={name(0)}&hours=7").json()
    names = {t["metric"] for t in metrics["tracks"]}
    assert names == {
        "latency-ms-count",
        "latency-ms-sum",
        "latency-ms-p50",
        "latency-ms-p90",
        "latency-ms-p99",
        "latency-ms-dropped",
        "confidence-mean",
        "queue-depth",
    }
    p99 = next(t for t in metrics["tracks"] if t["metric"] == "latency-ms-p99")
    assert p99["versions"] == ["1.0", "1.1"] and len(p99["points"]) == WINDOWS
    assert p99["points"][0][1:] == [30.0, "1.0"] and p99["points"][-1][1:] == [60.0, "1.1"]
    few = get(server.port, f"/fleet/api/metrics?device={name(0)}&hours=7&max_points=4").json()
    assert all(t["truncated"] and len(t["points"]) == 4 for t in few["tracks"])
