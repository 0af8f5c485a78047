"""The torture suite: crash, corruption, hostile-directory, slow-client and fuzz runs that stay.

Every test here runs in the default suite at a bounded "CI size" and at the full size when
``ET_TORTURE=full`` is set (``ET_TORTURE=full bash scripts/test.sh``).  Each one reports its
figures (tries, lost, duplicated, crashed, ...) with the ``torture_report`` fixture; the lines
are printed together at the end of the pytest run, so a CI log shows them in one place.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

_LINES: list[str] = []


def torture_size(ci: int, full: int) -> int:
    """``full`` when ``ET_TORTURE=full``, else ``ci``: how many tries a torture test makes."""
    mode = os.environ.get("ET_TORTURE", "ci")
    if mode not in ("ci", "full"):
        raise ValueError(f"ET_TORTURE must be 'ci' or 'full', got {mode!r}")
    return full if mode == "full" else ci


@pytest.fixture
def torture_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``torture_report(tries=30, lost=0, duplicated=0, crashed=0)`` records the test's one
    summary line (its name, then ``key=value`` in the order given)."""

    def report(**figures: object) -> None:
        body = " ".join(f"{key}={value}" for key, value in figures.items())
        _LINES.append(f"{request.node.name}: {body}")

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LINES:
        terminalreporter.section("torture summary")
        for line in _LINES:
            terminalreporter.write_line(line)
