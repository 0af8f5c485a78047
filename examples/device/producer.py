"""A Python inference process of the device scenario: it attaches to the device agent's
recorder by path and records, with the same calls as into a recorder of its own.

    python producer.py SEGMENT MODEL COUNT SECONDS [--threads N] [--pool N]

Each thread (``--threads``, default 1) records COUNT inferences spread over about SECONDS:
an inference is a group (latency in ms, confidence) plus, every 100th, a batch of 100 scores
through ``record_many``.  ``--pool N`` runs the threads' work in N worker processes of a
``multiprocessing`` pool instead (fork start method: the children inherit the attached
recorder and take process slots of their own).  At the end it detaches and prints "MODEL
VALUES": every value it recorded, all series together.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

import edgetelemetry as et

BATCH = 100  # scores per record_many


def work(rec: et.Recorder, model: str, count: int, seconds: float) -> int:
    """Record ``count`` inferences into ``rec``; how many values that was."""
    latency = rec.histogram("latency", unit="ms", model=model, version="1.0")
    confidence = rec.histogram("confidence", model=model, version="1.0")
    scores = rec.histogram("score", model=model, version="1.0")
    inference = rec.group(latency, confidence)
    batch = [0.5] * BATCH
    values = 0
    bursts = 50
    per_burst = max(1, -(-count // bursts))
    done = 0
    while done < count:
        for _ in range(min(per_burst, count - done)):
            start = inference.start()
            inference.record_since(start, 0.9)
            values += 2
            done += 1
            if done % 100 == 0:
                values += scores.record_many(batch)
        time.sleep(seconds / bursts)
    return values


_pool_recorder: et.Recorder | None = None  # the parent's attached recorder, in a pool worker


def _pool_work(task: tuple[str, int, float]) -> int:
    assert _pool_recorder is not None
    return work(_pool_recorder, *task)


def main() -> None:
    global _pool_recorder
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("segment")
    p.add_argument("model")
    p.add_argument("count", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pool", type=int, default=0, metavar="N")
    args = p.parse_args()

    rec = et.Recorder.attach(args.segment)
    if args.pool:
        # fork: the workers share the parent's attached recorder; each takes its own slot on
        # its first record.  (spawn or forkserver workers would attach by path themselves.)
        _pool_recorder = rec
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(args.pool) as pool:
            total = sum(pool.map(_pool_work, [(args.model, args.count, args.seconds)]
                                 * args.pool))
    else:
        totals = [0] * args.threads

        def run(i: int) -> None:
            totals[i] = work(rec, args.model, args.count, args.seconds)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = sum(totals)
    rec.close()  # detach: what it recorded stays for the agent
    print(f"{args.model} {total}", flush=True)


if __name__ == "__main__":
    main()
