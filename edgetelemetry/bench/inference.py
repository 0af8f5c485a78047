"""The overhead of telemetry on a real inference loop, for ``edgetelemetry bench``.

The same loop runs with and without telemetry (4 metrics per inference: latency, confidence,
input size, batch size) in alternating short blocks, A B B A A B ..., so drift lands on both.
The telemetry is written the three ways a user would: a group (``start()`` before the
inference, ``record_since()`` after it: two calls, the recommended way and the one the target
is judged on), ``with latency.time()`` and three ``record()`` calls, and ``perf_counter_ns()``
around the inference with four ``record()`` calls.  Per pair of blocks the overhead is
(with - without) / without; the figure is their 10% trimmed mean (a block a preemption
stalled is an outlier, not a cost) with its 95% confidence interval (Yuen: the winsorized
variance).  Short blocks give many pairs, each close in time, which is what makes a 0.1%
difference visible on a shared machine.  BLAS runs on one thread unless the environment says
otherwise (``edgetelemetry bench`` sets it).  The recorder's collector thread and (when
``edgetelemetry.agent`` exists) a heartbeat agent sending to an in-process endpoint on
loopback run for the whole measurement; the matmul is sized once the agent's first heartbeat
is stored, and re-sized while measured when the machine's speed moves, so that it stays a
~100 us inference.  The target is judged on the 95% CI of the telemetry's cost per inference:
met, missed, or inconclusive when the interval spans the budget.

Needs numpy; ONNX Runtime is measured when it is installed (the model is built in code).
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns, thread_time_ns
from typing import Any

from .measure import Progress
from .stats import median, trimmed_mean, trimmed_mean_ci
from .workloads import (
    TARGET_US,
    Workload,
    limit_blas_threads,
    matmul_label,
    matmul_step,
    onnx_mlp_model,
    workloads,
)

__all__ = [
    "BUDGET_NS",
    "TARGET_PCT",
    "TARGET_US",
    "BenchAgent",
    "InferenceSettings",
    "Workload",
    "limit_blas_threads",
    "measure_workload",
    "onnx_mlp_model",
    "run_inference_overhead",
    "target_verdict",
]

log = logging.getLogger(__name__)

TARGET_PCT = 1.0  # issue 6: under 1% for a ~100 us inference
# What the target allows per inference: 1% of 100 us.  It is judged on the telemetry's cost
# per inference, not on the percentage of the matmul as measured: on a shared VM one size's
# time moves (55 to 132 us seen), and re-sizing keeps it near 100 us only within 15%.
BUDGET_NS = TARGET_US * 1e3 * TARGET_PCT / 100
# The matmul is re-sized while measured when the median of its last half second of blocks (the
# thread's CPU time) is more than this far from TARGET_US.
RESIZE_CHECK_S = 0.5
RESIZE_TOLERANCE = 0.15

# what each way of recording looks like in the loop, for the table and the JSON
RECORDING = {
    "group": "group.start() + group.record_since(start, confidence, input size, batch size)",
    "time": "with latency.time() + 3 x record()",
    "clock": "perf_counter_ns() x 2 + 4 x record()",
}

_AKID = "AKIDBENCHLOCAL01"
_SECRET = "bench-loopback-only"


@dataclass(frozen=True)
class InferenceSettings:
    seconds: dict[str, float]  # measurement budget per workload
    block_s: float  # length of one block
    agent_interval_s: float


WORKLOADS = ("matmul", "matmul-time", "matmul-clock", "mlp", "conv", "onnx")
DEFAULT = InferenceSettings(
    seconds={"matmul": 14.0, "matmul-time": 6.0, "matmul-clock": 6.0, "mlp": 5.0, "conv": 5.0,
             "onnx": 5.0},
    block_s=0.002,
    agent_interval_s=1.0,
)
QUICK = InferenceSettings(
    seconds={"matmul": 2.0, "matmul-time": 0.8, "matmul-clock": 0.8, "mlp": 0.8, "conv": 0.8,
             "onnx": 0.8},
    block_s=0.002,
    agent_interval_s=1.0,
)


@dataclass
class Result:
    key: str
    label: str
    recording: str = ""
    skipped: str | None = None
    pairs: int = 0
    block_inferences: int = 0  # of the first block length (a re-sized matmul changes it)
    inferences: int = 0  # per side
    inference_ns: float = 0.0  # wall clock, median block without telemetry
    sized_ns: float | None = None  # the matmul's time when it was sized (the VM's speed moves)
    sizes: dict[int, int] = field(default_factory=dict)  # the matmul: pairs measured per size
    last_size: int | None = None  # the matmul: the size it ended on, where the next one starts
    # the inference thread's CPU time (the figure) and the wall clock, each: telemetry_ns,
    # telemetry_ns_ci, overhead_pct, overhead_ci_pct
    cpu: dict[str, Any] = field(default_factory=dict)
    wall: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        if self.skipped:
            return {"label": self.label, "skipped": self.skipped}

        def figures(e: dict[str, Any]) -> dict[str, Any]:
            return {
                "telemetry_ns_per_inference": round(e["telemetry_ns"], 1),
                "telemetry_ns_ci95": [round(x, 1) for x in e["telemetry_ns_ci"]],
                "overhead_pct": round(e["overhead_pct"], 4),
                "overhead_ci95_pct": [round(x, 4) for x in e["overhead_ci_pct"]],
            }

        return {
            "label": self.label,
            "inference_ns": round(self.inference_ns, 1),
            **figures(self.cpu),
            "clock": "the inference thread's CPU time",
            "wall_clock": figures(self.wall),
            "pairs": self.pairs,
            "block_inferences": self.block_inferences,
            "inferences_per_side": self.inferences,
            "metrics_per_inference": 4,
            "recording": self.recording,
            **({"sized_ns": round(self.sized_ns, 1)} if self.sized_ns else {}),
            **({"pairs_per_size": {str(n): c for n, c in sorted(self.sizes.items())}}
               if self.sizes else {}),
        }


# ---- the agent ------------------------------------------------------------------------------


class BenchAgent:
    """A heartbeat agent on the recorder, sending to an in-process endpoint on loopback."""

    def __init__(self, rec: Any, interval: float) -> None:
        self.description = ""
        self.spool_dir: str | None = None
        self.server: Any = None
        self.agent: Any = None
        try:
            from ..agent import Agent
        except ImportError as exc:
            self.description = f"not running: edgetelemetry.agent is not available ({exc})"
            return
        try:
            from botocore.credentials import Credentials

            from ..server import EndpointServer

            self.server = EndpointServer(None, credentials={_AKID: _SECRET}, auto_register=True)
            url = self.server.start()
            kwargs: dict[str, Any] = {}
            if "spool_dir" in inspect.signature(Agent).parameters:
                self.spool_dir = tempfile.mkdtemp(prefix="edgetelemetry-bench-")
                kwargs["spool_dir"] = self.spool_dir
            self.agent = Agent(rec, device_name="bench-device", fleet="bench-fleet",
                               endpoint_url=url, region="us-east-1", interval=interval,
                               credentials=Credentials(_AKID, _SECRET), **kwargs)
            start = getattr(self.agent, "start", None)
            if callable(start):
                start()
            self.description = (f"running: heartbeat every {interval:g} s to an in-process "
                                f"endpoint on {url}")
        except Exception as exc:  # noqa: BLE001 - report it, measure without the agent
            self.description = f"not running: starting it failed ({type(exc).__name__}: {exc})"
            self.stop()

    @property
    def running(self) -> bool:
        return self.agent is not None

    def settle(self, timeout: float) -> float | None:
        """Wait for the endpoint to store the agent's first heartbeat: the agent's start-up
        (botocore's client, the first request) keeps the other core busy, and a matmul sized
        meanwhile is sized on a slower machine.  Seconds waited, None on timeout."""
        t0 = time.monotonic()
        while self.running and time.monotonic() - t0 < timeout:
            if (self.heartbeats() or 0) >= 1:
                return time.monotonic() - t0
            time.sleep(0.05)
        return None

    def heartbeats(self) -> int | None:
        try:
            return int(self.server.store.heartbeat_count()) if self.server else None
        except Exception:  # noqa: BLE001 - a count is a nicety
            return None

    def stop(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            for name in ("stop", "close"):
                fn = getattr(agent, name, None)
                if callable(fn):
                    try:
                        fn()
                    except Exception as exc:  # noqa: BLE001 - the measurement is done
                        log.warning("closing the bench agent failed: %s", exc)
                    break
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        if self.spool_dir is not None:
            shutil.rmtree(self.spool_dir, ignore_errors=True)
            self.spool_dir = None


# ---- measurement ------------------------------------------------------------------------------


Block = Callable[[int], "tuple[float, float]"]


def _loops(w: Workload, handles: tuple[Any, ...], group: Any) -> tuple[Block, Block]:
    """The loop without and with telemetry; each returns (wall, CPU) ns per inference.  Both
    run the same user code (the inference's result is kept and unpacked in both)."""
    infer, inputs = w.infer, w.inputs
    m = len(inputs)
    latency, confidence, input_size, batch_size = handles

    def plain(k: int) -> tuple[float, float]:
        c0, t0 = thread_time_ns(), perf_counter_ns()
        for i in range(k):
            x = inputs[i % m]
            _, top = infer(x)
        t1, c1 = perf_counter_ns(), thread_time_ns()
        return (t1 - t0) / k, (c1 - c0) / k

    def instrumented_group(k: int) -> tuple[float, float]:
        per_inference = group
        c0, t0 = thread_time_ns(), perf_counter_ns()
        for i in range(k):
            x = inputs[i % m]
            start = per_inference.start()
            _, top = infer(x)
            per_inference.record_since(start, top, x.nbytes, 1)
        t1, c1 = perf_counter_ns(), thread_time_ns()
        return (t1 - t0) / k, (c1 - c0) / k

    def instrumented_time(k: int) -> tuple[float, float]:
        c0, t0 = thread_time_ns(), perf_counter_ns()
        for i in range(k):
            x = inputs[i % m]
            with latency.time():
                _, top = infer(x)
            confidence.record(top)
            input_size.record(x.nbytes)
            batch_size.record(1)
        t1, c1 = perf_counter_ns(), thread_time_ns()
        return (t1 - t0) / k, (c1 - c0) / k

    def instrumented_clock(k: int) -> tuple[float, float]:
        clock, record_latency = perf_counter_ns, latency.record
        c0, t0 = thread_time_ns(), perf_counter_ns()
        for i in range(k):
            x = inputs[i % m]
            start = clock()
            _, top = infer(x)
            record_latency((clock() - start) / 1e6)
            confidence.record(top)
            input_size.record(x.nbytes)
            batch_size.record(1)
        t1, c1 = perf_counter_ns(), thread_time_ns()
        return (t1 - t0) / k, (c1 - c0) / k

    loops = {"group": instrumented_group, "time": instrumented_time, "clock": instrumented_clock}
    return plain, loops[w.timing]


def _block_length(plain: Block, block_s: float) -> int:
    """About block_s of inferences, from the fastest of a few short runs (a run that a
    preemption stalled must not make the blocks tiny)."""
    probe = 1
    while plain(probe)[0] * probe < block_s * 1e9 / 20 and probe < 1 << 20:
        probe *= 2
    inference_ns = min(plain(probe)[0] for _ in range(5))
    return max(1, int(block_s * 1e9 / inference_ns))


def measure_workload(w: Workload, rec: Any, seconds: float, block_s: float) -> Result:
    handles = (
        rec.histogram("latency", unit="ms", model=w.model, version="1"),
        rec.histogram("confidence", model=w.model, version="1"),
        rec.histogram("input-size", unit="bytes", model=w.model, version="1"),
        rec.histogram("batch-size", model=w.model, version="1"),
    )
    group = rec.group(*handles)

    def prepare(w: Workload) -> tuple[Block, Block, int]:
        plain, instrumented = _loops(w, handles, group)
        k = _block_length(plain, block_s)
        for _ in range(2):  # warm both paths
            plain(k)
            instrumented(k)
        return plain, instrumented, k

    plain, instrumented, k = prepare(w)
    first_k, inferences = k, 0
    sizes: dict[int, int] = {}
    a: list[tuple[float, float]] = []
    b: list[tuple[float, float]] = []
    deadline = time.monotonic() + seconds
    checked_at, checked_pairs = time.monotonic(), 0
    i = 0
    while time.monotonic() < deadline or len(a) < 6:
        if i % 2 == 0:  # A B, then B A: a linear drift cancels within each two pairs
            a.append(plain(k))
            b.append(instrumented(k))
        else:
            b.append(instrumented(k))
            a.append(plain(k))
        i += 1
        inferences += k
        if w.size is not None:
            sizes[w.size] = sizes.get(w.size, 0) + 1
        # The matmul stands for a ~100 us inference.  This machine's speed moves (a shared
        # VM: the same size took 55 us one minute and 130 us another), so it is re-sized
        # while measured, and every pair is taken at about that time.
        if (w.size is not None and w.arrays is not None and len(a) - checked_pairs >= 20
                and time.monotonic() - checked_at >= RESIZE_CHECK_S):
            took_us = median([x[1] for x in a[checked_pairs:]]) / 1e3
            checked_at, checked_pairs = time.monotonic(), len(a)
            if abs(took_us / TARGET_US - 1) > RESIZE_TOLERANCE:
                n = matmul_step(w.size, took_us, TARGET_US)
                if n != w.size:
                    w = w.resized(n)
                    plain, instrumented, k = prepare(w)
                    checked_at = time.monotonic()
    # Per pair: the relative and the absolute difference.  A block that a preemption or a
    # neighbour stalled is an outlier in one pair; a trimmed mean keeps it from deciding.
    label = matmul_label(list(sizes)) if sizes and w.key == "matmul" else w.label
    result = Result(key=w.key, label=label, recording=RECORDING[w.timing], pairs=len(a),
                    block_inferences=first_k, inferences=inferences,
                    inference_ns=median([x[0] for x in a]), sized_ns=w.sized_ns, sizes=sizes,
                    last_size=w.size)
    for clock, estimate in ((1, result.cpu), (0, result.wall)):
        rel = [(y[clock] / x[clock] - 1) * 100 for x, y in zip(a, b)]
        diff = [y[clock] - x[clock] for x, y in zip(a, b)]
        estimate.update(
            telemetry_ns=trimmed_mean(diff),
            telemetry_ns_ci=trimmed_mean_ci(diff),
            overhead_pct=trimmed_mean(rel),
            overhead_ci_pct=trimmed_mean_ci(rel),
        )
    result.samples = {"without_ns": a, "with_ns": b}
    return result


def run_inference_overhead(
    settings: InferenceSettings,
    progress: Progress,
    *,
    keys: tuple[str, ...] = WORKLOADS,
) -> dict[str, Any]:
    """Every workload's overhead, or why it was skipped; JSON-ready."""
    try:
        import numpy as np
    except ImportError:
        progress.step("inference loop: skipped, numpy is not installed")
        return {"skipped": "numpy is not installed: pip install numpy to measure an inference loop"}
    from ..recording import Recorder

    progress.step("inference loop: starting the agent, sizing a ~100 us numpy matmul")
    results: list[Result] = []
    with Recorder() as rec:
        agent = BenchAgent(rec, settings.agent_interval_s)
        progress.say(f"agent {agent.description}")
        try:
            if agent.running:
                waited = agent.settle(timeout=30.0)
                progress.say("agent: no heartbeat stored within 30 s; measuring anyway"
                             if waited is None else
                             f"agent: first heartbeat stored after {waited:.1f} s")
            # sized with the agent and the collector running, as it is measured
            loads = workloads(np, keys)
            size = None  # where the matmul ended: the next variant starts there
            for w in loads:
                if size is not None and w.arrays is not None and w.size != size:
                    w = w.resized(size)
                if w.skipped:
                    progress.step(f"inference loop: {w.label}: skipped, {w.skipped}")
                    results.append(Result(w.key, w.label, skipped=w.skipped))
                    continue
                budget = settings.seconds.get(w.key, 2.0)
                progress.step(f"inference loop: {w.label}, {budget:g} s of A/B blocks")
                results.append(measure_workload(w, rec, budget, settings.block_s))
                size = results[-1].last_size or size
            heartbeats = agent.heartbeats()
        finally:
            agent.stop()
        snap = rec.snapshot()
    lost = sum(sum(s.dropped.values()) + sum(s.rejected.values()) for s in snap.series)
    out: dict[str, Any] = {
        "metrics_per_inference": 4,
        "agent": agent.description,
        "agent_running": agent.description.startswith("running"),
        "heartbeats_received": heartbeats,
        "records_dropped_or_rejected": lost,
        "workloads": {r.key: r.to_json() for r in results},
        "target": {"inference_us": TARGET_US, "overhead_pct": TARGET_PCT,
                   "budget_ns": BUDGET_NS},
    }
    judged = next((r for r in results if r.key == "matmul" and not r.skipped), None)
    if judged is not None:
        lo, hi = judged.cpu["telemetry_ns_ci"]
        verdict = target_verdict(lo, hi)
        out["target"].update(
            telemetry_ns=round(judged.cpu["telemetry_ns"], 1),
            lower_ci_ns=round(lo, 1),
            upper_ci_ns=round(hi, 1),
            upper_ci_pct=round(judged.cpu["overhead_ci_pct"][1], 4),
            measured_inference_ns=round(judged.inference_ns, 1),
            verdict=verdict,
            met={"met": True, "missed": False}.get(verdict),
        )
    return out


def target_verdict(lower_ci_ns: float, upper_ci_ns: float) -> str:
    """"met" when the whole 95% CI of the telemetry's cost per inference is under the budget,
    "missed" when it is all above, "inconclusive" when it spans the budget (run longer)."""
    if upper_ci_ns < BUDGET_NS:
        return "met"
    if lower_ci_ns > BUDGET_NS:
        return "missed"
    return "inconclusive"

