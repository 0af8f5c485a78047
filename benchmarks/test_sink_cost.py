"""What one window costs the device per sink, OTLP against SendHeartbeat, in the same run.

The same windows (a recorder with the default 36 buckets an octave, four series of a few
thousand lognormal values each, as an inference loop makes them) go out both ways, interleaved
round by round so drift lands on both:

- **encode**: the pure builders alone (``build_heartbeat`` + ``split_heartbeat`` + botocore's
  JSON body; ``build_metrics_request`` + protobuf + gzip);
- **send**: the whole client side of a delivery to real loopback servers (a ``Sender`` signing
  and posting to an ``EndpointServer``; an ``OtlpSink`` posting to the test receiver), CPU time
  of the sending thread only (``time.thread_time``), so the servers' work is not counted.

Bytes are the request bodies.  Reported: CPU per window and bytes per window for each, and
their ratios.  Gated: the bytes ratio (deterministic for these windows), and the send CPU ratio
with a wide margin (the median of per-round ratios, which moved by under 10% between rounds
here; absolute CPU times are reported, never gated).
"""

from __future__ import annotations

import gzip
import json
import random
import statistics
import sys
import time
from pathlib import Path

from conftest import report

from edgetelemetry import Recorder, Snapshot
from edgetelemetry.agent.otlp_sink import OtlpSink
from edgetelemetry.agent.sender import Sender
from edgetelemetry.heartbeat import DeviceIdentity, request_bytes, window_metrics
from edgetelemetry.heartbeat.record import record_requests
from edgetelemetry.otlp import OtlpIdentity, build_metrics_request
from edgetelemetry.server import EndpointServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from otlp_receiver import OtlpReceiver  # noqa: E402

DEVICE, FLEET = "cam-bench", "fleet-bench"
SPOOL_ID = "5b0c" * 8
AKID, SECRET = "AKIDSINKBENCH001", "sink/bench+secret"
WINDOWS = 12
ROUNDS = 5


def make_windows() -> list[Snapshot]:
    rng = random.Random(7)
    out = []
    with Recorder(collector_period=None) as rec:
        series = [rec.histogram("latency", unit="ms", model="resnet18", version="1.0"),
                  rec.histogram("preprocess", unit="ms", model="resnet18", version="1.0"),
                  rec.histogram("confidence", model="resnet18", version="1.0"),
                  rec.histogram("latency", unit="ms", model="yolov8n", version="2.1")]
        for _ in range(WINDOWS):
            for i, h in enumerate(series):
                h.record_many([rng.lognormvariate(1.0 + i, 0.4) for _ in range(3000)])
            out.append(rec.snapshot())
    return out


def heartbeat_requests(snap: Snapshot, seq: int) -> list[dict[str, object]]:
    """A window's requests as the agent sends them: cut from its spool record (with the
    record's spool-seq), no agent figures filled in."""
    parts = record_requests(snap, DeviceIdentity(DEVICE, FLEET), spool_seq=seq,
                            spool_id=SPOOL_ID)
    return list(parts.filled(None, {}))


def lane_metrics(snap: Snapshot, seq: int) -> dict[str, float]:
    """What an OTLP lane sends beside a window (agent/lanes.py): its seq and the window's."""
    return {"spool-seq": float(seq), **window_metrics(snap)}


def otlp_body(snap: Snapshot, seq: int) -> bytes:
    request = build_metrics_request([snap], OtlpIdentity(DEVICE, FLEET),
                                    agent_metrics=lane_metrics(snap, seq))
    return gzip.compress(request.SerializeToString(), compresslevel=6, mtime=0)


def test_otlp_sink_bytes_and_cpu_per_window_against_sendheartbeat(tmp_path: Path) -> None:
    windows = make_windows()
    # bytes: deterministic for these windows
    hb_bytes = [sum(request_bytes(r) for r in heartbeat_requests(s, i)) for i, s in
                enumerate(windows)]
    otlp_raw = [len(build_metrics_request([s], OtlpIdentity(DEVICE, FLEET),
                                          agent_metrics=lane_metrics(s, i))
                    .SerializeToString()) for i, s in enumerate(windows)]
    otlp_gz = [len(otlp_body(s, i)) for i, s in enumerate(windows)]
    hb_gz = [sum(len(gzip.compress(json.dumps(r, default=str).encode(), mtime=0))
                 for r in heartbeat_requests(s, i)) for i, s in enumerate(windows)]

    server = EndpointServer(None, credentials={AKID: SECRET})
    server.store.register_fleet(FLEET)
    server.store.register_devices(FLEET, [DEVICE])
    server.start()
    receiver = OtlpReceiver().start()
    sender = Sender(server.url, "us-east-1", credentials=_creds(), max_attempts=1)
    sink = OtlpSink(receiver.url, OtlpIdentity(DEVICE, FLEET), max_attempts=1)
    encode = {"heartbeat": [], "otlp": []}  # type: dict[str, list[float]]
    send = {"heartbeat": [], "otlp": []}  # type: dict[str, list[float]]
    try:
        for r in range(ROUNDS):
            order = ("heartbeat", "otlp") if r % 2 == 0 else ("otlp", "heartbeat")
            for kind in order:
                t0 = time.thread_time()
                for i, snap in enumerate(windows):
                    if kind == "heartbeat":
                        heartbeat_requests(snap, i)
                    else:
                        otlp_body(snap, i)
                encode[kind].append((time.thread_time() - t0) / len(windows))
                t0 = time.thread_time()
                for i, snap in enumerate(windows):
                    if kind == "heartbeat":
                        for request in heartbeat_requests(snap, i):
                            assert sender.send(request).ok
                    else:
                        assert sink.send(otlp_body(snap, i)).ok
                send[kind].append((time.thread_time() - t0) / len(windows))
    finally:
        sink.close()
        sender.close()
        receiver.stop()
        server.stop()
    assert len(receiver.received) == ROUNDS * WINDOWS

    def med(xs: list[float]) -> float:
        return statistics.median(xs) * 1e6  # microseconds

    for kind in ("heartbeat", "otlp"):
        report(f"sink {kind}: encode CPU per window", med(encode[kind]), unit="us")
        report(f"sink {kind}: send CPU per window", med(send[kind]), unit="us",
               note="client thread: build, sign, HTTP")
    report("sink heartbeat: bytes per window", statistics.mean(hb_bytes), unit="B",
           gzip=round(statistics.mean(hb_gz)))
    report("sink otlp: bytes per window", statistics.mean(otlp_gz), unit="B",
           uncompressed=round(statistics.mean(otlp_raw)))
    cpu_ratio = [o / h for o, h in zip(send["otlp"], send["heartbeat"])]
    report("sink otlp/heartbeat: send CPU ratio", statistics.median(cpu_ratio), unit="x",
           spread=round((max(cpu_ratio) - min(cpu_ratio)) / statistics.median(cpu_ratio), 2))
    bytes_ratio = statistics.mean(otlp_gz) / statistics.mean(hb_bytes)
    report("sink otlp/heartbeat: bytes ratio", bytes_ratio, unit="x")
    # the gate: an OTLP window (exponential histogram, gzip) is smaller on the wire than the
    # same window as SendHeartbeat's statistics, although it carries every bucket
    assert bytes_ratio < 1.0, (statistics.mean(otlp_gz), statistics.mean(hb_bytes))
    # and cheaper to send (no SigV4, no botocore): measured ~0.2x; gated at 0.6x
    assert statistics.median(cpu_ratio) < 0.6, cpu_ratio


def _creds() -> object:
    from botocore.credentials import Credentials

    return Credentials(AKID, SECRET)
