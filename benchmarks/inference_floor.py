"""Where a group's cost in an inference loop goes, against the floor any Python telemetry pays.

    python benchmarks/inference_floor.py --seconds 100

One ~100 us numpy matmul per inference, as in ``edgetelemetry bench``, with the agent
running, in four loops whose blocks (2 ms) are interleaved A B C D, D C B A, ... so that all
four see the same moments of a shared machine:

- plain: the inference alone;
- group: ``start()`` before it, ``record_since(start, top, x.nbytes, 1)`` after it;
- stdlib: the same shape with two standard-library C calls that record nothing,
  ``perf_counter_ns()`` before and ``math.hypot(start, top, x.nbytes, 1)`` after (a fast call
  that converts four numbers to doubles): the floor that any telemetry taking a timestamp
  and handing four values to C from Python pays, however little it does with them;
- nbytes: only ``x.nbytes`` after the inference, the user's own code in both loops above.

Each figure is the 10% trimmed mean of (loop - plain) per pair of blocks, on the inference
thread's CPU time, with its 95% CI (Yuen); "group - stdlib" is what the library costs above
the floor.  Nothing is gated: it is a measurement to read, on the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import time
from math import hypot
from time import perf_counter_ns, thread_time_ns
from typing import Any, Callable

from edgetelemetry.bench.inference import BenchAgent, limit_blas_threads
from edgetelemetry.bench.stats import trimmed_mean, trimmed_mean_ci
from edgetelemetry.bench.workloads import matmul_workload


def _loops(infer: Any, inputs: list[Any], group: Any) -> list[Callable[[int], float]]:
    m = len(inputs)

    def plain(k: int) -> float:
        c0 = thread_time_ns()
        for i in range(k):
            x = inputs[i % m]
            _, top = infer(x)
        return (thread_time_ns() - c0) / k

    def group_(k: int) -> float:
        c0 = thread_time_ns()
        for i in range(k):
            x = inputs[i % m]
            start = group.start()
            _, top = infer(x)
            group.record_since(start, top, x.nbytes, 1)
        return (thread_time_ns() - c0) / k

    def stdlib(k: int) -> float:
        c0 = thread_time_ns()
        for i in range(k):
            x = inputs[i % m]
            start = perf_counter_ns()
            _, top = infer(x)
            hypot(start, top, x.nbytes, 1)
        return (thread_time_ns() - c0) / k

    def nbytes(k: int) -> float:
        c0 = thread_time_ns()
        for i in range(k):
            x = inputs[i % m]
            _, top = infer(x)
            x.nbytes  # noqa: B018 - the attribute read is what is measured
        return (thread_time_ns() - c0) / k

    group_.__name__ = "group"
    return [plain, group_, stdlib, nbytes]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=100.0, help="measurement time (100)")
    p.add_argument("--block-ms", type=float, default=2.0, help="block length (2 ms)")
    args = p.parse_args()
    limit_blas_threads(1)
    import numpy as np

    import edgetelemetry as et

    with et.Recorder() as rec:
        agent = BenchAgent(rec, 1.0)
        try:
            agent.settle(30.0)
            w = matmul_workload(np, 100.0)
            handles = [rec.histogram(metric, unit=unit, model="floor-model", version="1")
                       for metric, unit in (("latency", "ms"), ("confidence", ""),
                                            ("input-size", "bytes"), ("batch-size", ""))]
            loops = _loops(w.infer, w.inputs, rec.group(*handles))
            k = max(1, int(args.block_ms * 1e6 / (w.sized_ns or 1e5)))
            for f in loops:
                f(k)
                f(k)
            blocks: dict[str, list[float]] = {f.__name__: [] for f in loops}
            deadline = time.monotonic() + args.seconds
            rounds = 0
            while time.monotonic() < deadline:
                for f in loops if rounds % 2 == 0 else loops[::-1]:
                    blocks[f.__name__].append(f(k))
                rounds += 1
        finally:
            agent.stop()

    def row(name: str, diff: list[float]) -> str:
        lo, hi = trimmed_mean_ci(diff)
        return f"{name:<16} {trimmed_mean(diff):+7.0f} ns  [{lo:+.0f}, {hi:+.0f}]"

    plain = blocks["plain"]
    print(f"{w.label}, {k} inferences per block, {rounds} rounds, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"plain            {trimmed_mean(plain) / 1e3:7.1f} us per inference (CPU time)")
    for name in ("group", "stdlib", "nbytes"):
        print(row(name, [b - a for a, b in zip(plain, blocks[name])]))
    print(row("group - stdlib", [b - a for a, b in zip(blocks["stdlib"], blocks["group"])]))


if __name__ == "__main__":
    main()
