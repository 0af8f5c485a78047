"""A hostile or damaged directory (issue 12, items 1 and 4): the spool, the agent's state, the
config file, the device key and the endpoint's credentials file never follow a symlink, never
touch what they did not create, never block on a FIFO, never read a huge file whole, and fail
with one clear ``edgetelemetry`` error (what and where) instead of a raw ``OSError``.

Everything here runs on real files; code that would hang on the old behaviour runs in a fresh
interpreter with a timeout (``fs_helpers.run_python``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fs_helpers import ROOT, run_python, tmpfs, unprivileged

from edgetelemetry import Recorder
from edgetelemetry.agent import Agent
from edgetelemetry.agent.spool import Spool, SpoolError, SpoolPermissionError
from edgetelemetry.errors import EdgeTelemetryError

FAST = {"fsync": "never", "max_age_s": None}


def _victim(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, bytes]]]:
    """A directory that is not the spool's, with files a careless spool would chmod, delete
    (``*.tmp``) or trim (anything, or names like its own)."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    os.chmod(victim, 0o755)
    files = {"notes.txt": b"n" * 4096, "build.tmp": b"keep me",
             "q-00000000000000000001-seg@0.bad": b"b" * 4096}
    for name, data in files.items():
        (victim / name).write_bytes(data)
        os.chmod(victim / name, 0o644)
    return victim, {n: (0o644, d) for n, d in files.items()}


def _untouched(victim: Path, files: dict[str, tuple[int, bytes]]) -> None:
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755
    assert sorted(p.name for p in victim.iterdir()) == sorted(files)
    for name, (mode, data) in files.items():
        assert stat.S_IMODE((victim / name).stat().st_mode) == mode, name
        assert (victim / name).read_bytes() == data, name


@pytest.mark.parametrize("subdir", ["quarantine", "dead"])
def test_a_symlinked_subdirectory_is_refused_and_its_target_left_alone(
        tmp_path: Path, subdir: str) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        s.append(b"kept")
    victim, files = _victim(tmp_path)
    shutil.rmtree(d / subdir)
    os.symlink(victim, d / subdir)
    (d / "seg-00000000000000ff.log").write_bytes(os.urandom(3000))  # damage to quarantine
    with pytest.raises(SpoolPermissionError, match=f"{subdir}.*symlink"):
        Spool(d, quarantine_max_bytes=100, **FAST)
    _untouched(victim, files)


def test_a_symlinked_spool_directory_is_refused(tmp_path: Path) -> None:
    victim, files = _victim(tmp_path)
    os.symlink(victim, tmp_path / "s")
    with pytest.raises(SpoolPermissionError, match="symlink"):
        Spool(tmp_path / "s", **FAST)
    _untouched(victim, files)


@pytest.mark.parametrize("name", ["lock", "cursor", "agent-state.json", "spool-id"])
def test_a_symlink_in_the_spool_is_never_followed(tmp_path: Path, name: str) -> None:
    d = tmp_path / "s"
    with Spool(d, **FAST) as s:
        s.append(b"kept")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch")
    os.chmod(victim, 0o644)
    (d / name).unlink(missing_ok=True)
    os.symlink(victim, d / name)
    if name == "lock":  # the lock is never moved: a clear error
        with pytest.raises(SpoolPermissionError, match="lock is a symlink"):
            Spool(d, **FAST)
    elif name == "agent-state.json":
        with Recorder() as rec, Agent(rec, spool_dir=d, device_name="cam-01", fleet="line-1",
                                      endpoint_url="http://127.0.0.1:9", fsync="never",
                                      aws_access_key_id="AKIDX",
                                      aws_secret_access_key="s") as agent:
            assert agent.stats()["corruption-events"] == 1
    else:
        with Spool(d, **FAST) as s:
            assert [r.payload for r in s.pending()] == [b"kept"]
            assert s.stats()["corruption_events"] == 1
    assert victim.read_bytes() == b"do not touch"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_files_the_spool_did_not_write_are_never_trimmed(tmp_path: Path) -> None:
    d = tmp_path / "s"
    Spool(d, **FAST).close()
    evidence = d / "quarantine" / "evidence.log"
    evidence.write_bytes(b"e" * 1000)
    for i in range(3):
        (d / f"seg-{i + 1:016x}.log").write_bytes(b"\x01" * 200)
        Spool(d, quarantine_max_bytes=300, **FAST).close()
    assert evidence.read_bytes() == b"e" * 1000
    ours = [p for p in (d / "quarantine").iterdir() if p.name.startswith("q-")]
    assert sum(p.stat().st_size for p in ours) <= 300


# -- FIFOs and other non-regular files ------------------------------------------------------

_OPEN_WITH_A_FIFO = """
import json, os, sys
from edgetelemetry import Recorder
from edgetelemetry.agent import Agent
from edgetelemetry.agent.spool import Spool
spool_dir, name = sys.argv[1], sys.argv[2]
Spool(spool_dir, fsync="never").close()
os.unlink(os.path.join(spool_dir, name)) if os.path.exists(os.path.join(spool_dir, name)) else None
os.mkfifo(os.path.join(spool_dir, name))
try:
    with Recorder() as rec, Agent(rec, spool_dir=spool_dir, device_name="cam-01",
                                  fleet="line-1", endpoint_url="http://127.0.0.1:9",
                                  fsync="never", aws_access_key_id="AKIDX",
                                  aws_secret_access_key="s") as agent:
        stats = agent.stats()
    print(json.dumps({"opened": True, "corruption": stats["corruption-events"],
                      "aside": sorted(os.listdir(os.path.join(spool_dir, "quarantine")))}))
except Exception as exc:
    print(json.dumps({"opened": False, "type": type(exc).__name__, "message": str(exc),
                      "edgetelemetry": type(exc).__module__.startswith("edgetelemetry")}))
"""


@pytest.mark.parametrize("name", ["cursor", "agent-state.json", "spool-id",
                                  "seg-0000000000000001.log", "lock"])
def test_a_fifo_in_the_spool_never_blocks_start_up(tmp_path: Path, name: str) -> None:
    done = run_python(_OPEN_WITH_A_FIFO, str(tmp_path / "s"), name, timeout=30)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    if name == "lock":
        assert not result["opened"] and result["edgetelemetry"], result
        assert result["type"] == "SpoolPermissionError"
        assert "lock is a FIFO" in result["message"] and str(tmp_path) in result["message"]
    else:
        assert result["opened"], result
        assert result["corruption"] == 1
        assert any(name in entry for entry in result["aside"]), result


def test_a_fifo_config_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "agent.json"
    os.mkfifo(fifo)
    done = run_python("""
        from edgetelemetry.agent.config import AgentConfig, ConfigError
        try:
            AgentConfig.load()
        except ConfigError as exc:
            print(exc)
    """, env={"EDGETELEMETRY_CONFIG": str(fifo)}, timeout=30)
    assert f"cannot open config file {fifo}: is a FIFO, not a regular file" in done.stdout


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_serve_refuses_a_credentials_file_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "keys.json"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edgetelemetry", "serve", "--store", ":memory:", "--port",
             "0", "--credentials-file", str(path)], capture_output=True, text=True,
            timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve blocked on a {kind} given as --credentials-file")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(path) in lines[0] and ("FIFO" in lines[0] or "not a regular file" in lines[0])


def test_a_fifo_device_key_is_refused_without_blocking(tmp_path: Path) -> None:
    cert, key = tmp_path / "device.pem.crt", tmp_path / "private.pem.key"
    cert.write_text("not a certificate\n")
    os.mkfifo(key)
    done = run_python(f"""
        from edgetelemetry.agent.credentials import CredentialsError, IotCredentialProvider
        p = IotCredentialProvider("abc.credentials.iot.us-east-1.amazonaws.com", "alias",
                                  "cam-01", {str(cert)!r}, {str(key)!r})
        try:
            p.fetch()
        except CredentialsError as exc:
            print(exc)
    """, timeout=30)
    assert f"cannot load the device key '{key}': is a FIFO, not a regular file" in done.stdout


def test_read_checked_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    from edgetelemetry._fs import NotRegularFileError, read_checked

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFileError, match="is a FIFO"):
        read_checked(tmp_path / "fifo", 10)
    with pytest.raises(NotRegularFileError, match="is a directory"):
        read_checked(tmp_path, 10)
    (tmp_path / "f").write_bytes(b"data")
    os.symlink(tmp_path / "f", tmp_path / "link")
    assert read_checked(tmp_path / "link", 10)[0] == b"data"  # a config may be a symlink
    with pytest.raises(OSError):
        read_checked(tmp_path / "link", 10, follow_symlinks=False)


def test_a_private_dir_never_blocks_and_deletes_only_its_own_files(tmp_path: Path) -> None:
    from edgetelemetry._fs import PrivateDir

    with PrivateDir.open(str(tmp_path / "d"), error=SpoolError) as d:
        assert d is not None
        os.mkfifo(d.join("fifo"))
        with pytest.raises(SpoolError, match="is a FIFO"):
            d.open_file("fifo", os.O_RDONLY)
        with pytest.raises(SpoolError, match="is a FIFO"):
            d.remove("fifo")
        assert os.path.exists(d.join("fifo"))
        d.replace("f", b"x", fsync=False)
        assert d.read("f", 10) == b"x" and d.remove("f") and not d.remove("f")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700


# -- huge and sparse files ------------------------------------------------------------------

_OPEN_A_HUGE_SEGMENT = """
import json, os, resource, sys, time
from edgetelemetry.agent.spool import Spool
d, size, dense = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "dense"
with Spool(d, fsync="never", max_age_s=None) as s:
    s.append(b"kept")
path = os.path.join(d, "seg-00000000000000ff.log")
with open(path, "wb") as f:
    if dense:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    else:
        f.truncate(size)  # sparse: a hole, as a lost file extension or a planted file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
with Spool(d, fsync="never", max_age_s=None) as s:
    pending = [r.payload.decode() for r in s.pending()]
    stats = s.stats()
elapsed = time.monotonic() - t0
grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
kept = sum(os.path.getsize(os.path.join(d, "quarantine", n))
           for n in os.listdir(os.path.join(d, "quarantine")))
print(json.dumps({"pending": pending, "grown_kib": grown_kib, "elapsed": elapsed,
                  "quarantine_bytes": kept, "files": stats["files"]}))
"""


@pytest.mark.parametrize(("size", "kind"), [(1 << 30, "sparse"), (48 << 20, "dense")])
def test_a_huge_segment_is_scanned_in_bounded_memory(tmp_path: Path, size: int,
                                                     kind: str) -> None:
    # default bounds: max_bytes 64 MiB, so the quarantine keeps at most 8 MiB
    done = run_python(_OPEN_A_HUGE_SEGMENT, str(tmp_path / "s"), str(size), kind, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    print(f"{kind} {size >> 20} MiB segment: {result}")
    assert result["pending"] == ["kept"] and result["files"] == 1
    assert result["grown_kib"] < 32 * 1024, result  # chunks of 1 MiB, never the file
    assert result["quarantine_bytes"] <= 8 << 20, result


# -- modes, read-only disks and other start-up refusals ------------------------------------


def test_a_lock_left_read_only_is_repaired_and_one_left_unreadable_is_a_clear_error(
        tmp_path: Path) -> None:
    with unprivileged(tmp_path) as work:
        d = work / "s"
        Spool(d, **FAST).close()
        os.chmod(d / "lock", 0o400)
        with Spool(d, **FAST) as s:
            s.append(b"x")
        assert stat.S_IMODE((d / "lock").stat().st_mode) == 0o600
        os.chmod(d / "lock", 0o000)
        with pytest.raises(SpoolPermissionError) as err:
            Spool(d, **FAST)
    assert f"cannot open spool {d}: Permission denied (lock)" in str(err.value)


def test_a_quarantine_that_is_a_plain_file_is_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "s"
    Spool(d, **FAST).close()
    shutil.rmtree(d / "quarantine")
    (d / "quarantine").write_bytes(b"not a directory")
    with pytest.raises(SpoolPermissionError, match="quarantine .* is a regular file, not a "
                                                   "directory"):
        Spool(d, **FAST)
    assert (d / "quarantine").read_bytes() == b"not a directory"


def test_a_read_only_spool_at_start_up_is_a_clear_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt") as fs:
        d = fs.path / "s"
        Spool(d, **FAST).close()
        fs.read_only(True)
        with pytest.raises(SpoolPermissionError) as err:
            Spool(d, **FAST)
        assert f"cannot open spool {d}: Read-only file system" in str(err.value)
        with Recorder() as rec, pytest.raises(EdgeTelemetryError, match="Read-only"):
            Agent(rec, spool_dir=d, device_name="cam-01", fleet="line-1",
                  endpoint_url="http://127.0.0.1:9", aws_access_key_id="AKIDX",
                  aws_secret_access_key="s")
        fs.read_only(False)
        with Spool(d, **FAST) as s:
            assert s.pending() == []
