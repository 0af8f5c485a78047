"""Child for tests/test_spool_crash.py: works a spool until the parent SIGKILLs it.

Usage: ``spool_crash_child.py DIR SEED always|batch``.  Writes one flushed line per step to stdout:

    READY             the spool is open (recovery done)
    A <seq> <token>   append returned; the payload is ``(token + "|") * k``
    k <seq>           about to ack ``seq``           -> K <seq> once ack returned
    u <seq>           about to ack_upto ``seq``      -> U <seq> once it returned
    d <seq>           about to dead-letter ``seq``   -> D <seq> once it returned

A lower-case line without its upper-case partner is the operation in flight at the kill, so
the parent knows which records may or may not have been acknowledged.
"""

from __future__ import annotations

import random
import sys

from edgetelemetry.agent.spool import Spool

OPTIONS = {"segment_bytes": 400, "max_bytes": 64 << 20, "max_age_s": None}


def main() -> None:
    directory, seed, policy = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    out = sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    spool = Spool(directory, fsync=policy, **OPTIONS)  # type: ignore[arg-type]
    say("READY")
    i = 0
    while True:
        token = f"{seed}.{i}"
        i += 1
        seq = spool.append((token + "|").encode() * rng.randint(1, 12))
        say(f"A {seq} {token}")
        r = rng.random()
        if r < 0.2:  # after an outage: the newest first
            rec = spool.newest()
            if rec is not None:
                say(f"k {rec.seq}")
                spool.ack(rec.seq)
                say(f"K {rec.seq}")
        elif r < 0.45:  # then the backlog, oldest first
            for rec in spool.pending(limit=1):
                say(f"k {rec.seq}")
                spool.ack(rec.seq)
                say(f"K {rec.seq}")
        elif r < 0.5:
            recs = spool.pending(limit=3)
            if recs:
                say(f"u {recs[-1].seq}")
                spool.ack_upto(recs[-1].seq)
                say(f"U {recs[-1].seq}")
        elif r < 0.54:
            recs = spool.pending(limit=1)
            if recs:
                say(f"d {recs[0].seq}")
                spool.dead_letter(recs[0].seq, "ValidationException from the crash test")
                say(f"D {recs[0].seq}")


if __name__ == "__main__":
    main()
