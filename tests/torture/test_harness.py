"""The torture suite's own plumbing: the size switch refuses what it does not know."""

from __future__ import annotations

import pytest

from .conftest import torture_size


def test_size_is_ci_unless_full_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ET_TORTURE", raising=False)
    assert torture_size(30, 300) == 30
    monkeypatch.setenv("ET_TORTURE", "full")
    assert torture_size(30, 300) == 300


def test_an_unknown_size_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ET_TORTURE", "huge")
    with pytest.raises(ValueError, match="ET_TORTURE"):
        torture_size(30, 300)
