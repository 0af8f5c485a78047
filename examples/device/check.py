"""The device scenario's bookkeeping (run.sh calls it).

    python check.py progress FILE
        "RECORDED BUSY" from the C producer's progress record (producer.c).
    python check.py verify STORE DEVICE REPORT... [--wait SECONDS]
        What the producers say they recorded (REPORT files of "MODEL VALUES" lines) against
        what the endpoint stored for DEVICE in STORE (its SQLite file): the sum of every
        "<metric>-count" point per model.  Waits up to SECONDS for the counts to arrive, then
        prints "delivered N of M records, lost L, duplicated D" (a model short counts as lost,
        one over as duplicated, per model) and exits 0 only for all delivered exactly once,
        with nothing rejected or dropped.
"""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType


def progress(path: str) -> str:
    recorded, busy, _pid = struct.unpack("=QII", Path(path).read_bytes()[:16])
    return f"{recorded} {busy}"


def expected(reports: list[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for report in reports:
        for line in Path(report).read_text().split("\n"):
            if line.strip():
                model, values = line.split()
                out[model] += int(values)
    return out


def _codec() -> ModuleType:
    """The store's point codec, from this checkout: it is pure Python with no imports of the
    package, so check.py also runs in a python without edgetelemetry (the host's, for an
    emulated scenario)."""
    path = Path(__file__).resolve().parents[2] / "edgetelemetry" / "server" / "store" / "codec.py"
    spec = importlib.util.spec_from_file_location("et_store_codec", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stored(store: str, device: str) -> tuple[Counter[str], float]:
    """Per model, the values the endpoint stored; and the rejected + dropped total.  The
    store's schema is docs/store.md's: a heartbeat's points in one blob, its series numbered
    per device."""
    counts: Counter[str] = Counter()
    bad = 0.0
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot: every heartbeat's series are there
        series = {number: (model, metric) for number, model, metric in conn.execute(
            "SELECT s.number, s.model, s.metric FROM series s JOIN devices d "
            "ON d.id = s.device_id WHERE d.name = ? AND s.agent = 0", (device,))}
        beats = conn.execute(
            "SELECT h.ts, h.points FROM heartbeats h JOIN devices d ON d.id = h.device_id "
            "WHERE d.name = ?", (device,)).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return counts, bad
    finally:
        conn.close()
    codec = _codec()
    for ts, blob in beats:
        for number, value, _ in codec.decode_points(blob, ts, series):
            model, name = series[number]
            if name.endswith("-count"):
                counts[model] += int(value or 0)
            elif name.endswith(("-rejected", "-dropped")):
                bad += value or 0
    return counts, bad


def verify(store: str, device: str, reports: list[str], wait: float) -> int:
    want = expected(reports)
    deadline = time.monotonic() + wait
    while True:
        got, bad = stored(store, device)
        if got == want or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    total = sum(want.values())
    lost = sum(max(0, want[m] - got[m]) for m in want)
    duplicated = sum(max(0, got[m] - want[m]) for m in got)
    delivered = sum(min(want[m], got[m]) for m in want)
    print(f"delivered {delivered} of {total} records, lost {lost}, duplicated {duplicated}")
    for model in sorted(set(want) | set(got)):
        if want[model] != got[model]:
            print(f"  {model}: recorded {want[model]}, stored {got[model]}", file=sys.stderr)
    if bad:
        print(f"  {bad:g} values rejected or dropped", file=sys.stderr)
    return 0 if got == want and total and not bad else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("progress")
    pr.add_argument("file")
    ve = sub.add_parser("verify")
    ve.add_argument("store")
    ve.add_argument("device")
    ve.add_argument("reports", nargs="+")
    ve.add_argument("--wait", type=float, default=0.0)
    args = p.parse_args()
    if args.command == "progress":
        print(progress(args.file))
        return 0
    return verify(args.store, args.device, args.reports, args.wait)


if __name__ == "__main__":
    sys.exit(main())
