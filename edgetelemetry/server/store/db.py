"""The statement interface every store backend gives its SQL (``?`` placeholders)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = ["Db"]


class Db(Protocol):
    """One connection inside one transaction (or autocommit, for reads)."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None: ...
    def script(self, sql: str) -> None: ...
