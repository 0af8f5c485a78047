"""Import smoke test for an installed wheel, run by the target's own interpreter.

scripts/build-wheels.sh runs it under qemu-user (aarch64, armv7l) or the target root's loader
(x86_64) after `pip install`ing the wheel.  It prints what it ran on, so the log shows the
wheel really ran there, and fails unless:
  - edgetelemetry is imported from the installed wheel, not from a source tree,
  - its extensions are the abi3 builds and match this interpreter's machine,
  - a recorder records from several threads and accounts for every value exactly,
  - the fast-call paths (group.record / record_since, the timer's __exit__) work on this
    interpreter: METH_FASTCALL is in the limited API only from 3.10, the wheel is cp39-abi3,
  - every module of the package imports on this interpreter (a runtime `X | None` outside an
    annotation needs 3.10: the endpoint's fleet view once had one).
Python 3.9 syntax: it runs on the oldest CPython the wheel supports.
"""

import os
import platform
import sys
import threading


def main() -> int:
    import edgetelemetry as et
    from edgetelemetry._native import _core, _fastpath
    from edgetelemetry.bench import _loops

    where = os.path.dirname(et.__file__)
    libc, libc_version = platform.libc_ver()
    print(
        f"smoke: {platform.machine()} CPython {platform.python_version()} "
        f"{libc} {libc_version}: edgetelemetry {et.__version__} from {where}"
    )
    problems = []
    if "site-packages" not in where:
        problems.append(f"imported from {where}, not from an installed wheel")
    for module in (_core, _fastpath, _loops):
        if not module.__file__.endswith(".abi3.so"):
            problems.append(f"{module.__file__} is not an abi3 extension")

    # default rings (2048): the threads fill them and drain them themselves (issue 11), so
    # the full-ring path runs on each architecture, and nothing may be dropped
    threads, per_thread = 4, 20000
    with et.Recorder(max_threads=threads, collector_period=0.001) as rec:
        handles = [
            rec.histogram(f"metric-{i}", unit="ms", model="smoke", version="1")
            for i in range(threads)
        ]

        def produce(h: et.Histogram) -> None:
            for i in range(per_thread):
                h.record(float(i % 1000))

        workers = [threading.Thread(target=produce, args=(h,)) for h in handles]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        snap = rec.snapshot()
    if len(snap.series) != threads:
        problems.append(f"{len(snap.series)} series in the window, not {threads}")
    for s in snap.series:
        dropped = sum(s.dropped.values())
        if s.count != per_thread or dropped:
            problems.append(f"{s.metric}: {s.count} kept + {dropped} dropped != {per_thread}")
        if dropped == 0 and (s.min, s.max, s.sum) != (0.0, 999.0, 20.0 * 499500):
            problems.append(f"{s.metric}: min/max/sum {s.min}/{s.max}/{s.sum}")
        p99 = s.quantile(0.99)
        if dropped == 0 and not 980 <= p99 <= 1000:
            problems.append(f"{s.metric}: p99 {p99}")
    problems.extend(_fast_calls(et))
    problems.extend(_every_module_imports(et))
    for p in problems:
        print(f"smoke: FAIL {p}")
    if not problems:
        print(f"smoke: ok, {threads} threads x {per_thread} records accounted for exactly")
    return 1 if problems else 0


def _fast_calls(et) -> list:
    problems = []
    with et.Recorder(collector_period=None) as rec:
        lat = rec.histogram("latency", unit="us", model="smoke", version="1")
        conf = rec.histogram("confidence", model="smoke", version="1")
        group = rec.group(lat, conf)
        start = group.start()
        group.record_since(start, 0.5)
        group.record(2.0, 0.25)
        group.record(3.0, "not a number")  # counted as rejected, never raised
        with lat.time():
            pass
        try:
            group.record(1.0)
            problems.append("group.record with one value too few did not raise")
        except TypeError:
            pass
        series = {s.metric: s for s in rec.snapshot().series}
    if series["latency"].count != 4 or series["confidence"].count != 2:
        problems.append(f"group: counts {series['latency'].count}, {series['confidence'].count}")
    if series["confidence"].sum != 0.75 or series["confidence"].rejected != {"type": 1}:
        problems.append(f"group: confidence {series['confidence'].sum}, "
                        f"{series['confidence'].rejected}")
    if not problems:
        print("smoke: ok, group.record, record_since and time() (fast calls)")
    return problems


def _every_module_imports(et) -> list:
    import importlib
    import pkgutil

    problems = []
    names = [m.name for m in pkgutil.walk_packages(et.__path__, "edgetelemetry.",
                                                   onerror=lambda name: None)]
    for name in names:
        if name.endswith("__main__") or name.rpartition(".")[2].startswith("build_"):
            continue  # the command's entry point; the cffi build scripts (need cffi itself)
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure to import is the finding
            problems.append(f"import {name}: {type(exc).__name__}: {exc}")
    if not problems:
        print(f"smoke: ok, all {len(names)} modules import")
    return problems


if __name__ == "__main__":
    sys.exit(main())
