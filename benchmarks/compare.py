"""Compare two saved benchmark runs; a regression shows as a ratio, and fails the command.

    python benchmarks/compare.py OLD.json NEW.json [--threshold 1.25] [--by ratio]

Reads any of:
  - ``edgetelemetry bench --json`` documents (schema ``edgetelemetry-bench/1``),
  - ``.benchmarks/summary.json`` written by ``python -m pytest benchmarks``,
  - pytest-benchmark's saved runs (``--benchmark-save`` / ``--benchmark-autosave``).

For every figure in both runs it prints old, new and the slowdown: new/old for times, old/new
for rates, so above 1 is always worse.  It exits 1 when any slowdown exceeds ``--threshold``,
0 otherwise (2 for unreadable input).  ``--by ratio`` compares the bench's same-run ratios
(figure / its baseline) instead of absolute times: those carry over between machines and
loads, so two CI runs on different runners still compare.  Inference-loop overheads (bench
documents) are compared in percentage points, and gate only with ``--max-overhead-increase``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Figure", "compare", "load", "main"]


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    higher_is_better: bool = False
    gated: bool = True  # False for derived, noisy estimates: shown, never fail the run


@dataclass(frozen=True)
class Run:
    path: str
    kind: str
    machine: dict[str, Any]
    figures: dict[str, Figure]
    overheads: dict[str, float]  # inference-loop overhead, %


class FormatError(ValueError):
    pass


def _is_rate(unit: str) -> bool:
    return "/s" in unit or unit.endswith("ps")


def load(path: str, by: str = "median") -> Run:
    """A saved run of any of the three formats."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: not a JSON object")
    figures: dict[str, Figure] = {}
    overheads: dict[str, float] = {}
    if str(doc.get("schema", "")).startswith("edgetelemetry-bench/"):
        kind = "edgetelemetry bench"
        for key, f in doc.get("figures", {}).items():
            if f.get("skipped"):
                continue
            if by == "ratio":
                if f.get("ratio") is None:
                    continue
                # a peer's ratio is peer / record(): higher means record() got relatively faster
                figures[key] = Figure(f"{f['label']} / {f['baseline']}", float(f["ratio"]), "x",
                                      f.get("kind") == "peer", gated=True)
            else:
                figures[key] = Figure(f["label"], float(f["median"]), f["unit"],
                                      f.get("better") == "higher",
                                      gated=not f.get("estimate"))
        for key, w in ((doc.get("inference") or {}).get("workloads") or {}).items():
            if not w.get("skipped"):
                overheads[key] = float(w["overhead_pct"])
        machine = doc.get("machine", {})
    elif isinstance(doc.get("results"), dict):
        kind = "pytest benchmarks summary"
        if by == "ratio":
            raise FormatError(f"{path}: --by ratio needs edgetelemetry bench documents")
        for name, r in doc["results"].items():
            unit = str(r.get("unit", ""))
            if unit == "%":  # an overhead near zero: compared in points, not as a ratio
                overheads[name] = float(r["value"])
                continue
            figures[name] = Figure(name, float(r["value"]), unit, _is_rate(unit))
        machine = doc.get("machine", {})
    elif isinstance(doc.get("benchmarks"), list):
        kind = "pytest-benchmark"
        if by == "ratio":
            raise FormatError(f"{path}: --by ratio needs edgetelemetry bench documents")
        for b in doc["benchmarks"]:
            figures[b.get("fullname") or b["name"]] = Figure(
                b["name"], float(b["stats"]["median"]) * 1e9, "ns"
            )
        info = doc.get("machine_info", {})
        machine = {
            "cpu": (info.get("cpu") or {}).get("brand_raw", info.get("processor", "")),
            "arch": info.get("machine", ""),
            "python": info.get("python_version", ""),
        }
    else:
        raise FormatError(
            f"{path}: not an edgetelemetry bench, summary.json or pytest-benchmark run"
        )
    return Run(path, kind, machine, figures, overheads)


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    old: float | None
    new: float | None
    unit: str
    slowdown: float | None  # > 1 is worse
    verdict: str


def compare(old: Run, new: Run, threshold: float) -> list[Row]:
    rows = []
    for key in list(old.figures) + [k for k in new.figures if k not in old.figures]:
        a, b = old.figures.get(key), new.figures.get(key)
        if a is None or b is None:
            f = a or b
            assert f is not None
            rows.append(Row(key, f.name, a.value if a else None, b.value if b else None, f.unit,
                            None,
                            "only in " + ("old" if b is None else "new")))
            continue
        if a.value <= 0 or b.value <= 0:
            rows.append(Row(key, b.name, a.value, b.value, b.unit, None, "not positive"))
            continue
        slowdown = a.value / b.value if b.higher_is_better else b.value / a.value
        verdict = ("REGRESSED" if slowdown > threshold
                   else "improved" if slowdown < 1 / threshold else "ok")
        if not b.gated and verdict != "ok":
            verdict += " (estimate, not gated)"
        rows.append(Row(key, b.name, a.value, b.value, b.unit, slowdown, verdict))
    return rows


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--threshold", type=float, default=1.25,
                   help="fail when a figure is this many times worse (1.25)")
    p.add_argument("--by", choices=("median", "ratio"), default="median",
                   help="compare absolute medians (default) or same-run ratios to baselines")
    p.add_argument("--max-overhead-increase", type=float, metavar="POINTS",
                   help="also fail when an inference-loop overhead rose by more than POINTS "
                   "percentage points")
    args = p.parse_args(argv)
    if args.threshold <= 1:
        p.error("--threshold must be above 1")
    try:
        old, new = load(args.old, args.by), load(args.new, args.by)
    except FormatError as exc:
        print(f"compare.py: {exc}", file=sys.stderr)
        return 2
    for label, run in (("old", old), ("new", new)):
        m = run.machine
        print(f"{label}: {run.path} ({run.kind}) {m.get('cpu', '?')}, {m.get('arch', '?')}, "
              f"{m.get('python', '?')}" + (" EMULATED" if m.get("emulated") else ""))
    keys = ("cpu", "arch", "python")
    if any(old.machine.get(k) != new.machine.get(k) for k in keys) and args.by == "median":
        print("note: the machines differ; absolute times compare poorly (try --by ratio)")
    rows = compare(old, new, args.threshold)
    width = max([len(r.name) for r in rows] + [6])
    print(f"\n{'figure':<{width}} {'old':>11} {'new':>11} {'unit':<10} {'slowdown':>9}  verdict")
    for r in rows:
        slow = "-" if r.slowdown is None else f"{r.slowdown:.3f}x"
        print(f"{r.name:<{width}} {_fmt(r.old):>11} {_fmt(r.new):>11} {r.unit:<10} {slow:>9}  "
              f"{r.verdict}")
    failed = [r for r in rows if r.verdict == "REGRESSED"]
    both = [k for k in old.overheads if k in new.overheads]
    if both:
        print(f"\n{'inference-loop overhead':<{width}} {'old %':>11} {'new %':>11} "
              f"{'':<10} {'points':>9}")
        for k in both:
            d = new.overheads[k] - old.overheads[k]
            bad = args.max_overhead_increase is not None and d > args.max_overhead_increase
            print(f"{k:<{width}} {old.overheads[k]:>11.3f} {new.overheads[k]:>11.3f} "
                  f"{'':<10} {d:>+9.3f}  {'REGRESSED' if bad else ''}")
            if bad:
                failed.append(Row(k, k, old.overheads[k], new.overheads[k], "%", None,
                                  "REGRESSED"))
    compared = sum(1 for r in rows if r.slowdown is not None)
    print(f"\n{compared} figures compared (threshold {args.threshold:g}x), {len(failed)} "
          "regressed" + (f": {', '.join(r.name for r in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
