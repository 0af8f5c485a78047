"""kill -9 a process working a spool at random moments; what it was told is durable must be.

The child (``spool_crash_child.py``) prints a line after every append/ack that returned.  After
each SIGKILL the parent reopens the spool and checks: every record whose append returned is
pending (with its payload) or acknowledged; nothing acknowledged is pending again; sequence
numbers only grow across restarts.  Only the operation in flight at the kill may go either way.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgetelemetry.agent.spool import Spool

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spool_crash_child import OPTIONS  # noqa: E402

ROUNDS = 24
BUDGET_S = 12.0


def _run_until_killed(directory: Path, seed: int, policy: str, rng: random.Random) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "spool_crash_child.py"), str(directory), str(seed), policy],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    try:
        if seed % 5 == 4:
            # Sometimes kill whenever: during start-up, recovery or the first appends.
            time.sleep(rng.uniform(0.02, 0.3))
        else:
            deadline = time.monotonic() + 15
            while b"READY\n" not in buf:
                left = deadline - time.monotonic()
                assert left > 0, "child never became ready"
                if select.select([fd], [], [], left)[0]:
                    chunk = os.read(fd, 65536)
                    assert chunk, f"child exited early with {proc.wait()}"
                    buf += chunk
            time.sleep(rng.uniform(0.005, 0.2))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    while chunk := os.read(fd, 65536):
        buf += chunk
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    text = buf.decode()
    return text.split("\n")[:-1]  # a last line without its newline never completed


def test_kill_9_at_random_moments(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    rng = random.Random(20261126)
    appended: dict[int, str] = {}  # seq -> token, for every append known to have returned
    acked: set[int] = set()
    dead: set[int] = set()
    max_seq = 0
    started = time.monotonic()
    rounds = 0
    for seed in range(ROUNDS):
        if time.monotonic() - started > BUDGET_S and rounds >= 8:
            break
        rounds += 1
        in_flight: set[int] = set()
        # Alternate policies: under SIGKILL (not power loss) "batch" must be as safe as "always".
        policy = "batch" if seed % 2 else "always"
        for line in _run_until_killed(directory, seed, policy, rng):
            op, _, rest = line.partition(" ")
            if op == "A":
                seq_s, token = rest.split()
                seq = int(seq_s)
                assert seq > max_seq, f"seq {seq} reused or out of order (max was {max_seq})"
                max_seq = seq
                appended[seq] = token
                continue
            if op == "READY":
                continue
            seq = int(rest)
            if op in ("k", "d"):
                in_flight = {seq}
            elif op == "u":
                in_flight = {s for s in appended if s <= seq and s not in acked}
            elif op == "K":
                acked.add(seq)
                in_flight = set()
            elif op == "D":
                acked.add(seq)
                dead.add(seq)
                in_flight = set()
            elif op == "U":
                acked.update(s for s in appended if s <= seq)
                in_flight = set()
            else:
                raise AssertionError(f"unexpected line {line!r}")

        with Spool(directory, **OPTIONS) as spool:  # type: ignore[arg-type]
            pending = {r.seq: r.payload for r in spool.pending()}
            stats = spool.stats()
        assert stats["corruption_events"] == 0 and stats["cursor_resets"] == 0, stats

        unknown = sorted(set(pending) - set(appended))
        assert len(unknown) <= 1, f"round {seed}: records nobody appended: {unknown}"
        for seq in unknown:  # the append in flight reached the disk before the kill
            assert seq > max_seq
            max_seq = seq
            appended[seq] = pending[seq].split(b"|")[0].decode()
        for seq, token in appended.items():
            if seq in acked:
                assert seq not in pending, f"round {seed}: acked record {seq} is pending again"
            elif seq in in_flight:
                if seq not in pending:
                    acked.add(seq)  # the in-flight ack made it
            else:
                assert seq in pending, f"round {seed}: record {seq} was lost"
                parts = pending[seq].decode().split("|")
                assert parts[-1] == "" and set(parts[:-1]) == {token}, pending[seq]
        for seq in dead:
            assert (directory / "dead" / f"dl-{seq:016x}.rec").exists()

    # How much work fits depends on the disk's fsync latency; demand only that work was done.
    assert rounds >= 8
    assert len(appended) > 20 and acked, (len(appended), len(acked))
