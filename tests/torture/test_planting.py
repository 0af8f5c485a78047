"""Things planted in a spool directory: symlinks (to a file, to a directory), FIFOs,
directories, sockets, character devices and files of another user, under every name the spool
and the agent use, then an agent opened on it.

Start-up must never block (a FIFO opened for reading would) and never follow a symlink: the
victim file and directory a link points at keep their modes, contents and entries.  The agent
either opens, with every record of the segments it did not lose and none with a wrong payload,
or refuses with an ``edgetelemetry`` error naming the spool (a lock, quarantine/ or dead/ that
is not what it should be); nothing else.  Agents run in a fresh interpreter with a timeout, so
a hang is counted, not waited for.
"""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgetelemetry.agent.spool import Spool

from .conftest import torture_size

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("cursor", "lock", "spool-id", "agent-state.json", "seg-00000000000000ff.log",
         "existing-segment", "quarantine", "dead", "cursor.tmp", "agent-state.json.tmp",
         "quarantine/q-00000000000000000001-seg@0.bad", "dead/dl-0000000000000001.rec")
KINDS = ("symlink-file", "symlink-dir", "fifo", "dir", "socket", "chardev", "foreign")
REFUSED = {"lock": set(KINDS), "quarantine": set(KINDS) - {"dir"},
           "dead": set(KINDS) - {"dir"}}

_OPEN_EACH = """
import json, sys
from edgetelemetry import Recorder
from edgetelemetry.agent import Agent
from edgetelemetry.errors import EdgeTelemetryError
for d in sys.argv[1:]:
    out = {"dir": d}
    try:
        with Recorder() as rec, Agent(rec, spool_dir=d, device_name="cam-1", fleet="line-1",
                                      endpoint_url="http://127.0.0.1:9", fsync="never",
                                      aws_access_key_id="AKIDPLANT", aws_secret_access_key="s",
                                      max_attempts=1) as agent:
            out["pending"] = [[r.seq, r.payload.hex()] for r in agent.spool.pending()]
            out["opened"] = True
    except EdgeTelemetryError as exc:
        out.update(opened=False, type=type(exc).__name__, message=str(exc))
    except Exception as exc:
        out.update(opened=False, type=type(exc).__name__, message=str(exc), foreign=True)
    print(json.dumps(out), flush=True)
"""


def _victims(base: Path) -> tuple[Path, Path]:
    vfile, vdir = base / "victim.txt", base / "victim-dir"
    vfile.write_bytes(b"not the spool's")
    vfile.chmod(0o644)
    vdir.mkdir()
    vdir.chmod(0o755)
    for name in ("notes.txt", "x.tmp", "q-00000000000000000002-seg@0.bad"):
        (vdir / name).write_bytes(b"v" * 1000)
        (vdir / name).chmod(0o644)
    return vfile, vdir


def _snapshot(vfile: Path, vdir: Path) -> object:
    return ([(p.name, stat.S_IMODE(p.stat().st_mode), p.read_bytes()) for p in
             sorted(vdir.iterdir())], stat.S_IMODE(vdir.stat().st_mode),
            stat.S_IMODE(vfile.stat().st_mode), vfile.read_bytes())


def _plant(path: Path, kind: str, vfile: Path, vdir: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for p in sorted(path.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "symlink-file":
        path.symlink_to(vfile)
    elif kind == "symlink-dir":
        path.symlink_to(vdir)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
        (path / "inside").write_bytes(b"x")
    elif kind == "socket":  # bound where the path is short enough, then moved in place
        short = Path(tempfile.mkdtemp(prefix="et-sock-")) / "s"
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(short))
        os.rename(short, path)
        short.parent.rmdir()
    elif kind == "chardev":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    else:  # foreign: a regular file (or directory) of another user
        if path.name in ("quarantine", "dead"):
            path.mkdir()
        else:
            path.write_bytes(b"someone else's")
        os.chown(path, 65534, 65534)


def test_planted_entries_never_block_or_lead_outside(
        tmp_path: Path, torture_report: Callable[..., None]) -> None:
    tries = torture_size(ci=60, full=600)
    rng = random.Random(20261203)
    kinds = KINDS if os.geteuid() == 0 else tuple(k for k in KINDS if k not in
                                                   ("chardev", "foreign"))
    vfile, vdir = _victims(tmp_path)
    before = _snapshot(vfile, vdir)
    cases = []
    for t in range(tries):
        d = tmp_path / f"s{t:03d}"
        with Spool(d, segment_bytes=64, fsync="never") as s:
            for _ in range(6):
                s.append(os.urandom(rng.randint(0, 40)))
        with Spool(d, fsync="never") as s:
            payloads = {r.seq: r.payload for r in s.pending()}
        name, kind = NAMES[t % len(NAMES)], rng.choice(kinds)
        if name == "existing-segment":
            name = rng.choice(sorted(p.name for p in d.glob("seg-*.log")))
        lost_segment = name if name.startswith("seg-") else None
        _plant(d / name, kind, vfile, vdir)
        cases.append((d, name, kind, payloads, lost_segment))
    try:
        done = subprocess.run([sys.executable, "-c", _OPEN_EACH, *[str(c[0]) for c in cases]],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = done.stdout.splitlines()
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout or b"").decode().splitlines()
    results = {json.loads(line)["dir"]: json.loads(line) for line in lines}
    crashed = wrong = lost = refused = duplicated = 0
    problems = []
    for d, name, kind, payloads, lost_segment in cases:
        out = results.get(str(d))
        if out is None:  # it blocked (or died) on this one
            crashed += 1
            problems.append(f"{name} as {kind}: no answer (blocked?)")
            continue
        if not out["opened"]:
            refused += 1
            top = name.split("/")[0]
            if out.get("foreign") or kind not in REFUSED.get(top, set()) \
                    or str(d) not in out["message"]:
                crashed += 1
                problems.append(f"{name} as {kind}: {out['type']}: {out['message']}")
            continue
        if kind in REFUSED.get(name, set()):
            problems.append(f"{name} as {kind}: opened, should have been refused")
            crashed += 1
        got = {seq: bytes.fromhex(p) for seq, p in out["pending"]}
        duplicated += len(out["pending"]) - len(got)
        wrong += sum(1 for seq, p in got.items() if payloads.get(seq) != p)
        gone = {seq for seq in payloads if seq not in got}
        if lost_segment is None:
            lost += len(gone)
    victims_touched = int(_snapshot(vfile, vdir) != before)
    torture_report(tries=tries, refused=refused, lost=lost, duplicated=duplicated,
                   crashed=crashed, wrong=wrong, victims_touched=victims_touched)
    assert not problems, "\n".join(problems)
    assert wrong == 0 and lost == 0 and duplicated == 0 and victims_touched == 0
