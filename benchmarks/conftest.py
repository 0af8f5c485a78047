"""Shared measurement helpers for the benchmark suite.

Gates compare figures measured in the same run (a ratio to a baseline or a peer), never an
absolute time: these machines are shared and noisy.  Absolute times are printed at the end of
the session and written to .benchmarks/summary.json, which the README's table comes from.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import threading
import time
import timeit
from typing import Any, Callable

import pytest

RESULTS: dict[str, dict[str, Any]] = {}


def ns_per_call(stmt: str, env: dict[str, Any], number: int, repeat: int = 7,
                setup: Callable[[], None] | None = None) -> float:
    """The best of ``repeat`` timings of ``number`` runs of ``stmt``, in ns per run."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        t = timeit.timeit(stmt, globals=env, number=number)
        best = min(best, t / number * 1e9)
    return best


def run_threads(threads: list[threading.Thread]) -> int:
    """Start ``threads``, wait for all; the wall time in ns."""
    t0 = time.perf_counter_ns()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter_ns() - t0


def kept_and_dropped(snap: Any) -> tuple[int, int]:
    """A snapshot's values counted and dropped, over its series."""
    return (sum(s.count for s in snap.series),
            sum(sum(s.dropped.values()) for s in snap.series))


def report(name: str, ns: float, unit: str = "ns/call", **extra: Any) -> None:
    RESULTS[name] = {"value": round(ns, 2), "unit": unit, **extra}


def machine() -> dict[str, str]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
    }


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    m = machine()
    tr.write_sep("-", f"edgetelemetry benchmarks on {m['cpu']} ({m['arch']}, {m['cores']} "
                      f"cores, Python {m['python']})")
    for name, r in RESULTS.items():
        extra = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("value", "unit"))
        tr.write_line(f"{name:<44} {r['value']:>12,.2f} {r['unit']:<10} {extra}")
    out = pathlib.Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"machine": m, "results": RESULTS}, indent=1))


@pytest.fixture
def results() -> dict[str, dict[str, Any]]:
    return RESULTS
