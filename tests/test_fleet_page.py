"""The fleet page (``GET /fleet``) of a real endpoint fed by real boto3 heartbeats: its JSON and
access rules over real HTTP, and what headless Chromium shows once the page's script has run."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest_server import CREDENTIALS, REGION
from test_fleet import ShiftedClock, figures, populate

from edgetelemetry.server import EndpointServer
from edgetelemetry.server.fleet.web import FleetPage

POINTS = 9
VIEWER = ("ops", "correct horse battery staple")


def start_server(tmp_path: Path, **kwargs: Any) -> tuple[EndpointServer, ShiftedClock]:
    clock = ShiftedClock()
    server = EndpointServer(
        str(tmp_path / "endpoint.sqlite3"),
        credentials=CREDENTIALS,
        region=REGION,
        clock=clock,
        **kwargs,
    )
    server.start()
    return server, clock


@pytest.fixture(name="served", scope="module")
def served_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointServer]:
    """One endpoint with the five-device fleet of ``test_fleet.populate``: the page is read-only,
    so the module's tests share it."""
    server, clock = start_server(tmp_path_factory.mktemp("fleet-page"))
    try:
        populate(server, clock, points=POINTS)
        yield server
    finally:
        server.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    body: bytes | None = None,
) -> Answer:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# -- HTTP --------------------------------------------------------------------------------------


def test_page_assets_are_served_self_contained(served: EndpointServer) -> None:
    page = get(served.port, "/fleet")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    assert '<script src="/fleet/static/fleet.js"' in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "date" in page.headers
    for name, kind in (("fleet.js", "text/javascript"), ("fleet.css", "text/css")):
        asset = get(served.port, f"/fleet/static/{name}")
        assert asset.status == 200 and asset.headers["content-type"].startswith(kind)
        assert b"http://www.w3.org/2000/svg" in asset.body or name != "fleet.js"
        assert b"https://" not in asset.body
    head = get(served.port, "/fleet", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(page.body))
    assert get(served.port, "/fleet/").status == 200


def test_status_and_series_json(served: EndpointServer) -> None:
    status = get(served.port, "/fleet/api/status")
    assert status.status == 200 and status.headers["content-type"] == "application/json"
    doc = status.json()
    assert doc["summary"] == {
        "devices": 5,
        "connected": 2,
        "offline": 1,
        "never": 1,
        "deregistered": 1,
    }
    assert [(d["name"], d["state"]) for d in doc["devices"]] == [
        ("cam-1", "connected"),
        ("cam-2", "connected"),
        ("cam-3", "never"),
        ("cam-4", "offline"),
        ("cam-5", "deregistered"),
    ]
    wide = get(served.port, "/fleet/api/status?offline_after=3600&device=cam-4").json()
    assert [(d["name"], d["state"]) for d in wide["devices"]] == [("cam-4", "connected")]
    assert wide["offline_after"] == 3600

    series = get(served.port, "/fleet/api/series?device=cam-1").json()
    assert series["device"] == "cam-1"
    plots = {s["model"]: s for s in series["series"]}
    assert set(plots) == {"resnet18", "yolo-v5"}
    for p in ("p50", "p90", "p99"):
        assert [v for _, v in plots["resnet18"]["points"][p]] == [
            figures(POINTS, i)[p] for i in range(POINTS)
        ]
    assert plots["yolo-v5"]["versions"] == ["2.0"]
    short = get(served.port, "/fleet/api/series?device=cam-1&hours=0.04").json()  # 144 s
    assert all(len(s["points"]["p50"]) == 3 for s in short["series"])
    assert get(served.port, "/fleet/api/series?device=cam-3").json()["series"] == []
    assert get(served.port, "/fleet/api/series?device=nobody").json()["series"] == []


@pytest.mark.parametrize(
    "target",
    [
        "/fleet/api/series",
        "/fleet/api/series?device=cam-1&hours=soon",
        "/fleet/api/series?device=cam-1&hours=-1",
        "/fleet/api/series?device=cam-1&max_points=0",
        "/fleet/api/series?device=cam-1&since=nan",
        "/fleet/api/series?device=cam-1&device=cam-2",
        "/fleet/api/status?offline_after=0",
        "/fleet/api/status?offline_after=inf",
    ],
)
def test_bad_queries_are_400(served: EndpointServer, target: str) -> None:
    answer = get(served.port, target)
    assert answer.status == 400, answer.body
    assert answer.json()["message"]


def test_unknown_paths_and_methods(served: EndpointServer) -> None:
    for target in (
        "/fleet/nothing",
        "/fleet/static/../app.py",
        "/fleet/static/fleet.html.bak",
        "/fleet/api/devices",
    ):
        assert get(served.port, target).status == 404, target
    post = get(served.port, "/fleet/api/status", method="POST", body=b"{}")
    assert post.status == 405 and post.headers["allow"] == "GET, HEAD"
    assert post.headers.get("connection") == "close"  # the body is not read: no keep-alive
    # the data plane is untouched: GET of an operation is still refused the AWS way
    op = get(served.port, "/SendHeartbeat")
    assert op.status == 404 and op.headers["x-amzn-errortype"] == "UnknownOperationException"
    assert get(served.port, "/fleetx").headers["x-amzn-errortype"] == "UnknownOperationException"


def test_keep_alive_serves_the_page_and_its_data(served: EndpointServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        for target in (
            "/fleet",
            "/fleet/static/fleet.js",
            "/fleet/api/status",
            "/fleet/api/series?device=cam-2",
        ):
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            assert response.status == 200 and not response.will_close
    finally:
        conn.close()


def non_loopback_address() -> str | None:
    """An address of this host that is not loopback (the route out), or None."""
    for probe in ("192.0.2.1", "10.255.255.1", "8.8.8.8"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))  # UDP: nothing is sent
                address = str(s.getsockname()[0])
        except OSError:
            continue
        if not address.startswith("127."):
            return address
    return None


def test_loopback_only_without_viewer_credentials(tmp_path: Path) -> None:
    server, _ = start_server(tmp_path, host="0.0.0.0")
    try:
        assert get(server.port, "/fleet/api/status").status == 200
        named = get(server.port, "/fleet", headers={"Host": f"localhost:{server.port}"})
        assert named.status == 200
        # DNS rebinding: a loopback peer, but a page of another origin
        rebound = get(server.port, "/fleet/api/status", headers={"Host": "attacker.example"})
        assert rebound.status == 403 and "loopback host name" in rebound.json()["message"]
        address = non_loopback_address()
        if address is None:
            pytest.skip("this host has no non-loopback address to connect from")
        remote = get(server.port, "/fleet/api/status", host=address)
        assert remote.status == 403 and "loopback clients only" in remote.json()["message"]
    finally:
        server.stop()
    page = FleetPage(server.store)  # the rule itself, for addresses this host cannot have
    for client, allowed in (
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.7", False),
        ("::ffff:10.0.0.7", False),
        ("2001:db8::1", False),
    ):
        answer = page.respond("GET", "/fleet", {"Host": "127.0.0.1"}, client)
        assert answer.status == (200 if allowed else 403), client
    for host, allowed in (
        ("localhost:8080", True),
        ("[::1]:8080", True),
        ("127.0.0.1", True),
        ("app.localhost", True),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ):
        answer = page.respond("GET", "/fleet", {"Host": host}, "127.0.0.1")
        assert answer.status == (200 if allowed else 403), host


def test_viewer_credentials_are_required_when_configured(tmp_path: Path) -> None:
    server, _ = start_server(tmp_path, host="0.0.0.0", fleet_viewers=dict([VIEWER]))
    try:
        bare = get(server.port, "/fleet")
        assert bare.status == 401
        assert bare.headers["www-authenticate"].startswith('Basic realm="edgetelemetry fleet"')
        for headers in (
            basic(VIEWER[0], "wrong"),
            basic("nobody", VIEWER[1]),
            {"Authorization": "Basic !!!"},
            {"Authorization": f"Bearer {VIEWER[1]}"},
            {"Authorization": "Basic " + base64.b64encode(b"ops").decode()},
        ):
            denied = get(server.port, "/fleet/api/status", headers=headers)
            assert denied.status == 401, headers
            assert VIEWER[1] not in denied.body.decode()
        ok = get(server.port, "/fleet/api/status", headers=basic(*VIEWER))
        assert ok.status == 200 and ok.json()["summary"]["devices"] == 0
        address = non_loopback_address()
        if address is not None:  # with credentials, any address may look
            assert get(server.port, "/fleet", host=address, headers=basic(*VIEWER)).status == 200
            assert get(server.port, "/fleet", host=address).status == 401
    finally:
        server.stop()
    with pytest.raises(ValueError):
        EndpointServer(None, credentials=CREDENTIALS, fleet_viewers={})
    with pytest.raises(ValueError):
        EndpointServer(None, credentials=CREDENTIALS, fleet_viewers={"ops": ""})


def test_page_can_be_turned_off(tmp_path: Path) -> None:
    server, _ = start_server(tmp_path, fleet_page=False)
    try:
        answer = get(server.port, "/fleet")
        assert answer.status == 404
        assert answer.headers["x-amzn-errortype"] == "UnknownOperationException"
    finally:
        server.stop()


# -- Chromium ------------------------------------------------------------------------------------


def find_chromium() -> str:
    """Debian's ``chromium``; installed here only when missing and running as root with apt."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        lock = ["-o", "DPkg::Lock::Timeout=600"]
        subprocess.run(
            ["apt-get", *lock, "update", "-qq"],
            env=env,
            check=False,
            timeout=900,
            capture_output=True,
        )
        subprocess.run(
            ["apt-get", *lock, "install", "-y", "-qq", "chromium", "fonts-dejavu-core"],
            env=env,
            check=False,
            timeout=1800,
            capture_output=True,
        )
        path = shutil.which("chromium")
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install chromium) and cannot be installed here")


@pytest.fixture(name="chromium", scope="module")
def chromium_fixture() -> str:
    return find_chromium()


def run_chromium(binary: str, url: str, *args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="et-chromium-") as profile:
        cmd = [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            # the page's fetches finish within the budget; the dump waits for it
            "--virtual-time-budget=15000",
            *args,
            url,
        ]
        if os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def matches(self, tag: str | None, attrs: dict[str, str]) -> bool:
        """``class_`` matches one of the classes; ``data_x`` the attribute ``data-x``."""
        if tag is not None and self.tag != tag:
            return False
        for key, want in attrs.items():
            if key == "class_":
                if want not in self.attrs.get("class", "").split():
                    return False
            elif self.attrs.get(key.replace("_", "-")) != want:
                return False
        return True

    def all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Descendants in document order."""
        found: list[Node] = []
        for child in self.children:
            if child.matches(tag, attrs):
                found.append(child)
            found += child.all(tag, **attrs)
        return found

    def first(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.all(tag, **attrs)
        assert found, (tag, attrs)
        return found[0]

    def full_text(self) -> str:
        """The text of the node and its descendants (order within mixed content is not kept)."""
        return self.text + "".join(c.full_text() for c in self.children)


_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].text += data


def parse(dom: str) -> Node:
    tree = _Tree()
    tree.feed(dom)
    tree.close()
    return tree.root


def test_chromium_shows_devices_status_and_a_plot_per_model(
    served: EndpointServer, chromium: str
) -> None:
    dom = parse(run_chromium(chromium, f"{served.url}/fleet?refresh=0", "--dump-dom"))
    body = dom.first("body")
    assert body.attrs["data-state"] == "ready", dom.first("p", id="summary").full_text()

    counts = {
        k: dom.first("span", id=f"count-{k}").full_text()
        for k in ("devices", "connected", "offline", "never", "deregistered")
    }
    assert counts == {
        "devices": "5",
        "connected": "2",
        "offline": "1",
        "never": "1",
        "deregistered": "1",
    }

    rows = dom.first("table", id="devices").all("tr")[1:]
    shown = [(r.attrs["data-device"], r.first("span", class_="badge").full_text()) for r in rows]
    assert shown == [
        ("cam-1", "connected"),
        ("cam-2", "connected"),
        ("cam-3", "never"),
        ("cam-4", "offline"),
        ("cam-5", "deregistered"),
    ]
    assert "resnet18 1.0" in rows[0].full_text() and "yolo-v5 2.0" in rows[0].full_text()
    assert [f.full_text() for f in rows[0].all("span", data_flag="sampling")] == ["sampling"] * 2
    assert rows[2].all("td")[3].full_text() == "never"
    assert rows[0].all("td")[3].full_text().endswith("s ago")

    plots = dom.all("figure", class_="plot")
    assert sorted((p.attrs["data-device"], p.attrs["data-model"]) for p in plots) == [
        ("cam-1", "resnet18"),
        ("cam-1", "yolo-v5"),
        ("cam-2", "resnet18"),
        ("cam-4", "resnet18"),
        ("cam-5", "resnet18"),
    ]
    expected_points = {"cam-1": POINTS, "cam-2": POINTS, "cam-4": 1, "cam-5": 1}
    for plot in plots:
        n = expected_points[plot.attrs["data-device"]]
        assert plot.attrs["data-points"] == str(n)
        assert plot.attrs["data-metric"] == "latency-ms" and plot.attrs["data-dimension"] == "all"
        svg = plot.first("svg")
        for p in ("p50", "p90", "p99"):
            line = svg.first("path", data_percentile=p)
            assert line.attrs["data-points"] == str(n)
            assert line.attrs["d"].count("L") == n - 1  # one unbroken line: a minute apart
            dots = svg.all("circle", class_=p)
            assert len(dots) == n, (plot.attrs, p)
    # the drawing encodes the values: on cam-1's resnet18 plot, later points are higher (values
    # grow), and at every time p99 is above p90 above p50 (SVG y grows downwards)
    (resnet,) = [
        p
        for p in plots
        if p.attrs["data-device"] == "cam-1" and p.attrs["data-model"] == "resnet18"
    ]
    ys = {
        p: [(float(c.attrs["cx"]), float(c.attrs["cy"])) for c in resnet.all("circle", class_=p)]
        for p in ("p50", "p90", "p99")
    }
    xs = [x for x, _ in ys["p50"]]
    assert xs == sorted(xs) and len(set(xs)) == POINTS
    assert [y for _, y in ys["p50"]] == sorted((y for _, y in ys["p50"]), reverse=True)
    for (_, y50), (_, y90), (_, y99) in zip(ys["p50"], ys["p90"], ys["p99"]):
        assert y99 < y90 < y50
    titles = [t.full_text() for t in resnet.all("title")]
    assert f"p99 {figures(POINTS, POINTS - 1)['p99']:g} at" in " ".join(titles)


def test_chromium_plots_only_what_the_query_asks(served: EndpointServer, chromium: str) -> None:
    dom = parse(run_chromium(chromium, f"{served.url}/fleet?refresh=0&device=cam-2", "--dump-dom"))
    assert dom.first("body").attrs["data-state"] == "ready"
    assert [r.attrs["data-device"] for r in dom.first("table", id="devices").all("tr")[1:]] == [
        "cam-2"
    ]
    assert [p.attrs["data-device"] for p in dom.all("figure", class_="plot")] == ["cam-2"]
    limited = parse(run_chromium(chromium, f"{served.url}/fleet?refresh=0&limit=1", "--dump-dom"))
    assert len(limited.first("table", id="devices").all("tr")) == 6
    assert {p.attrs["data-device"] for p in limited.all("figure", class_="plot")} == {"cam-1"}
    assert "Plots for 1 of 4 devices" in limited.first("p", id="plots-note").full_text()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_chromium_screenshot(served: EndpointServer, chromium: str, tmp_path: Path) -> None:
    """A picture of the page; set EDGETELEMETRY_FLEET_SCREENSHOT=path.png to keep it."""
    shot = tmp_path / "fleet.png"
    run_chromium(
        chromium,
        f"{served.url}/fleet?refresh=0",
        f"--screenshot={shot}",
        "--window-size=1280,1500",
        "--hide-scrollbars",
    )
    data = shot.read_bytes()
    assert png_size(data) == (1280, 1500)
    assert len(data) > 20_000  # a blank page compresses to a few kB
    keep = os.environ.get("EDGETELEMETRY_FLEET_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_chromium_with_viewer_credentials(tmp_path: Path, chromium: str) -> None:
    server, clock = start_server(tmp_path, fleet_viewers=dict([VIEWER]))
    try:
        populate(server, clock, points=2)
        user, password = VIEWER[0], VIEWER[1].replace(" ", "%20")
        authed = f"http://{user}:{password}@127.0.0.1:{server.port}/fleet?refresh=0"
        dom = parse(run_chromium(chromium, authed, "--dump-dom"))
        assert dom.first("body").attrs["data-state"] == "ready"
        assert len(dom.all("figure", class_="plot")) == 5
        wrong = f"http://{user}:nope@127.0.0.1:{server.port}/fleet?refresh=0"
        denied = parse(run_chromium(chromium, wrong, "--dump-dom"))
        assert not denied.all("figure") and not denied.all("table")
    finally:
        server.stop()
