"""What checking one ``SendHeartbeat`` request costs, against an older validator in the same run.

    python benchmarks/validate_cost.py [--baseline REV] [--repeat 3]

The older ``edgetelemetry/heartbeat/validate.py`` is read from git (``--baseline``, default the
commit before the validator was compiled) and loaded beside the current one, so both check the
same requests in one process on the same machine load.  Requests are a typical agent heartbeat
with 11 metrics and a real one with 44, as the device checks them (``datetime`` timestamps) and
as the endpoint checks them (decoded JSON: epoch seconds).  The validator remembers strings that
passed, so a fleet's repeated names are cheap; ``endpoint-unseen`` is its worst case, where every
request brings names never seen (unique device, metric names and dimensions).  Prints
microseconds per request and the ratio new / old (below 1 is faster); absolute times are noisy on
a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
import types
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import old_source

from edgetelemetry.heartbeat import validate as current

# main just before the validator compiled each shape into a checker
BASELINE = "d75702e25d8beba2472e90da8c52bcbe8c418616"
_STATS = ("count", "sum", "min", "max", "mean", "p50", "p90", "p95", "p99")


def load_baseline(rev: str) -> types.ModuleType:
    """``validate.py`` as it was at ``rev``, imported as a sibling of the current module."""
    return old_source.load(rev, "edgetelemetry/heartbeat/validate.py",
                           "edgetelemetry.heartbeat._validate_baseline")


def heartbeat(model_metrics: int, when: Any, unique: str = "") -> dict[str, Any]:
    """An agent heartbeat: two agent metrics and ``model_metrics`` latency statistics spread
    over as many dimensions as it takes (nine statistics each); ``unique`` goes into every
    device name, metric name and dimension."""
    metrics = [
        {"MetricName": f"latency{unique}-ms-{_STATS[i % 9]}", "Value": 5.0 + i,
         "Timestamp": when, "Dimension": f"camera{unique}-{i // 9}/0/1"}
        for i in range(model_metrics)
    ]
    return {
        "AgentVersion": "1.0",
        "DeviceName": f"jetson-000123{unique}",
        "DeviceFleetName": "line-3",
        "AgentMetrics": [
            {"MetricName": "spool-bytes", "Value": 4096.0, "Timestamp": when, "Dimension": "all"},
            {"MetricName": "heartbeat-retries", "Value": 0.0, "Timestamp": when,
             "Dimension": "all"},
        ],
        "Models": [{"ModelName": "resnet18", "ModelVersion": "1.0", "LatestInference": when,
                    "ModelMetrics": metrics}],
    }


def us_per_call(check: Callable[[Any], None], requests: list[Any], repeat: int) -> float:
    """Best of ``repeat`` passes over ``requests``, per request."""

    def check_all() -> None:
        for request in requests:
            check(request)

    timer = timeit.Timer(check_all)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number / len(requests) * 1e6


def measure(old: types.ModuleType, totals: Sequence[int] = (11, 44),
            repeat: int = 3) -> list[dict[str, Any]]:
    """One row per request size and side: microseconds per request, old and new."""
    when = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
    epoch = int(when.timestamp())
    rows = []
    for total in totals:
        device = [heartbeat(total - 2, when)]
        endpoint = [json.loads(json.dumps(heartbeat(total - 2, epoch)))]
        # more requests than the validator remembers strings of a shape, cycled: never a hit
        unseen = [json.loads(json.dumps(heartbeat(total - 2, epoch, f"-{k}")))
                  for k in range(3 * current._PASSED_STRINGS_KEPT // 2)]
        for side, requests in (("device", device), ("endpoint", endpoint),
                               ("endpoint-unseen", unseen)):
            # both must accept before their speed means anything
            for request in requests[:2]:
                old.validate_send_heartbeat(request)
                current.validate_send_heartbeat(request)
            # alternate so a burst of load elsewhere hits both
            before = after = float("inf")
            for _ in range(3):
                before = min(before, us_per_call(old.validate_send_heartbeat, requests, repeat))
                after = min(after, us_per_call(current.validate_send_heartbeat, requests, repeat))
            rows.append({"metrics": total, "side": side, "old_us": round(before, 2),
                         "new_us": round(after, 2), "new_over_old": round(after / before, 3)})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default=BASELINE, help="git revision of the old validator")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    for row in measure(load_baseline(args.baseline), repeat=args.repeat):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
