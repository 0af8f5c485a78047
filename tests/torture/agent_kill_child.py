"""Child of test_agent_kill.py: a real agent process, killed with SIGKILL by its parent.

Usage: ``agent_kill_child.py MODE SPOOL_DIR LOG SEED`` (endpoint, device and keys come from
``EDGETELEMETRY_*`` variables, the agent's own configuration path).

``crash``: record and tick as fast as it can (30% of ticks spool only, so backlogs form) until
it is killed.  LOG gets, flushed line by line, ``W <recorder id>`` once, ``R <n>`` before each
batch of n values is recorded and ``T`` after each tick returned, so the parent knows exactly
which values went into which window: window k holds the batches logged after the k-th ``T``.
``drain``: tick until the spool is empty, close, print DONE.  Prints READY once the agent is up.
"""

from __future__ import annotations

import random
import sys

from edgetelemetry import Recorder
from edgetelemetry.agent import Agent


def main() -> None:
    mode, spool_dir, log_path, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    rec = Recorder()
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    agent = Agent(rec, spool_dir=spool_dir, interval=1)
    print("READY", flush=True)
    if mode == "drain":
        for _ in range(200):
            if agent.tick().failure is None and agent.stats()["spool-records"] == 0:
                break
        agent.close()
        print("DONE", flush=True)
        return
    with open(log_path, "a", buffering=1) as log:
        log.write(f"W {rec.recorder_id}\n")
        while True:
            n = rng.randint(0, 20)
            log.write(f"R {n}\n")
            lat.record_many([float(rng.randint(1, 100)) for _ in range(n)])
            agent.tick(send=rng.random() < 0.7)
            log.write("T\n")


if __name__ == "__main__":
    main()
