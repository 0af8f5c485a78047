"""A module as it was at an earlier commit, loaded beside today's, for benchmarks that time the
code a change replaced against the change in one run (``verify_cost.py``, ``validate_cost.py``).

The source comes from this repository's history (``git show``); a machine without git or a
shallow clone without the commit gets ``NotInHistory``, and the benchmark's test skips, saying so.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import types

__all__ = ["NotInHistory", "load"]

_ROOT = pathlib.Path(__file__).resolve().parent.parent


class NotInHistory(RuntimeError):
    """The commit or the file is not in reach: no git, or a clone without that history."""


def load(rev: str, path: str, name: str) -> types.ModuleType:
    """``path`` (``edgetelemetry/...py``) as of ``rev``, as the module ``name``: a sibling of
    today's module in the same package, so its relative imports find today's siblings."""
    try:
        source = subprocess.run(
            ["git", "-C", str(_ROOT), "show", f"{rev}:{path}"],
            check=True, capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc)).strip()
        raise NotInHistory(f"git show {rev[:12]}:{path} failed: {detail}") from exc
    module = types.ModuleType(name)
    module.__package__ = name.rpartition(".")[0]
    sys.modules[name] = module  # dataclasses look their module up while decorating
    exec(compile(source, f"{path}@{rev[:12]}", "exec"), module.__dict__)
    return module
