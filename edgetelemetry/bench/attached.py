"""``edgetelemetry bench --attached``: what recording costs through a device agent's shared
recorder, next to the same calls into a recorder of the process's own, in the same rounds.

The bench makes its own segment (a file on tmpfs, ``/dev/shm`` when there is one) and plays the
agent's side itself (``SharedRecorder``: it drains between timed chunks, as the collector keeps
a ring drained); the figures are a producer's: ``record(v)`` and the C record path (a loop in C
through the ``et_api`` table), each against the in-process figure measured in the same rounds,
with the ratio (the issue's target: at most 1.1x).  A bench never touches the device's real
segment: its series would be sent as the device's telemetry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from .measure import C_LOOP, Figure, Progress, Settings, Timed, interleave

__all__ = ["attached_figures"]

RING, THREADS = 1 << 14, 2


def _scratch_dir() -> str:
    """A private directory on tmpfs (where a device agent's segment lives), else in TMPDIR."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="et-bench-attached-", dir=base)


def attached_figures(settings: Settings, progress: Progress) -> list[Figure]:
    """``attached.record`` and ``attached.c_record``, each with its in-process baseline."""
    from ..recording import Recorder, SharedRecorder
    from .cloops import CLoops

    progress.step("record(v) and the C record path attached to a shared recorder, against "
                  "in-process")
    chunk = 1 << 13  # records between drains: half a ring, warm and never full
    scratch = _scratch_dir()
    own = Recorder(ring_capacity=RING, max_threads=THREADS, collector_period=None)
    agent = SharedRecorder.create(os.path.join(scratch, "recorder"), ring_capacity=RING,
                                  max_threads=THREADS, collector_period=None)
    producer = None
    try:
        producer = Recorder.attach(os.path.join(scratch, "recorder"))
        env: dict[str, Any] = {}
        for side, rec, drain in (("own", own, own.drain), ("attached", producer, agent.drain)):
            handle = rec.histogram("latency", unit="ms", model="bench-model", version="1")
            loops = CLoops(rec)
            env[f"{side}_h"] = handle
            env[f"{side}_lib"] = loops.lib
            env[f"{side}_rec"] = loops.rec
            env[f"{side}_sid"] = handle.series_id
            env[f"{side}_drain"] = drain
        timed = {}
        for side in ("own", "attached"):
            drain = env[f"{side}_drain"]
            timed[f"{side}.record"] = Timed(f"{side}_h.record(3.2)", env, chunk=chunk,
                                             prepare=drain)
            timed[f"{side}.c_record"] = Timed(
                f"{side}_lib.bench_record_loop({side}_rec, {side}_sid, 3.2, {C_LOOP})", env,
                chunk=chunk // C_LOOP, prepare=drain, per=C_LOOP)
        s = interleave(timed, settings)
        figures = []
        for kind, label in (("record", "record(v)"), ("c_record", "C et_record loop")):
            base = Figure(f"baseline.own_{kind}", f"baseline: {label}, own recorder", "call",
                          "baseline", s[f"own.{kind}"], number=timed[f"own.{kind}"].number)
            fig = Figure(f"attached.{kind}", f"{label}, attached", "call", "edgetelemetry",
                         s[f"attached.{kind}"], baseline=base.key,
                         number=timed[f"attached.{kind}"].number,
                         extra={"target_ratio": 1.1})
            fig.ratios = [a / b for a, b in zip(fig.samples, base.samples)]
            figures += [base, fig]
        snap = agent.snapshot()
        lost = sum(sum(x.dropped.values()) for x in snap.series)
        figures[-1].extra["dropped"] = lost
        if lost:
            progress.say(f"warning: {lost} records dropped while timing the attached paths")
        return figures
    finally:
        if producer is not None:
            producer.close()
        agent.close()
        own.close()
        shutil.rmtree(scratch, ignore_errors=True)
