"""``edgetelemetry bench``: what telemetry costs on this machine, measured from the installed
package alone (also ``python -m edgetelemetry.bench``).

In one run: Python ``record()``, ``time()``, ``group.record()``, ``record_many()``, the C record
path (a loop in C), drain + aggregate, and snapshot + heartbeat build, each beside a baseline
measured in the same run; prometheus_client and OpenTelemetry when they are installed; and the
overhead of 4 metrics per inference on real inference loops (numpy, and ONNX Runtime when
installed), recorded with a group and the other ways, with a 95% confidence interval.  Progress
goes to
stderr, the table to stdout; ``--json`` writes every figure with the machine's description and
``--plot`` a PNG chart (matplotlib if installed, else a built-in PNG writer).

    edgetelemetry bench                      # about a minute
    edgetelemetry bench --quick              # about 10 s, for CI
    edgetelemetry bench --attached           # also through a shared recorder (the agent's)
    edgetelemetry bench --json out.json --plot out.png

Needs nothing beyond the package's own dependencies; numpy only for the inference loops.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from . import measure

__all__ = ["SCHEMA", "format_table", "main", "run"]

SCHEMA = "edgetelemetry-bench/1"


def run(
    *,
    quick: bool = False,
    inference: bool = True,
    peers: bool = True,
    note: str | None = None,
    progress: TextIO | None = sys.stderr,
    agent_interval: float | None = None,
    command: str = "edgetelemetry bench",
    blas_threads: int | None = 1,
    attached: bool = False,
) -> dict[str, Any]:
    """Every figure, as the JSON document ``--json`` writes; ``attached`` adds the record
    paths through a shared recorder (``bench/attached.py``)."""
    from . import inference as infer

    blas = infer.limit_blas_threads(blas_threads)
    settings = measure.QUICK if quick else measure.DEFAULT
    isettings = infer.QUICK if quick else infer.DEFAULT
    if agent_interval is not None:
        isettings = infer.InferenceSettings(isettings.seconds, isettings.block_s, agent_interval)
    # the inference loop: starting the agent, then one step per workload
    steps = 4 + (1 if peers else 0) + (1 + len(infer.WORKLOADS) if inference else 0) \
        + (1 if attached else 0)
    prog = measure.Progress(progress, steps, enabled=progress is not None)
    started = time.monotonic()
    info = measure.machine(note)
    emulated = " (emulated)" if info["emulated"] else ""
    prog.say(f"edgetelemetry {info['package_version']} on {info['cpu']}, {info['arch']}"
             f"{emulated}, {info['python']}, {'quick' if quick else 'full'} run")
    figures = measure.micro_figures(settings, prog, skip_peers=not peers)
    if attached:
        from .attached import attached_figures

        figures += attached_figures(settings, prog)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": info,
        "settings": {"quick": quick, "rounds": settings.rounds, "round_s": settings.round_s,
                     "blas_threads": blas, "attached": attached},
        "figures": {f.key: f.to_json() for f in figures},
    }
    if inference:
        result = infer.run_inference_overhead(isettings, prog)
        result["blas_threads"] = blas
        if info["emulated"] and "verdict" in result.get("target", {}):
            # an emulator's timings say nothing of the device
            result["target"].update(met=None, verdict="not judged under emulation")
        doc["inference"] = result
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    prog.say(f"done in {doc['elapsed_s']:g} s")
    return doc


# ---- the table ---------------------------------------------------------------------------------


def _ns(v: float) -> str:
    for scale, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "us")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g} ns"


def _signed_ns(v: float) -> str:
    return ("-" if v < 0 else "+") + _ns(abs(v))


def _comparison(key: str, f: dict[str, Any], figures: dict[str, Any]) -> str:
    if key == "window":
        share = f["core_share_at_interval"] * 100
        return f"{share:.2g}% of a core at 1 heartbeat / {f['heartbeat_interval_s']:g} s"
    if f.get("baseline") and f.get("ratio") is not None:
        base = figures[f["baseline"]]["label"].replace("baseline: ", "")
        ratio = f["ratio"]
        text = f"{ratio:.3g}x" if ratio >= 0.1 else f"1/{1 / ratio:.3g}"
        return f"{text} {base}"
    return ""


def format_table(doc: dict[str, Any]) -> str:
    """The human-readable report of a bench document."""
    m = doc["machine"]
    figures = doc["figures"]
    emulated = ", EMULATED (qemu-user): times are not the hardware's" if m.get("emulated") else ""
    lines = [
        (f"edgetelemetry {m['package_version']} bench: {m['cpu']} ({m['arch']}, {m['cores']} "
         f"cores{emulated}), {m['python']}" + (f"  [{m['note']}]" if m.get("note") else "")),
        (f"median of {doc['settings']['rounds']} rounds interleaved with the baselines; spread = "
         "half the interquartile range; ratio = median of per-round ratios"),
        "",
        f"{'figure':<44} {'median':>14} {'spread':>9}  compared with",
    ]
    for key, f in figures.items():
        if f.get("skipped"):
            lines.append(f"{f['label']:<44} {'skipped':>14}            {f['skipped']}")
            continue
        per = f["unit"].split("/")[1]
        med = f"{_ns(f['median'])}/{per}"
        spread = (f["p75"] - f["p25"]) / 2 / abs(f["median"]) * 100 if f["median"] else 0.0
        lines.append(f"{f['label']:<44} {med:>14} {'+-' + format(spread, '.1f') + '%':>9}  "
                     f"{_comparison(key, f, figures)}")
    inference = doc.get("inference")
    if inference:
        lines.append("")
        lines.extend(_inference_lines(inference))
    return "\n".join(lines)


def _inference_lines(inf: dict[str, Any]) -> list[str]:
    if inf.get("skipped"):
        return [f"inference loop: skipped, {inf['skipped']}"]
    hb = inf.get("heartbeats_received")
    lines = [
        (f"inference loop, {inf['metrics_per_inference']} metrics per inference, blocks with and "
         "without telemetry alternating A B B A, the same number of inferences on each side; "
         "recorded with a group (start() + record_since()) unless the row says otherwise"),
        f"agent {inf['agent']}" + (f"; {hb} heartbeats received" if hb is not None else ""),
        (f"numpy BLAS threads: {inf.get('blas_threads', 'library default')}; overhead = 10% "
         "trimmed mean over block pairs, 95% CI (Yuen); CPU = the inference thread's CPU time"),
        "",
        (f"{'model':<44} {'inference':>9} {'telemetry':>10} {'overhead, CPU [95% CI]':>25} "
         f"{'wall clock [95% CI]':>25} {'pairs':>6} {'inferences':>10}"),
    ]

    def ci(e: dict[str, Any]) -> str:
        lo, hi = e["overhead_ci95_pct"]
        return f"{e['overhead_pct']:+.2f}% [{lo:+.2f}, {hi:+.2f}]"

    for w in inf["workloads"].values():
        if w.get("skipped"):
            lines.append(f"{w['label']:<44} skipped: {w['skipped']}")
            continue
        lines.append(
            f"{w['label']:<44} {_ns(w['inference_ns']):>9} "
            f"{_signed_ns(w['telemetry_ns_per_inference']):>10} {ci(w):>25} "
            f"{ci(w['wall_clock']):>25} {w['pairs']:>6} {w['inferences_per_side']:>10,}"
        )
    t = inf.get("target") or {}
    verdict = t.get("verdict")
    if verdict is not None:
        head = (f"target: under {t['overhead_pct']:g}% for a ~{t['inference_us']:g} us "
                f"inference, {_ns(t['budget_ns'])} per inference: ")
        ci95 = (f"{_ns(t['telemetry_ns'])} per inference, CPU-time CI "
                f"[{_ns(t['lower_ci_ns'])}, {_ns(t['upper_ci_ns'])}]; "
                f"{t['upper_ci_pct']:+.2f}% at the upper end, of the "
                f"{_ns(t['measured_inference_ns'])} the matmul took while measured")
        if verdict == "met":
            lines.append(f"{head}met ({ci95})")
        elif verdict == "missed":
            lines.append(f"{head}NOT met ({ci95})")
        elif verdict == "inconclusive":
            lines.append(f"{head}inconclusive, the CI spans the budget ({ci95})")
        else:
            lines.append(f"{head}{verdict}")
    if inf.get("records_dropped_or_rejected"):
        lines.append(f"warning: {inf['records_dropped_or_rejected']} records dropped or rejected")
    return lines


# ---- the command ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgetelemetry bench",
        description="Measure what edgetelemetry costs on this machine, against in-process "
        "baselines and, when installed, prometheus_client and OpenTelemetry.",
    )
    p.add_argument("--quick", action="store_true", help="about 10 s instead of about a minute")
    p.add_argument("--json", metavar="PATH", help="write every figure and the machine as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG chart of the comparison")
    p.add_argument("--no-inference", action="store_true",
                   help="skip the inference-loop overhead measurement")
    p.add_argument("--attached", action="store_true",
                   help="also time record(v) and the C record path through a shared recorder "
                   "(the device agent's kind, made by the bench on tmpfs), against in-process")
    p.add_argument("--no-peers", action="store_true",
                   help="skip prometheus_client and OpenTelemetry even when installed")
    p.add_argument("--agent-interval", type=float, metavar="S",
                   help="heartbeat interval of the agent during the inference loops (1 s)")
    p.add_argument("--blas-threads", type=int, default=1, metavar="N",
                   help="threads for numpy's BLAS in the inference loops (1; 0 = the library's "
                   "default); an OPENBLAS_NUM_THREADS/OMP_NUM_THREADS already set wins")
    p.add_argument("--note", metavar="TEXT",
                   help="a label stored with the results (board, power mode, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments, 1 if writing a file failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.agent_interval is not None and not 1 <= args.agent_interval <= 3600:
        _parser().error("--agent-interval must be 1..3600 seconds")
    if args.blas_threads < 0:
        _parser().error("--blas-threads must be 0 (the library's default) or more")
    doc = run(
        quick=args.quick,
        inference=not args.no_inference,
        peers=not args.no_peers,
        note=args.note,
        progress=None if args.quiet else sys.stderr,
        agent_interval=args.agent_interval,
        command=" ".join(["edgetelemetry bench", *argv]),
        blas_threads=args.blas_threads or None,
        attached=args.attached,
    )
    print(format_table(doc), flush=True)
    try:
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            print(f"\nwrote {args.json}", file=sys.stderr)
        if args.plot:
            from .plot import plot

            how = plot(doc, args.plot)
            print(f"wrote {args.plot} ({how})", file=sys.stderr)
    except OSError as exc:
        print(f"edgetelemetry bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
