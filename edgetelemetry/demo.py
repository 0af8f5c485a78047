"""The demo: a small multi-model inference workload instrumented with edgetelemetry.

Two numpy "models" (a tiny MLP and a tiny conv-like network) run real arithmetic on random
inputs in two threads; each inference records latency, confidence and input size.  Every
``report_every`` seconds the demo closes a window and prints what the heartbeat will carry.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from .recorder import Recorder
from .snapshot import Snapshot


@dataclass(frozen=True)
class DemoModel:
    name: str
    version: str
    infer: Callable[[object], tuple[object, float]]
    input_shape: tuple[int, ...]


def _make_models(seed: int = 7) -> list[DemoModel]:
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

    models = _make_models()
    stop = threading.Event()
    done = [0]
    lock = threading.Lock()

    def loop(model: DemoModel, seed: int) -> None:
        rng = np.random.default_rng(seed)
        latency = rec.histogram("latency", unit="ms", model=model.name, version=model.version)
        confidence = rec.histogram("confidence", model=model.name, version=model.version)
        size = rec.histogram("input-size", unit="bytes", model=model.name,
                             version=model.version)
        n = 0
        while not stop.is_set():
            x = rng.standard_normal(model.input_shape).astype(np.float32)
            with latency.time():
                _, top = model.infer(x)
            confidence.record(top)
            size.record(x.nbytes)
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


def format_snapshot(snap: Snapshot) -> str:
    """A table of one window: per series count, mean and quantiles."""
    lines = [
        f"{'model':<16} {'version':<8} {'metric':<12} {'count':>7} {'mean':>10} "
        f"{'p50':>10} {'p99':>10} {'max':>10}  dropped/rejected"
    ]
    for s in snap.series:
        if not s.count and not s.dropped and not s.rejected:
            continue
        unit = f" {s.unit}" if s.unit else ""

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:10.4g}"

        lost = sum(s.dropped.values()) + sum(s.rejected.values())
        lines.append(
            f"{s.model:<16} {s.version:<8} {s.metric + unit:<12} {s.count:>7} "
            f"{fmt(s.mean)} {fmt(s.quantile(0.5))} {fmt(s.quantile(0.99))} {fmt(s.max)}  {lost}"
        )
    return "\n".join(lines)


def main(seconds: float = 5.0, out: TextIO | None = None) -> int:
    """Record a simulated multi-model inference loop and print each window's summary."""
    import sys

    out = out or sys.stdout
    windows: list[Snapshot] = []
    with Recorder() as rec:

        def tick() -> None:
            snap = rec.snapshot()
            windows.append(snap)
            n = sum(s.count for s in snap.series if s.metric == "latency")
            print(f"window {snap.seq}: {n} inferences", file=out, flush=True)

        print(f"running 2 models in 2 threads for {seconds:g} s ...", file=out, flush=True)
        total = run_workload(rec, seconds, on_tick=tick)
        windows.append(rec.snapshot())
        merged = windows[0]
        for w in windows[1:]:
            merged = merged.merge(w)
        info = rec.info()
    print(f"\n{total} inferences in {len(windows)} windows; whole run:", file=out)
    print(format_snapshot(merged), file=out)
    print(
        f"\nrecorder memory {info['memory_bytes'] // 1024} KiB, histogram relative error "
        f"{merged.layout.relative_error:.2%}, snapshot {len(merged.to_msgpack())} bytes msgpack",
        file=out,
    )
    return 0
