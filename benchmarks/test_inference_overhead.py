"""Telemetry's overhead on a real inference loop, measured in the same run (issue 6).

The loop the user would run, with and without telemetry: 4 metrics per inference, the
recorder's collector thread and the heartbeat agent sending every second to an in-process
endpoint.  The metrics are recorded three ways: with a group (``start()`` + ``record_since()``,
the recommended way: two calls per inference), with ``time()`` + 3 ``record()``, and with
``perf_counter_ns`` + 4 ``record()``.  Blocks of 2 ms alternate A B B A so drift lands on
both; the overhead is a 10% trimmed mean over block pairs of the inference thread's CPU time,
with Yuen's 95% CI.  The workloads: a numpy matmul sized to ~100 us on this machine, the
demo's two numpy models, and the demo MLP in ONNX Runtime when it is installed.

Gates (same-run ratios, as every gate here): every way of recording stays under 5% of the
~100 us inference (a lock, a syscall or an allocation on the record path would break it), the
matmul's sizing came out within 2x of 100 us (a sizing bug; the VM's phase alone moves one
size's time by up to 2x), the agent ran and nothing was dropped.

Issue 6's target (under 1% of a ~100 us inference: under 1 us per inference, the upper end
of the 95% CI included) is reported with its verdict, not asserted: it is an absolute cost,
and on the shared VM the same code measured 530-1160 ns per inference over a day, the upper
end while the VM was busy (a loaded hyperthread sibling evicts the same caches the telemetry
then misses in).  The matmul's own time moves even more (64-132 us for one size),
so the verdict is on the cost per inference, with the percentage of the moment beside it.

The same code is ``edgetelemetry bench``'s inference section, with a longer budget.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import report

from edgetelemetry.bench.inference import (
    BUDGET_NS,
    TARGET_PCT,
    TARGET_US,
    InferenceSettings,
    limit_blas_threads,
    run_inference_overhead,
)
from edgetelemetry.bench.measure import Progress

BLAS_THREADS = limit_blas_threads(1)  # before numpy is imported, if it is not yet
np = pytest.importorskip("numpy")

SETTINGS = InferenceSettings(
    seconds={"matmul": 10.0, "matmul-time": 4.0, "matmul-clock": 4.0, "mlp": 3.0, "conv": 3.0,
             "onnx": 3.0},
    block_s=0.002,
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
            sized=f"{w['sized_ns'] / 1e3:.1f} us" if "sized_ns" in w else "-",
            telemetry=f"{w['telemetry_ns_per_inference']:.0f} ns",
            blas_threads=BLAS_THREADS,
        )
    return result


def test_inference_loop_overhead_has_not_regressed(overhead: dict[str, Any]) -> None:
    assert overhead["records_dropped_or_rejected"] == 0
    assert overhead["agent_running"], overhead["agent"]
    ref = overhead["workloads"]["matmul"]
    # A sizing bug puts both the time the size was chosen at and its time in the measured
    # blocks far from the target; the VM's phase moves one of them by 2x within a run (a CI run
    # on a slow day: sized at 218.8 us, measured at 130.5 us).
    times_us = (ref["sized_ns"] / 1e3, ref["inference_ns"] / 1e3)
    assert any(TARGET_US / 2 <= t <= TARGET_US * 2 for t in times_us), times_us
    for key in ("matmul", "matmul-time", "matmul-clock"):
        w = overhead["workloads"][key]
        assert w["overhead_pct"] < REGRESSION_PCT, (
            f"{w['recording']}: {w['overhead_pct']:.2f}% of a {w['inference_ns'] / 1e3:.0f} us "
            f"inference (95% CI {w['overhead_ci95_pct']})"
        )
    target = overhead["target"]
    report("issue 6 target: telemetry per ~100 us inference, CI upper end",
           target["upper_ci_ns"], "ns", budget=f"{BUDGET_NS:.0f} ns ({TARGET_PCT:g}%)",
           verdict=target["verdict"],
           ci95=f"[{target['lower_ci_ns']:.0f}, {target['upper_ci_ns']:.0f}]",
           of_matmul_as_measured=f"{target['upper_ci_pct']:+.2f}%")
