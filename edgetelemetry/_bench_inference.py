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

import dataclasses
import importlib.util
import inspect
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns, thread_time_ns
from typing import Any

from ._bench_measure import Progress, median, trimmed_mean, trimmed_mean_ci

__all__ = ["InferenceSettings", "Workload", "onnx_mlp_model", "run_inference_overhead"]

log = logging.getLogger(__name__)

TARGET_PCT = 1.0  # issue 6: under 1% for a ~100 us inference
TARGET_US = 100.0
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
class Workload:
    key: str
    model: str  # the model name the telemetry reports
    label: str
    infer: Callable[[Any], tuple[Any, float]]
    inputs: list[Any]
    skipped: str | None = None
    # how the 4 metrics are recorded: "group" (``start()`` + ``record_since()``, the
    # recommended way), "time" (``with latency.time():`` + 3 ``record()``) or "clock"
    # (``perf_counter_ns()`` around the inference + 4 ``record()``)
    timing: str = "group"
    sized_ns: float | None = None  # the matmul: what one inference took when it was sized
    # the matmul: its size, and its model and inputs at another size, for re-sizing
    size: int | None = None
    arrays: Callable[[int], tuple[Callable[[Any], tuple[Any, float]], list[Any]]] | None = None

    def resized(self, size: int) -> Workload:
        """The same workload with the matmul at another size."""
        if self.arrays is None:
            raise ValueError(f"{self.key} has no sizes: only the matmul is re-sized")
        infer, inputs = self.arrays(size)
        return dataclasses.replace(self, infer=infer, inputs=inputs, size=size)


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


_BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                   "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def limit_blas_threads(threads: int | None = 1) -> str:
    """Run numpy's BLAS on ``threads`` threads unless the environment already says: a GEMM
    split over every core stalls whenever one is busy, which buries a 0.3% effect in noise.
    Only possible before numpy is imported; returns what is in force, as far as is known."""
    if threads is None or "numpy" in sys.modules:
        return (os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
                or "library default")
    for name in _BLAS_VARIABLES:
        os.environ.setdefault(name, str(threads))
    return os.environ["OPENBLAS_NUM_THREADS"]


# ---- workloads ----------------------------------------------------------------------------


def _matmul_arrays(np: Any, n: int) -> tuple[Callable[[Any], tuple[Any, float]], list[Any]]:
    """The matmul model of size n: x @ w in float32, square, and 8 inputs to take in turn."""
    rng = np.random.default_rng(n)
    w = (rng.standard_normal((n, n)) / n**0.5).astype(np.float32)
    inputs = [rng.standard_normal((n, n)).astype(np.float32) for _ in range(8)]

    def infer(x: Any) -> tuple[Any, float]:
        y = x @ w
        return y, 0.5

    return infer, inputs


def _matmul_step(n: int, took_us: float, target_us: float) -> int:
    """The size whose time should be target_us, from size n's: the time goes as n**3.  One
    noisy probe moves the size by 2x at most; sizes are multiples of 8."""
    scale = min(max((target_us / took_us) ** (1 / 3), 0.5), 2.0)
    return min(max(round(n * scale / 8) * 8, 8), 2048)


def _matmul_label(sizes: list[int]) -> str:
    lo, hi = min(sizes), max(sizes)
    shape = f"{lo}x{lo}" if lo == hi else f"n={lo}..{hi}"
    return f"numpy matmul {shape} float32 (~{TARGET_US:g} us)"


def _matmul(np: Any, target_us: float) -> Workload:
    """The matmul, sized so that one inference of the measured loop (8 inputs in turn) takes
    about ``target_us`` here; the measurement re-sizes it when the machine's speed moves."""

    def timed(n: int) -> float:
        infer, xs = _matmul_arrays(np, n)
        for x in xs:
            infer(x)
        runs = []
        for _ in range(7):
            # the thread's CPU time: the agent holds the GIL now and then, and on the wall
            # clock that made the matmul look slower than it is
            t0 = thread_time_ns()
            for i in range(24):
                infer(xs[i % 8])
            runs.append((thread_time_ns() - t0) / 24 / 1e3)
        return median(runs)  # as the blocks are summarised

    n = 64
    took = timed(n)  # always the time of size n
    for _ in range(10):
        if abs(took / target_us - 1) < 0.08:
            break
        new = _matmul_step(n, took, target_us)
        if new == n:  # the next size is a step of 8: take the nearer
            new = n + 8 if took < target_us else n - 8
            took_new = timed(new)
            if abs(took_new / target_us - 1) < abs(took / target_us - 1):
                n, took = new, took_new
            break
        n, took = new, timed(new)

    infer, inputs = _matmul_arrays(np, n)
    return Workload("matmul", "matmul", _matmul_label([n]), infer, inputs, sized_ns=took * 1e3,
                    size=n, arrays=lambda size: _matmul_arrays(np, size))


def _demo_models(np: Any) -> list[Workload]:
    from .demo import _make_models

    rng = np.random.default_rng(12)
    out = []
    for m, key in zip(_make_models(), ("mlp", "conv")):
        inputs = [rng.standard_normal(m.input_shape).astype(np.float32) for _ in range(8)]
        out.append(Workload(key, m.name, f"demo {m.name} (numpy)", m.infer, inputs))
    return out


def _onnx(np: Any) -> Workload:
    label = "ONNX Runtime: the demo MLP"
    if importlib.util.find_spec("onnxruntime") is None:
        return Workload("onnx", "onnx-mlp", label, _never, [],
                        skipped="onnxruntime is not installed (pip install onnxruntime)")
    # A native wheel that crashes on import (seen under qemu-user) must not take the figures
    # measured so far with it: try the import in a child process first.
    probe = subprocess.run([sys.executable, "-c", "import onnxruntime"], capture_output=True,
                           timeout=300, check=False)
    if probe.returncode != 0:
        return Workload("onnx", "onnx-mlp", label, _never, [],
                        skipped=f"importing onnxruntime fails here (exit {probe.returncode})")
    import onnxruntime as ort

    rng = np.random.default_rng(7)  # the demo MLP's weights
    w1 = rng.standard_normal((256, 128)).astype(np.float32) / 16
    w2 = rng.standard_normal((128, 10)).astype(np.float32) / 11
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_mlp_model(w1.tobytes(), w2.tobytes()), options,
                                   providers=["CPUExecutionProvider"])
    run = session.run
    feed = session.get_inputs()[0].name
    data = np.random.default_rng(13)
    inputs = [data.standard_normal((1, 256)).astype(np.float32) for _ in range(8)]

    def infer(x: Any) -> tuple[Any, float]:
        (p,) = run(None, {feed: x})
        return p, float(p.max())

    return Workload("onnx", "onnx-mlp", f"{label} ({ort.__version__}, 1 thread)", infer, inputs)


def _never(x: Any) -> tuple[Any, float]:  # pragma: no cover - a skipped workload never runs
    raise RuntimeError("skipped workload")


# ---- a tiny ONNX model, serialised by hand (no onnx package needed) ------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, dims: tuple[int, ...]) -> bytes:
    shape = b"".join(_field_bytes(1, _field_int(1, d)) for d in dims)  # Dimension.dim_value
    tensor_type = _field_int(1, 1) + _field_bytes(2, shape)  # elem_type FLOAT, shape
    return _field_bytes(1, name) + _field_bytes(2, _field_bytes(1, tensor_type))


def _initializer(name: str, dims: tuple[int, ...], raw: bytes) -> bytes:
    return (b"".join(_field_int(1, d) for d in dims) + _field_int(2, 1)  # dims, FLOAT
            + _field_bytes(8, name) + _field_bytes(9, raw))


def _node(op: str, inputs: tuple[str, ...], output: str) -> bytes:
    return (b"".join(_field_bytes(1, i) for i in inputs) + _field_bytes(2, output)
            + _field_bytes(3, f"{op.lower()}-{output}") + _field_bytes(4, op))


def onnx_mlp_model(w1: bytes, w2: bytes) -> bytes:
    """A serialised ONNX ModelProto (IR 8, opset 13): softmax(relu(x @ w1) @ w2), x [1, 256],
    w1 [256, 128] and w2 [128, 10] float32 little-endian.  Written field by field from the
    ONNX protobuf schema, so a device needs onnxruntime only, not the onnx package."""
    if len(w1) != 256 * 128 * 4 or len(w2) != 128 * 10 * 4:
        raise ValueError("w1 must be 256x128 and w2 128x10 float32")
    graph = b"".join(
        [
            _field_bytes(1, _node("MatMul", ("x", "w1"), "h")),
            _field_bytes(1, _node("Relu", ("h",), "r")),
            _field_bytes(1, _node("MatMul", ("r", "w2"), "logits")),
            _field_bytes(1, _node("Softmax", ("logits",), "p")),
            _field_bytes(2, "edgetelemetry-bench-mlp"),
            _field_bytes(5, _initializer("w1", (256, 128), w1)),
            _field_bytes(5, _initializer("w2", (128, 10), w2)),
            _field_bytes(11, _value_info("x", (1, 256))),
            _field_bytes(12, _value_info("p", (1, 10))),
        ]
    )
    opset = _field_bytes(1, "") + _field_int(2, 13)
    return (_field_int(1, 8) + _field_bytes(2, "edgetelemetry") + _field_bytes(7, graph)
            + _field_bytes(8, opset))


# ---- the agent ------------------------------------------------------------------------------


class _Agent:
    """A heartbeat agent on the recorder, sending to an in-process endpoint on loopback."""

    def __init__(self, rec: Any, interval: float) -> None:
        self.description = ""
        self.spool_dir: str | None = None
        self.server: Any = None
        self.agent: Any = None
        try:
            from .agent import Agent
        except ImportError as exc:
            self.description = f"not running: edgetelemetry.agent is not available ({exc})"
            return
        try:
            from botocore.credentials import Credentials

            from .server import EndpointServer

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


def _measure(w: Workload, rec: Any, seconds: float, block_s: float) -> Result:
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
                n = _matmul_step(w.size, took_us, TARGET_US)
                if n != w.size:
                    w = w.resized(n)
                    plain, instrumented, k = prepare(w)
                    checked_at = time.monotonic()
    # Per pair: the relative and the absolute difference.  A block that a preemption or a
    # neighbour stalled is an outlier in one pair; a trimmed mean keeps it from deciding.
    label = _matmul_label(list(sizes)) if sizes and w.key == "matmul" else w.label
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


def _workloads(np: Any, workloads: tuple[str, ...]) -> list[Workload]:
    loads: list[Workload] = []
    if "matmul" in workloads:
        ref = _matmul(np, TARGET_US)
        loads.append(ref)
        if "matmul-time" in workloads:
            loads.append(dataclasses.replace(
                ref, key="matmul-time", timing="time",
                label="  same, with latency.time() + 3 record()",
            ))
        if "matmul-clock" in workloads:
            loads.append(dataclasses.replace(
                ref, key="matmul-clock", timing="clock",
                label="  same, perf_counter_ns() + 4 record()",
            ))
    loads.extend(m for m in _demo_models(np) if m.key in workloads)
    if "onnx" in workloads:
        try:
            loads.append(_onnx(np))
        except Exception as exc:  # noqa: BLE001 - a broken onnxruntime must not stop the bench
            loads.append(Workload("onnx", "onnx-mlp", "ONNX Runtime: the demo MLP", _never, [],
                                  skipped=f"onnxruntime failed: {type(exc).__name__}: {exc}"))
    return loads


def run_inference_overhead(
    settings: InferenceSettings,
    progress: Progress,
    *,
    workloads: tuple[str, ...] = WORKLOADS,
) -> dict[str, Any]:
    """Every workload's overhead, or why it was skipped; JSON-ready."""
    try:
        import numpy as np
    except ImportError:
        progress.step("inference loop: skipped, numpy is not installed")
        return {"skipped": "numpy is not installed: pip install numpy to measure an inference loop"}
    import edgetelemetry as et

    progress.step("inference loop: starting the agent, sizing a ~100 us numpy matmul")
    results: list[Result] = []
    with et.Recorder() as rec:
        agent = _Agent(rec, settings.agent_interval_s)
        progress.say(f"agent {agent.description}")
        try:
            if agent.running:
                waited = agent.settle(timeout=30.0)
                progress.say("agent: no heartbeat stored within 30 s; measuring anyway"
                             if waited is None else
                             f"agent: first heartbeat stored after {waited:.1f} s")
            # sized with the agent and the collector running, as it is measured
            loads = _workloads(np, workloads)
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
                results.append(_measure(w, rec, budget, settings.block_s))
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

