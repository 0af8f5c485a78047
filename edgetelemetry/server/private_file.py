"""Reading the endpoint's small secret-bearing files (the credentials file, the metrics token,
the alert configuration): refused unless private to their owner."""

from __future__ import annotations

import os
import stat

from .._fs import read_checked

__all__ = ["read_private"]


def read_private(
    path: str, what: str, limit: int = 1 << 20, error: type[Exception] = ValueError
) -> bytes:
    """The bytes of ``path``; ``error`` (naming ``what`` and the fix) when it is not a regular
    file, not this user's, readable by group or others, or larger than ``limit``.  The checks
    are made on the opened descriptor, not the path; ``OSError`` from opening it propagates."""

    def check(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is not a regular file")
        if os.name == "posix":
            if st.st_mode & 0o077:
                raise error(
                    f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: it must be private "
                    f"to its owner; run: chmod 600 {path}"
                )
            if st.st_uid != os.geteuid():
                raise error(f"{what} {path} belongs to uid {st.st_uid}, not to this user")
        if st.st_size > limit:
            size = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
            raise error(f"{what} {path} is larger than {size}")

    data, _ = read_checked(path, limit + 1, check=check)
    return data
