"""The README's first example runs as written, with stand-ins for the user's model, and keeps
every value (issue 11: it used to drop a quarter of its group loop in some runs)."""

from __future__ import annotations

import pathlib
import re

import numpy as np

import edgetelemetry as et

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _first_python_block() -> str:
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert match, "the README has a python example"
    return match.group(1)


def test_the_first_example_keeps_every_value(capsys) -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.random(3 * 32 * 32, dtype=np.float32) for _ in range(1000)]
    scores = rng.random(200_000)  # a batch 100 times the ring

    def run_inference(x: np.ndarray | None = None) -> np.ndarray:
        return np.tanh(x[:64]) if x is not None else np.zeros(1)

    env = {"run_inference": run_inference, "scores": scores, "inputs": inputs}
    exec(compile(_first_python_block(), str(README), "exec"), env)
    snap: et.Snapshot = env["snap"]
    by_metric = {s.metric: s for s in snap.series}
    assert by_metric["latency"].count == 1 + 1 + len(inputs)
    assert by_metric["confidence"].count == len(scores) + len(inputs)
    assert by_metric["input-size"].count == len(inputs)
    assert by_metric["input-size"].sum == sum(x.nbytes for x in inputs)
    assert all(not s.dropped and not s.rejected for s in snap.series)
    assert env["same"] == snap
    merged = {s.key: s for s in env["merged"].series}
    assert merged == {s.key: s for s in snap.series}  # the next window was idle: nothing added
    assert capsys.readouterr().out.count("resnet18") == 3
