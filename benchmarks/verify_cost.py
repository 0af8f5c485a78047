"""CPU of one SigV4 ``verify`` on a typical signed heartbeat: the endpoint's verifier against the
one it replaced (botocore's signer objects built per request), measured in the same run.

    python benchmarks/verify_cost.py [--number 2000] [--repeat 7]

The former verifier is ``edgetelemetry/server/sigv4.py`` as of ``BEFORE`` in this repository's
history (git and the history are needed).  Prints one JSON object: the best ns per call of each,
interleaved so that a busy machine slows both alike, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import old_source
from endpoint_load import Device, heartbeat_body, sign

from edgetelemetry.server import sigv4

__all__ = ["BEFORE", "load_before", "measure"]

# main before the verifier built the expected signature itself
BEFORE = "d75702e25d8beba2472e90da8c52bcbe8c418616"


def load_before() -> ModuleType:
    """The former ``edgetelemetry.server.sigv4``, as a sibling module of the current one."""
    return old_source.load(BEFORE, "edgetelemetry/server/sigv4.py",
                           "edgetelemetry.server._sigv4_before")


def measure(number: int = 2000, repeat: int = 7) -> dict[str, Any]:
    device = Device("dev-00001", "fleet-1", "AKIDVERIFY0001", "verify-secret-0001")
    body = heartbeat_body(device, 0, 1, time.time())
    pairs = [(k.lower(), v) for k, v in sign("http://127.0.0.1:9", device, body).items()]
    pairs.append(("content-length", str(len(body))))
    target = "/SendHeartbeat"
    before = load_before()
    verifiers = {
        "before": before.SigV4Verifier(
            {device.key: before.Credential(device.key, device.secret)}, "us-east-1", time.time
        ),
        "after": sigv4.SigV4Verifier(
            {device.key: sigv4.Credential(device.key, device.secret)}, "us-east-1", time.time
        ),
    }
    best = {name: float("inf") for name in verifiers}
    for _ in range(repeat):
        for name, verifier in verifiers.items():
            assert verifier.verify("POST", target, pairs, body).access_key_id == device.key
            seconds = timeit.timeit(
                lambda v=verifier: v.verify("POST", target, pairs, body), number=number
            )
            best[name] = min(best[name], seconds / number * 1e9)
    return {
        "verify_ns_before": round(best["before"]),
        "verify_ns_after": round(best["after"]),
        "ratio_after_to_before": round(best["after"] / best["before"], 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.number, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
