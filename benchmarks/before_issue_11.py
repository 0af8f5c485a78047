"""A build of edgetelemetry as it was before issue 11, to measure against in the same run.

``build(root)`` exports ``BEFORE`` (the last main commit before the core's issue-11 work) from
the repository's git history into ``.benchmarks/before-issue-11/`` and builds its extensions
in place, once (about 10 s; later runs reuse it).  ``run(tree, script)`` runs a script with that
tree first on ``sys.path``, so ``import edgetelemetry`` imports the old package.

    python benchmarks/before_issue_11.py       # build it, print where
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
from typing import Any

__all__ = ["BEFORE", "BeforeUnavailable", "build", "run"]

# main before issue 11: the core dropped what a full ring could not take
BEFORE = "15c831ec95fed740b021a0838d9751502c95a4f2"


class BeforeUnavailable(RuntimeError):
    """The old tree could not be exported or built (no git history, no compiler)."""


def build(root: pathlib.Path) -> pathlib.Path:
    tree = root / ".benchmarks" / "before-issue-11"
    stamp = tree / ".built"
    if stamp.is_file() and stamp.read_text() == BEFORE:
        return tree
    tree.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = pathlib.Path(tmp) / "before.tar"
        try:
            subprocess.run(["git", "-C", str(root), "archive", "-o", str(archive), BEFORE],
                           check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            raise BeforeUnavailable(f"git archive {BEFORE[:12]} failed: {detail}") from exc
        with tarfile.open(archive) as tar:
            tar.extractall(tree)  # this repository's own history
    result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise BeforeUnavailable(f"building {BEFORE[:12]} failed:\n{result.stderr[-2000:]}")
    stamp.write_text(BEFORE)
    return tree


def run(tree: pathlib.Path | None, script: pathlib.Path) -> dict[str, Any]:
    """Run ``script`` (which prints one JSON object) against ``tree``, or this checkout's
    installed package when ``tree`` is None."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} failed:\n{result.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return doc


if __name__ == "__main__":
    print(build(pathlib.Path(__file__).resolve().parent.parent))
