"""Private files and directories, in one place: what the spool, the agent's state, the config
file, the device key and the endpoint's credentials file all need of the file system.

- ``open_private`` / ``ensure_private_dir``: a file (0600) or directory (0700) this process owns,
  never opened through a symlink, tightened when it is too open;
- ``replace_file``: an atomic replacement (temp file, fsync, rename, fsync of the directory),
  so a crash leaves the old or the new content, never a mix;
- ``read_checked``: a file read through one descriptor whose ``fstat`` the caller checks first,
  so what is checked is what is read, whatever the path names a moment later;
- ``write_all``, ``datasync``, ``fsync_dir``, ``mode_bits``: the primitives under them.

Each caller keeps its own policy (what it refuses, what it only warns about) and its own error
type; the mechanics live here once.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable

__all__ = [
    "TMP_SUFFIX",
    "datasync",
    "ensure_private_dir",
    "fsync_dir",
    "mode_bits",
    "open_private",
    "read_checked",
    "replace_file",
    "write_all",
]

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"  # of an atomic replacement in progress; an owner may delete leftovers

ErrorType = Callable[[str], Exception]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def datasync(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_private(path: str, flags: int, *, error: ErrorType) -> int:
    """Open a file we own, mode exactly 0600 whatever the umask; never through a symlink.

    ``error(message)`` is raised for a file that is not regular or belongs to another user."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise error(
                f"{path} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()})"
            )
        if stat.S_IMODE(st.st_mode) != 0o600:
            if stat.S_IMODE(st.st_mode) & 0o077:
                log.warning("tightening %s from %o to 600", path, stat.S_IMODE(st.st_mode))
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure_private_dir(path: str, *, error: ErrorType, what: str = "a directory") -> None:
    """Create ``path`` mode 0700, or check an existing one is ours and tighten it to 0700."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{path} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise error(
            f"{path} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()}); "
            f"{what} must be private to its owner"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        if stat.S_IMODE(st.st_mode) & 0o077:
            log.warning("tightening %s from %o to 700", path, stat.S_IMODE(st.st_mode))
        os.chmod(path, 0o700)


def replace_file(dirpath: str, name: str, data: bytes, *, fsync: bool, error: ErrorType) -> None:
    """Replace ``dirpath/name`` with ``data`` (mode 0600) so that a crash leaves the old or the
    new file, never a mix; ``fsync=False`` skips the syncs (tests, tmpfs)."""
    tmp = os.path.join(dirpath, name + TMP_SUFFIX)
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, error=error)
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(dirpath, name))
    if fsync:
        fsync_dir(dirpath)


def read_checked(
    path: str | os.PathLike[str],
    limit: int,
    *,
    check: Callable[[os.stat_result], None] | None = None,
    follow_symlinks: bool = True,
) -> tuple[bytes, os.stat_result]:
    """Up to ``limit`` bytes of a file and its ``fstat``, both of one descriptor.

    ``check(stat)`` runs before anything is read and raises to refuse the file.  ``OSError``
    from opening it propagates (``FileNotFoundError`` among them)."""
    # O_NONBLOCK: a FIFO planted at ``path`` opens at once (and ``check`` sees it) instead of
    # blocking until a writer comes; reads of a regular file ignore the flag
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if check is not None:
            check(st)
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def mode_bits(path: str) -> int | None:
    """The permission bits of ``path`` (following symlinks), or None when it cannot be read."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
