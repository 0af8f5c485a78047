"""Telemetry's overhead on a real inference loop, measured in the same run (issue 6).

The loop the user would run, with and without telemetry: 4 metrics per inference (``time()``
around the inference, 3 ``record()``), the recorder's collector thread and the heartbeat agent
sending every second to an in-process endpoint.  Blocks alternate A B B A so drift lands on
both; the overhead is a 10% trimmed mean over block pairs of the inference thread's CPU time,
with a bootstrap 95% CI.  The workloads: a numpy matmul sized to ~100 us on this machine (with
``time()``, and with ``perf_counter_ns`` + ``record()`` for the latency), the demo's two numpy
models, and the demo MLP in ONNX Runtime when it is installed.

Gates (same-run ratios, as every gate here):
- the overhead on the ~100 us inference stays under 5%: a lock, a syscall or an allocation on
  the record path would break it;
- issue 6's target, under 1%, is checked as an expected failure: on the shared x86_64 VM the
  4 metrics cost 1-2.5 us of the inference thread's CPU per inference (more than the same calls
  cost hot in a micro-benchmark: the inference evicts the interpreter's caches), 1.3-3.5% of a
  100 us inference.  It turns into an XPASS when the record path gets there.

The same code is ``edgetelemetry bench``'s inference section, with a longer budget.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import report

from edgetelemetry._bench_inference import (
    TARGET_PCT,
    InferenceSettings,
    limit_blas_threads,
    run_inference_overhead,
)
from edgetelemetry._bench_measure import Progress

BLAS_THREADS = limit_blas_threads(1)  # before numpy is imported, if it is not yet
np = pytest.importorskip("numpy")

SETTINGS = InferenceSettings(
    seconds={"matmul": 10.0, "matmul-clock": 5.0, "mlp": 3.0, "conv": 3.0, "onnx": 3.0},
    block_s=0.02,
    agent_interval_s=1.0,
)
REGRESSION_PCT = 5.0


@pytest.fixture(scope="module")
def overhead() -> dict[str, Any]:
    result = run_inference_overhead(SETTINGS, Progress(None, 0, enabled=False))
    result["blas_threads"] = BLAS_THREADS
    for key, w in result["workloads"].items():
        if w.get("skipped"):
            continue
        lo, hi = w["overhead_ci95_pct"]
        report(
            f"inference overhead: {key}",
            w["overhead_pct"],
            "%",
            ci95=f"[{lo:+.2f}, {hi:+.2f}]",
            inference=f"{w['inference_ns'] / 1e3:.1f} us",
            telemetry=f"{w['telemetry_ns_per_inference']:.0f} ns",
            blas_threads=BLAS_THREADS,
        )
    return result


def test_inference_loop_overhead_has_not_regressed(overhead: dict[str, Any]) -> None:
    assert overhead["records_dropped_or_rejected"] == 0
    ref = overhead["workloads"]["matmul"]
    assert ref["overhead_pct"] < REGRESSION_PCT, (
        f"telemetry costs {ref['overhead_pct']:.2f}% of a {ref['inference_ns'] / 1e3:.0f} us "
        f"inference (95% CI {ref['overhead_ci95_pct']})"
    )


@pytest.mark.xfail(reason="4 metrics cost 1-2.5 us per inference on the x86_64 VM",
                   strict=False)
def test_inference_loop_overhead_meets_the_target(overhead: dict[str, Any]) -> None:
    ref = overhead["workloads"]["matmul"]
    assert ref["overhead_ci95_pct"][1] < TARGET_PCT, (
        f"telemetry costs {ref['overhead_pct']:.2f}% of a {ref['inference_ns'] / 1e3:.0f} us "
        f"inference (95% CI {ref['overhead_ci95_pct']}); the target is under {TARGET_PCT:g}%"
    )
