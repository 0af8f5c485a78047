"""The demo: a multi-model inference workload instrumented with edgetelemetry, reporting to
the embedded Edge Manager endpoint.

Two numpy "models" (a tiny MLP and a tiny conv-like network) run real arithmetic on random
inputs in two threads; each inference records latency, confidence and input size.  An Agent
sends heartbeats through boto3 to an endpoint on loopback, and the demo ends with the fleet
as the endpoint stored it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from .recording import Recorder


@dataclass(frozen=True)
class DemoModel:
    name: str
    version: str
    infer: Callable[[object], tuple[object, float]]
    input_shape: tuple[int, ...]


def make_models(seed: int = 7) -> list[DemoModel]:
    import numpy as np

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((256, 128)).astype(np.float32) / 16
    w2 = rng.standard_normal((128, 10)).astype(np.float32) / 11

    def mlp(x: object) -> tuple[object, float]:
        h = np.maximum(np.asarray(x) @ w1, 0.0)
        logits = h @ w2
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return p, float(p.max())

    kernel = rng.standard_normal((3, 3)).astype(np.float32)
    head = rng.standard_normal((30 * 30, 5)).astype(np.float32) / 30

    def conv(x: object) -> tuple[object, float]:
        img = np.asarray(x)
        out = np.zeros((30, 30), dtype=np.float32)
        for dy in range(3):
            for dx in range(3):
                out += kernel[dy, dx] * img[dy : dy + 30, dx : dx + 30]
        logits = np.maximum(out, 0.0).reshape(-1) @ head
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return p, float(p.max())

    return [
        DemoModel("mlp-classifier", "1.2", mlp, (1, 256)),
        DemoModel("tiny-conv", "0.9", conv, (32, 32)),
    ]


def run_workload(
    rec: Recorder,
    seconds: float,
    *,
    threads_per_model: int = 1,
    on_tick: Callable[[], None] | None = None,
    tick_every: float = 1.0,
) -> int:
    """Run the models for ``seconds``; returns how many inferences were made."""
    import numpy as np

    models = make_models()
    stop = threading.Event()
    done = [0]
    lock = threading.Lock()

    def loop(model: DemoModel, seed: int) -> None:
        rng = np.random.default_rng(seed)
        latency = rec.histogram("latency", unit="ms", model=model.name, version=model.version)
        confidence = rec.histogram("confidence", model=model.name, version=model.version)
        size = rec.histogram("input-size", unit="bytes", model=model.name,
                             version=model.version)
        # one inference's metrics: two calls, one ring update (the cheapest way in a loop)
        per_inference = rec.group(latency, confidence, size)
        n = 0
        while not stop.is_set():
            x = rng.standard_normal(model.input_shape).astype(np.float32)
            start = per_inference.start()
            _, top = model.infer(x)
            per_inference.record_since(start, top, x.nbytes)
            n += 1
        with lock:
            done[0] += n

    workers = [
        threading.Thread(target=loop, args=(m, i * 100 + t), name=f"infer-{m.name}-{t}")
        for i, m in enumerate(models)
        for t in range(threads_per_model)
    ]
    for w in workers:
        w.start()
    deadline = time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(tick_every, left))
            if on_tick is not None and time.monotonic() < deadline - tick_every / 2:
                on_tick()
    finally:
        stop.set()
        for w in workers:
            w.join()
    return done[0]


NUMPY_MISSING = ("edgetelemetry demo: the demo's models need numpy, which is not installed: "
                 "pip install 'edgetelemetry[demo]' (or pip install numpy)")


def main(seconds: float = 20.0, out: TextIO | None = None, keep: str | None = None) -> int:
    """The README's main job, on loopback with no account and no network: start the embedded
    Edge Manager endpoint (ephemeral port, a fresh store), run the instrumented workload while
    an Agent sends heartbeats through boto3 to it, then print the fleet as the endpoint stored
    it.  With ``keep`` the store and spool stay in that directory, so the commands printed at
    the end work on them; without it they live in a temporary directory removed at the end.
    Returns 2 (saying what to install) when numpy is missing."""
    import sys
    import tempfile

    out = out or sys.stdout
    try:
        import numpy  # noqa: F401  (the models' arithmetic)
    except ImportError:
        print(NUMPY_MISSING, file=sys.stderr)
        return 2
    if keep is not None:
        os.makedirs(keep, mode=0o700, exist_ok=True)
        return _run(seconds, out, keep, kept=True)
    with tempfile.TemporaryDirectory(prefix="edgetelemetry-demo-") as work:
        return _run(seconds, out, work, kept=False)


def _run(seconds: float, out: TextIO, work: str, *, kept: bool) -> int:
    import secrets

    from botocore.credentials import Credentials

    from .agent import Agent
    from .server import EndpointServer
    from .server.fleet import fleet_status, render_text

    store_path = os.path.join(work, "endpoint.sqlite")
    key_id, secret = "AKIDEMO" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)
    interval = max(1.0, min(5.0, seconds / 8))
    device, fleet = "demo-gateway-01", "demo-fleet"

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with EndpointServer(store_path, credentials={key_id: secret}) as server:
        server.store.register_fleet(fleet)
        server.store.register_devices(fleet, [device])
        url = server.url
        say(f"endpoint  {url} (SigV4 required; store {store_path})")
        with Recorder() as rec:
            agent = Agent(
                rec,
                device_name=device,
                fleet=fleet,
                endpoint_url=url,
                region="us-east-1",
                interval=interval,
                spool_dir=os.path.join(work, "spool"),
                credentials=Credentials(key_id, secret),
            )
            say(f"device    {device} in {fleet}: 2 models, heartbeat every {interval:g} s, "
                f"running {seconds:g} s")
            started = time.monotonic()

            def progress() -> None:
                st = agent.stats()
                say(f"  {time.monotonic() - started:5.1f} s  heartbeat requests acknowledged "
                    f"{int(st['send-successes']):3d}, spool pending {int(st['spool-records'])}")

            with agent:
                agent.start()
                total = run_workload(rec, seconds, on_tick=progress, tick_every=interval)
                stats = agent.stats()
            # closing the agent spooled and sent the last window
        stored = server.store.heartbeat_count()
        status = fleet_status(server.store)
    say(f"\n{total} inferences; {stored} heartbeats stored by the endpoint, "
        f"{int(stats['dead-letters'])} dead-lettered\n")
    say(render_text(status))
    store_hint = store_path if kept else "DIR/endpoint.sqlite"
    say(
        "\nwhere to look next:\n"
        + ("" if kept else "  edgetelemetry demo --keep DIR   keeps the store and spool in DIR "
                           "(this run's are removed)\n")
        + f"  edgetelemetry fleet status --store {store_hint}\n"
        f"  edgetelemetry serve --store {store_hint} --credentials-file FILE  "
        "(the fleet page is at /fleet)\n"
        "  README.md (API tour) and docs/ (snapshot format, heartbeat mapping, agent, endpoint)"
    )
    return 0 if stored and not stats["dead-letters"] else 1
