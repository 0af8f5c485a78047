"""Child for tests/test_agent_crash.py: a real agent process the parent kills or signals.

Usage: ``agent_crash_child.py MODE SPOOL_DIR LOG SEED``; the endpoint, device and credentials
come from ``EDGETELEMETRY_*`` variables (the agent's own configuration path).

* ``crash``: record and tick as fast as it can (30% of ticks spool only, so backlogs form)
  until the parent SIGKILLs it.  After every tick that spooled a window it appends
  ``A <spool seq> <recorder id> <window seq>`` to LOG: the window was durably spooled.
* ``drain``: tick until the spool is empty, close, exit 0.
* ``sigterm``: start the background thread (interval one hour: it never ticks), record
  ``SIGTERM_VALUES`` values, print READY, then wait; SIGTERM must flush them.
* ``exit``: the same, then leave through ``sys.exit(0)`` without closing: atexit must flush.

Prints ``READY`` on stdout once the agent is open.
"""

from __future__ import annotations

import random
import sys
import time

from edgetelemetry import Recorder
from edgetelemetry.agent import Agent

SIGTERM_VALUES = 7


def main() -> None:
    mode, spool_dir, log_path, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    rec = Recorder()
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    if mode in ("sigterm", "exit"):
        agent = Agent(rec, spool_dir=spool_dir, interval=3600,
                      install_signal_handlers=mode == "sigterm").start()
        lat.record_many([1.0] * SIGTERM_VALUES)
        print("READY", flush=True)
        if mode == "exit":
            sys.exit(0)
        while True:
            time.sleep(1)
    agent = Agent(rec, spool_dir=spool_dir, interval=1)
    print("READY", flush=True)
    with open(log_path, "a", buffering=1) as log:
        if mode == "drain":
            for _ in range(100):
                if agent.tick().failure is None and agent.stats()["spool-records"] == 0:
                    break
            agent.close()
            print("DONE", flush=True)
            return
        while True:
            lat.record_many([float(rng.randint(1, 100)) for _ in range(rng.randint(0, 20))])
            result = agent.tick(send=rng.random() < 0.7)
            if result.spooled_seq is not None and result.window is not None:
                rid, wseq = result.window
                log.write(f"A {result.spooled_seq} {rid} {wseq}\n")


if __name__ == "__main__":
    main()
