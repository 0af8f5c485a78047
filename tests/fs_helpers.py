"""Real file-system conditions for tests: a small tmpfs that can be made read-only or full, a
directory made immutable and back (``chattr +i``: every write in it fails, even root's, even
through descriptors already open, and it is reversible), an ext4 image the kernel remounts
read-only after an error (as a failing disk does), an unprivileged user for permission checks
that root would bypass, and a fresh interpreter for code that might hang (a FIFO opened for
reading blocks forever: a timeout turns that into a failure instead of a stuck test run).

Each skips, saying why, where this machine does not allow it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534


class Tmpfs:
    """A tmpfs mounted at ``path``; ``read_only(True/False)`` remounts it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_only(self, on: bool) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(self.path)],
                       check=True, capture_output=True)


@contextmanager
def tmpfs(path: Path, size: str = "16m") -> Iterator[Tmpfs]:
    """Mount a tmpfs of ``size`` at ``path`` for the block; skip (saying why) where this
    machine does not allow ``mount`` (not root, or a container without the capability)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the read-only and disk-full cases run as root "
                    "in CI)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow mount: {done.stderr.strip()}")
    try:
        yield Tmpfs(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextmanager
def immutable(path: Path) -> Iterator[Callable[[bool], None]]:
    """Yield ``set(on)``, which makes everything under ``path`` immutable (``chattr -R +i``) or
    writable again; always writable again after the block.  Needs root and a file system
    with the attribute (ext4, xfs, btrfs; not tmpfs)."""
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root (the immutable-spool cases run as root in CI)")
    probe = subprocess.run(["chattr", "-i", str(path)], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{path}'s file system has no immutable attribute: {probe.stderr.strip()}")

    def set_immutable(on: bool) -> None:
        subprocess.run(["chattr", "-R", "+i" if on else "-i", str(path)], check=True,
                       capture_output=True)

    try:
        yield set_immutable
    finally:
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)


class Ext4:
    """An ext4 image mounted at ``path`` with ``errors=remount-ro``; ``fail()`` reports an
    error to the kernel, which remounts it read-only at once (``EROFS`` for every write, open
    descriptors included), as it does for a failing disk."""

    def __init__(self, path: Path, device: str) -> None:
        self.path = path
        self.device = device

    def fail(self) -> None:
        name = os.path.basename(self.device)
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("test: disk failing\n")


@contextmanager
def ext4_image(path: Path, size: str = "32M") -> Iterator[Ext4]:
    if os.geteuid() != 0:
        pytest.skip("a loop-mounted ext4 image needs root")
    path.mkdir(parents=True, exist_ok=True)
    image = path.with_suffix(".img")
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    done = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow a loop mount: {done.stderr.strip()}")
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(path)], capture_output=True,
                            text=True, check=True).stdout.strip()
    try:
        if not Path(f"/sys/fs/ext4/{os.path.basename(device)}/trigger_fs_error").exists():
            pytest.skip("this kernel cannot be asked to fail an ext4 file system")
        yield Ext4(path, device)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
        image.unlink(missing_ok=True)


@contextmanager
def unprivileged(base: Path) -> Iterator[Path]:
    """Run the block as an ordinary user: root passes every permission check, so a file left
    at mode 0400 means nothing to it.  As root, the effective uid becomes ``nobody`` for the
    block and a fresh directory it owns is yielded (under /tmp: pytest's own base is private
    to root); as any other user, nothing changes and ``base`` holds the directory."""
    if os.geteuid() != 0:
        work = base / "unprivileged"
        work.mkdir()
        yield work
        return
    work = Path(tempfile.mkdtemp(prefix="et-unprivileged-"))
    os.chown(work, NOBODY, NOBODY)
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield work
    finally:
        os.seteuid(0)
        os.setegid(0)
        shutil.rmtree(work, ignore_errors=True)


def run_python(code: str, *args: str, timeout: float = 60.0,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this checkout importable; a hang past
    ``timeout`` fails the calling test (it does not hang the run)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETELEMETRY_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                              capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"blocked for more than {timeout:g}s: {exc.stderr!r}")
