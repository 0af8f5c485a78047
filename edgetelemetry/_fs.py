"""Private files and directories, in one place: what the spool, the agent's state, the config
file, the device key and the endpoint's credentials file all need of the file system.

The rules, kept here once:

- **No symlink is ever followed** inside a private directory, nor as the directory itself:
  ``PrivateDir`` holds the directory open (``O_DIRECTORY | O_NOFOLLOW``) and resolves every
  name relative to that descriptor (``dir_fd``), each file opened with ``O_NOFOLLOW``.  A path
  swapped for a symlink after the check finds the descriptor, not the new target.
- **Type and owner are checked before anything is read or changed**: a name is ``lstat``'ed
  first, so a FIFO, a device or a directory where a file is expected is refused without being
  opened (an ``open`` of a FIFO blocks, of a device may act); then it is opened with
  ``O_NONBLOCK`` and its ``fstat`` must be the same regular file of this user.
- **Nothing it did not create is changed**: modes are tightened only on a directory or file
  this user owns and that passed the checks; only names the caller recognises are deleted.
- **Writes are atomic** (``PrivateDir.replace``): temp file, fsync, rename, fsync of the
  directory, so a crash leaves the old or the new content, never a mix.

``read_checked`` reads a file named by a path (config, credentials) the same careful way, for
files that may legitimately be symlinks (``/etc/...``) but must be regular files.  Each caller
keeps its own policy (what it refuses, what it only warns about) and passes its own error type
(``error(message)``); the mechanics live here once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable

__all__ = [
    "TMP_SUFFIX",
    "NotRegularFileError",
    "PrivateDir",
    "check_regular_file",
    "datasync",
    "describe_mode",
    "mode_bits",
    "read_checked",
    "write_all",
]

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"  # of an atomic replacement in progress; an owner may delete leftovers
COPY_CHUNK = 1 << 20  # bytes read at a time when streaming a file

ErrorType = Callable[[str], Exception]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class NotRegularFileError(OSError):
    """A path that names a FIFO, a directory, a device or a socket where a file is expected.

    An ``OSError`` (``errno.EINVAL``) so callers that report ``OSError.strerror`` say why."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(errno.EINVAL, f"is {what}, not a regular file", path)


def describe_mode(mode: int) -> str:
    """``st_mode``'s file type in words: 'a FIFO', 'a directory', 'a symlink', ..."""
    for test, words in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return words
    return "of an unknown type"


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def datasync(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)


def mode_bits(path: str) -> int | None:
    """The permission bits of ``path`` (following symlinks), or None when it cannot be read."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def check_regular_file(path: str | os.PathLike[str]) -> os.stat_result:
    """``stat`` of ``path`` (following symlinks); ``NotRegularFileError`` unless a regular file.

    For files a library opens by name itself (``ssl`` loading a certificate): a FIFO there
    would block it forever.  ``OSError`` from ``stat`` propagates."""
    name = os.fspath(path)
    st = os.stat(name)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(name, describe_mode(st.st_mode))
    return st


def read_checked(
    path: str | os.PathLike[str],
    limit: int,
    *,
    check: Callable[[os.stat_result], None] | None = None,
    follow_symlinks: bool = True,
) -> tuple[bytes, os.stat_result]:
    """Up to ``limit`` bytes of a regular file and its ``fstat``, both of one descriptor.

    Anything but a regular file is refused before it is opened (``NotRegularFileError``), so a
    FIFO never blocks the caller; the descriptor's ``fstat`` must then be the file that was
    checked.  ``check(stat)`` runs before anything is read and raises to refuse the file.
    ``OSError`` from opening it propagates (``FileNotFoundError`` among them)."""
    name = os.fspath(path)
    before = os.stat(name, follow_symlinks=follow_symlinks)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFileError(name, describe_mode(before.st_mode))
    flags = os.O_RDONLY | _FILE_FLAGS
    if follow_symlinks:
        flags &= ~os.O_NOFOLLOW
    fd = os.open(name, flags)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(
            st.st_mode
        ):
            raise NotRegularFileError(name, "replaced while it was being opened")
        if check is not None:
            check(st)
        return _read_upto(fd, limit), st
    finally:
        os.close(fd)


def _read_upto(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, COPY_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _clear_nonblock(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)


class PrivateDir:
    """A directory this user owns, held open; every name in it is resolved through the held
    descriptor and never through a symlink.

    Build one with ``PrivateDir.open(path, ...)`` and a subdirectory with ``child(name)``.
    ``error(message)`` (the caller's exception type) is raised for anything that is not what
    it should be: a symlink, the wrong type, another owner.  Plain ``OSError`` (a full or
    read-only disk, I/O errors) propagates for the caller to classify.  ``close()`` or ``with``.
    """

    def __init__(self, fd: int, path: str, error: ErrorType, what: str) -> None:
        self.fd = fd
        self.path = path
        self.what = what
        self._error = error

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str, *, error: ErrorType, what: str = "a directory", create: bool = True
    ) -> PrivateDir | None:
        """Create ``path`` (mode 0700; its parents as needed) or open the existing one; None if
        it does not exist and ``create`` is False.  An existing directory is checked and
        tightened to 0700."""
        if create:
            parent = os.path.dirname(path)
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise error(f"cannot create the parent of {what} {path}: {exc.strerror}") from exc
        return cls._open_at(path, path, None, error=error, what=what, create=create)

    def child(self, name: str, *, what: str, create: bool = True) -> PrivateDir | None:
        """The subdirectory ``name``, created (0700) or checked and tightened like ``open``."""
        return self._open_at(
            name, os.path.join(self.path, name), self.fd, error=self._error, what=what,
            create=create,
        )

    @classmethod
    def _open_at(
        cls, name: str, path: str, dir_fd: int | None, *, error: ErrorType, what: str,
        create: bool,
    ) -> PrivateDir | None:
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise error(f"cannot create {what} {path}: {exc.strerror}") from exc
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if create:
                raise error(f"{what} {path} vanished while it was being opened") from None
            return None
        except OSError as exc:
            raise error(cls._refusal(name, path, dir_fd, what, exc)) from exc
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise error(
                    f"{what} {path} belongs to uid {st.st_uid}, not to this process (uid "
                    f"{os.geteuid()}); it must be private to its owner"
                )
            mode = stat.S_IMODE(st.st_mode)
            if mode != 0o700:
                if mode & 0o077:
                    log.warning("tightening %s from %o to 700", path, mode)
                try:
                    os.fchmod(fd, 0o700)
                except OSError as exc:
                    raise error(f"cannot make {what} {path} private (mode 0700): "
                                f"{exc.strerror}") from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path, error, what)

    @staticmethod
    def _refusal(name: str, path: str, dir_fd: int | None, what: str, exc: OSError) -> str:
        try:
            kind = describe_mode(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            kind = None
        if kind == "a symlink":
            return (f"{what} {path} is a symlink; it is never followed: point the setting at "
                    "the real directory, or remove the link")
        if kind is not None and kind != "a directory":
            return f"{what} {path} is {kind}, not a directory; move it away"
        return f"cannot open {what} {path}: {exc.strerror}"

    # -- files ---------------------------------------------------------------------------

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry ``name`` itself (a symlink is not followed), or None if there is none."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def problem(self, name: str, st: os.stat_result) -> str | None:
        """Why the entry ``name`` with ``lstat`` ``st`` is not a file of ours, or None."""
        if not stat.S_ISREG(st.st_mode):
            return f"{self.join(name)} is {describe_mode(st.st_mode)}, not a regular file"
        if st.st_uid != os.geteuid():
            return (f"{self.join(name)} belongs to uid {st.st_uid}, not to this process "
                    f"(uid {os.geteuid()})")
        return None

    def open_file(self, name: str, flags: int) -> int:
        """A descriptor of the regular file ``name`` of this user (created 0600 with
        ``O_CREAT``), never through a symlink and never blocking; its mode is made 0600.

        ``error`` for a symlink, a non-regular file or another owner (checked on the entry
        before opening it and on the descriptor after); ``OSError`` otherwise."""
        before = self.lstat(name)
        if before is None and not flags & os.O_CREAT:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.join(name))
        if before is not None:
            why = self.problem(name, before)
            if why is not None:
                raise self._error(why)
        try:
            try:
                fd = os.open(name, flags | _FILE_FLAGS, 0o600, dir_fd=self.fd)
            except PermissionError:
                # a file of ours left too closed (a lock at 0400): put it back to 0600 first
                if before is None or not self._repair_mode(name, before):
                    raise
                fd = os.open(name, flags | _FILE_FLAGS, 0o600, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # swapped in meanwhile
                raise self._error(f"{self.join(name)} is not a regular file: "
                                  f"{exc.strerror}") from exc
            raise
        try:
            st = os.fstat(fd)
            why = self.problem(name, st)
            if why is None and before is not None and \
                    (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
                why = f"{self.join(name)} was replaced while it was being opened"
            if why is not None:
                raise self._error(why)
            _clear_nonblock(fd)
            mode = stat.S_IMODE(st.st_mode)
            if mode != 0o600:
                if mode & 0o077:
                    log.warning("tightening %s from %o to 600", self.join(name), mode)
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _repair_mode(self, name: str, before: os.stat_result) -> bool:
        for access in (os.O_RDONLY, os.O_WRONLY):
            try:
                fd = os.open(name, access | _FILE_FLAGS, dir_fd=self.fd)
            except PermissionError:
                continue
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
                    return False
                log.warning("repairing %s: mode %o to 600", self.join(name),
                            stat.S_IMODE(st.st_mode))
                os.fchmod(fd, 0o600)
                return True
            finally:
                os.close(fd)
        return False

    def read(self, name: str, limit: int) -> bytes:
        """Up to ``limit`` bytes of the file ``name`` (checked as ``open_file`` does)."""
        fd = self.open_file(name, os.O_RDONLY)
        try:
            return _read_upto(fd, limit)
        finally:
            os.close(fd)

    def replace(self, name: str, data: bytes, *, fsync: bool) -> None:
        """Replace ``name`` with ``data`` (mode 0600) so that a crash leaves the old or the new
        file, never a mix; ``fsync=False`` skips the syncs (tests, tmpfs)."""
        tmp = name + TMP_SUFFIX
        fd = self.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.rename(tmp, name)
        if fsync:
            self.fsync()

    def rename(self, name: str, new_name: str, into: PrivateDir | None = None) -> None:
        """Rename the entry ``name`` (a symlink itself, never its target) to ``new_name`` in
        this directory or in ``into``."""
        target = self if into is None else into
        os.rename(name, new_name, src_dir_fd=self.fd, dst_dir_fd=target.fd)

    def remove(self, name: str) -> bool:
        """Delete ``name`` if it is a regular file of ours; False if it was not there.  Anything
        else is left alone (``error``): we delete only what we could have created."""
        st = self.lstat(name)
        if st is None:
            return False
        why = self.problem(name, st)
        if why is not None:
            raise self._error(why)
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PrivateDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PrivateDir {self.path!r} fd={self.fd}>"
