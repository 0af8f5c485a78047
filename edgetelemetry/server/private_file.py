"""Reading the endpoint's small secret-bearing files (the metrics token, the alert
configuration): refused unless private to their owner, as the credentials file is."""

from __future__ import annotations

import os
import stat

from .._fs import read_checked

__all__ = ["read_private"]


def read_private(path: str, what: str, limit: int = 1 << 20) -> bytes:
    """The bytes of ``path``; ``ValueError`` (naming ``what`` and the fix) when it is not a
    regular file, not this user's, readable by group or others, or larger than ``limit``.
    The checks are made on the opened descriptor, not the path."""

    def check(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{what} {path} is not a regular file")
        if os.name == "posix":
            if st.st_mode & 0o077:
                raise ValueError(
                    f"{what} {path} must be private to its owner; run: chmod 600 {path}"
                )
            if st.st_uid != os.geteuid():
                raise ValueError(f"{what} {path} belongs to uid {st.st_uid}, not to this user")
        if st.st_size > limit:
            raise ValueError(f"{what} {path} is larger than {limit} bytes")

    data, _ = read_checked(path, limit + 1, check=check)
    return data
