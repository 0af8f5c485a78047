"""The inference workloads ``edgetelemetry bench`` times: a matmul sized to ~100 us, the demo's
two numpy models, and an MLP in ONNX Runtime when it is installed (the model built in code).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from time import thread_time_ns
from typing import Any

from .stats import median

__all__ = [
    "TARGET_US",
    "Workload",
    "limit_blas_threads",
    "matmul_label",
    "matmul_step",
    "matmul_workload",
    "onnx_mlp_model",
    "workloads",
]

TARGET_US = 100.0  # the matmul is sized to a ~100 us inference (the 1% target's)


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


def matmul_step(n: int, took_us: float, target_us: float) -> int:
    """The size whose time should be target_us, from size n's: the time goes as n**3.  One
    noisy probe moves the size by 2x at most; sizes are multiples of 8."""
    scale = min(max((target_us / took_us) ** (1 / 3), 0.5), 2.0)
    return min(max(int(round(n * scale / 8)) * 8, 8), 2048)


def matmul_label(sizes: list[int]) -> str:
    lo, hi = min(sizes), max(sizes)
    shape = f"{lo}x{lo}" if lo == hi else f"n={lo}..{hi}"
    return f"numpy matmul {shape} float32 (~{TARGET_US:g} us)"


def matmul_workload(np: Any, target_us: float) -> Workload:
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
        new = matmul_step(n, took, target_us)
        if new == n:  # the next size is a step of 8: take the nearer
            new = n + 8 if took < target_us else n - 8
            took_new = timed(new)
            if abs(took_new / target_us - 1) < abs(took / target_us - 1):
                n, took = new, took_new
            break
        n, took = new, timed(new)

    infer, inputs = _matmul_arrays(np, n)
    return Workload("matmul", "matmul", matmul_label([n]), infer, inputs, sized_ns=took * 1e3,
                    size=n, arrays=lambda size: _matmul_arrays(np, size))


def _demo_models(np: Any) -> list[Workload]:
    from ..demo import make_models

    rng = np.random.default_rng(12)
    out = []
    for m, key in zip(make_models(), ("mlp", "conv")):
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


def workloads(np: Any, keys: tuple[str, ...]) -> list[Workload]:
    loads: list[Workload] = []
    if "matmul" in keys:
        ref = matmul_workload(np, TARGET_US)
        loads.append(ref)
        if "matmul-time" in keys:
            loads.append(dataclasses.replace(
                ref, key="matmul-time", timing="time",
                label="  same, with latency.time() + 3 record()",
            ))
        if "matmul-clock" in keys:
            loads.append(dataclasses.replace(
                ref, key="matmul-clock", timing="clock",
                label="  same, perf_counter_ns() + 4 record()",
            ))
    loads.extend(m for m in _demo_models(np) if m.key in keys)
    if "onnx" in keys:
        try:
            loads.append(_onnx(np))
        except Exception as exc:  # noqa: BLE001 - a broken onnxruntime must not stop the bench
            loads.append(Workload("onnx", "onnx-mlp", "ONNX Runtime: the demo MLP", _never, [],
                                  skipped=f"onnxruntime failed: {type(exc).__name__}: {exc}"))
    return loads
