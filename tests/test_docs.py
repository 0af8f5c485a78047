"""Every code block in README.md and docs/*.md that claims to run, runs (issue 12).

The rules a block follows (``test_every_block_says_what_it_is`` keeps them):

- it is fenced, never indented, and its info string starts with its kind: ``python``, ``sh``,
  ``json``, ``c``, ``cpp`` or ``text`` (output, a diagram, a file layout: never run);
- ``illustrative`` after the kind means shown, not run here: a command CI runs itself
  (``scripts/test.sh``, the demo), one for another machine, a synopsis with placeholders, a
  fragment.  C and C++ blocks are fragments (the complete programs in ``examples/`` are built
  and run by ``tests/test_native_sdk.py``);
- every other block runs, in document order, in a working directory of its own document:
  ``python`` is executed (the blocks of one document share their names, as a reader's session
  would) and edgetelemetry may log no WARNING meanwhile (a heartbeat that is not delivered
  is one); ``sh`` runs under ``bash -e -o pipefail`` and whatever it left in the background is
  ended after it; ``sh server`` must print "listening on" and is then stopped; ``json`` must
  parse.  ``file=NAME`` also writes the block to NAME in the working directory before the
  document's blocks run (a config file the text shows after the code that reads it);
  ``env=KEY=VALUE`` sets a variable for that block.

So an unmarked block that does not run fails here, and a doc cannot rot silently.

What the harness provides, which is what the docs tell a reader to set up:

- an endpoint, ``edgetelemetry serve`` (the real command) on a free loopback port, with the
  README's ``keys.json`` (``AKIDFLEETLINE1``) and registry (``line-1``: ``cam-1``, ``cam-2``);
- the device's side: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` set to that key,
  ``AWS_DEFAULT_REGION=us-east-1``, ``EDGETELEMETRY_SPOOL_DIR`` in the working directory;
- these substitutions in a block's text before it runs: ``127.0.0.1:8080`` is the endpoint
  above; ``--port 8080`` is a free port (a block's own server); ``--host 0.0.0.0`` is
  ``--host 127.0.0.1`` (tests listen on loopback only); ``PREFIX=/usr/local`` and
  ``/var/lib/edgetelemetry`` are directories in the working directory (with
  ``PKG_CONFIG_PATH`` and ``LD_LIBRARY_PATH`` pointing there): nothing is installed on the
  machine;
- ``csrc``, ``examples`` and ``scripts`` links in the working directory, for commands run from
  the top of a checkout;
- in python blocks, stand-ins for what the docs leave to the reader: ``run_inference``,
  ``inputs``, ``scores`` (the README's model and data), ``my_engine`` (a native extension),
  ``snapshot_bytes``, ``send``, ``NonRetryable`` (the spool's caller).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = ("python", "sh", "json", "c", "cpp", "text")
RUN = ("python", "sh", "json")
KEY_ID, SECRET = "AKIDFLEETLINE1", "a-long-random-secret"
REGISTRY = {"fleets": [{"name": "line-1", "devices": ["cam-1", "cam-2"]}]}
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based, of the opening fence
    fenced: bool
    info: str
    text: str

    @property
    def name(self) -> str:
        where = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc
        return f"{where}:{self.line}"

    @property
    def kind(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def marks(self) -> list[str]:
        return self.info.split()[1:]

    @property
    def illustrative(self) -> bool:
        return "illustrative" in self.marks

    def mark(self, key: str) -> str | None:
        for mark in self.marks:
            if mark.startswith(key + "="):
                return mark[len(key) + 1 :]
        return None


def read_blocks(doc: Path) -> list[Block]:
    out = []
    for token in MarkdownIt("commonmark").parse(doc.read_text()):
        if token.type in ("fence", "code_block") and token.map is not None:
            out.append(Block(doc, token.map[0] + 1, token.type == "fence", token.info.strip(),
                             token.content))
    return out


ALL = [b for doc in DOCS for b in read_blocks(doc)]
RUNNABLE = [b for b in ALL if b.kind in RUN and not b.illustrative]


def test_every_block_says_what_it_is() -> None:
    problems = []
    for b in ALL:
        if not b.fenced:
            problems.append(f"{b.name}: an indented code block; fence it and say what it is "
                            f"(```{'|'.join(KINDS)}, or ```sh illustrative)")
        elif b.kind not in KINDS:
            problems.append(f"{b.name}: info string {b.info!r}; start it with one of {KINDS}")
        elif b.kind in ("c", "cpp") and not b.illustrative:
            problems.append(f"{b.name}: C/C++ blocks are fragments here; mark it "
                            "```c illustrative and build the program in a test")
    assert not problems, "\n".join(problems)
    counts: dict[str, int] = {}
    for b in ALL:
        key = "text" if b.kind == "text" else ("illustrative" if b.illustrative else b.kind)
        counts[key] = counts.get(key, 0) + 1
    print(f"{len(ALL)} blocks in {len(DOCS)} files: {counts}")
    assert len(RUNNABLE) >= 20, "the harness runs almost nothing: the test proves nothing"


def test_the_rules_catch_what_they_are_for(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("text\n\n    indented\n\n```\nno kind\n```\n\n```sh illustrative\nx\n```\n")
    indented, unnamed, marked = read_blocks(doc)
    assert not indented.fenced and unnamed.kind == "" and marked.illustrative
    with pytest.raises(subprocess.CalledProcessError):
        _run_sh(Block(doc, 1, True, "sh", "false\n"),
                _Context(tmp_path, {"ENDPOINT": "127.0.0.1:9", "PATH": os.environ["PATH"]}, {}))


# -- the setting the docs describe -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(path: Path, words: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if words in text:
            return text
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"never printed {words!r}: {path.read_text() if path.exists() else ''}")


@pytest.fixture(scope="module", name="endpoint")
def endpoint_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``edgetelemetry serve`` as the README starts it; yields its ``host:port``."""
    work = tmp_path_factory.mktemp("endpoint")
    keys = work / "keys.json"
    keys.write_text(json.dumps({KEY_ID: SECRET}))
    keys.chmod(0o600)
    (work / "registry.json").write_text(json.dumps(REGISTRY))
    log = work / "serve.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "edgetelemetry"), "serve", "--store", str(work / "fleet.sqlite3"),
             "--credentials-file", str(keys), "--registry", str(work / "registry.json"),
             "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        text = _wait_for(log, "listening on http://", proc, 30)
        yield text.split("listening on http://", 1)[1].split()[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@dataclass
class _Context:
    """One document's run: its working directory, environment and python names."""

    work: Path
    env: dict[str, str]
    names: dict[str, Any]
    done: list[Block] = field(default_factory=list)
    failed: str | None = None


_CONTEXTS: dict[Path, _Context] = {}


def _prelude() -> dict[str, Any]:
    import numpy as np

    from edgetelemetry import Recorder

    rng = np.random.default_rng(0)

    def run_inference(x: Any = None) -> Any:
        return np.tanh(x[:64]) if x is not None else np.zeros(1)

    class Engine:
        """A native extension's stand-in: it takes the handle as two addresses."""

        def attach_telemetry(self, api: int, recorder: int) -> None:
            assert isinstance(api, int) and isinstance(recorder, int) and api and recorder

    with Recorder() as rec:
        rec.histogram("latency", unit="ms", model="resnet18", version="1.0").record(3.2)
        snapshot_bytes = rec.snapshot().to_msgpack()

    class NonRetryable(Exception):
        pass

    sent: list[bytes] = []
    return {"run_inference": run_inference, "my_engine": Engine(),
            "inputs": [rng.random(3 * 32 * 32, dtype=np.float32) for _ in range(50)],
            "scores": rng.random(5000), "snapshot_bytes": snapshot_bytes,
            "send": sent.append, "NonRetryable": NonRetryable, "__name__": "__doc__"}


def _context(doc: Path, endpoint: str, factory: pytest.TempPathFactory) -> _Context:
    if doc not in _CONTEXTS:
        work = factory.mktemp(doc.stem)
        for name in ("csrc", "examples", "scripts"):
            (work / name).symlink_to(ROOT / name)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("EDGETELEMETRY_", "AWS_"))}
        env.update({
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(work / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
            "EDGETELEMETRY_SPOOL_DIR": str(work / "spool"),
            "PKG_CONFIG_PATH": str(work / "prefix" / "lib" / "pkgconfig"),
            "LD_LIBRARY_PATH": str(work / "prefix" / "lib"),
            "ENDPOINT": endpoint,
        })
        for block in (b for b in ALL if b.doc == doc and b.mark("file")):
            (work / str(block.mark("file"))).write_text(block.text)
        _CONTEXTS[doc] = _Context(work, env, _prelude())
    return _CONTEXTS[doc]


def _substituted(text: str, ctx: _Context) -> str:
    for old, new in (("--host 0.0.0.0", "--host 127.0.0.1"),
                     ("--port 8080", f"--port {_free_port()}"),
                     ("127.0.0.1:8080", ctx.env["ENDPOINT"]),
                     ("PREFIX=/usr/local", f"PREFIX={ctx.work / 'prefix'}"),
                     ("/var/lib/edgetelemetry", str(ctx.work / "var" / "lib" / "edgetelemetry"))):
        text = text.replace(old, new)
    return text


def _run_python(block: Block, ctx: _Context, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("EDGETELEMETRY_", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in ctx.env.items():
        monkeypatch.setenv(key, value)
    extra = block.mark("env")
    if extra is not None:
        key, _, value = extra.partition("=")
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ctx.work)
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(f"{record.name}: {record.getMessage()}")

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("edgetelemetry")
    logger.addHandler(handler)
    try:
        exec(compile(_substituted(block.text, ctx), block.name, "exec"), ctx.names)
    finally:
        logger.removeHandler(handler)
    assert not warnings, f"{block.name} logged: {warnings}"


def _run_sh(block: Block, ctx: _Context) -> None:
    env = dict(ctx.env)
    extra = block.mark("env")
    if extra is not None:
        key, _, value = extra.partition("=")
        env[key] = value
    log = ctx.work / f"sh-{block.line}.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c",
                                 _substituted(block.text, ctx)],
                                cwd=ctx.work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        if "server" in block.marks:
            _wait_for(log, "listening on", proc, 60)
            return
        code = proc.wait(timeout=300)
        if code != 0:
            raise subprocess.CalledProcessError(code, block.name, log.read_text())
    finally:
        try:  # end what it left running (a server in the background), and itself
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def _run(block: Block, ctx: _Context, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.kind == "python":
        _run_python(block, ctx, monkeypatch)
    elif block.kind == "sh":
        _run_sh(block, ctx)
    else:
        json.loads(block.text)


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_block_runs(block: Block, endpoint: str, tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(block.doc, endpoint, tmp_path_factory)
    # the blocks before it in its document first (they set up what it reads), once each
    for earlier in [b for b in RUNNABLE if b.doc == block.doc and b.line < block.line]:
        if earlier not in ctx.done:
            assert ctx.failed is None, f"an earlier block of {block.doc.name} failed"
            try:
                _run(earlier, ctx, monkeypatch)
            except BaseException:
                ctx.failed = earlier.name
                raise
            ctx.done.append(earlier)
    try:
        _run(block, ctx, monkeypatch)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{block.name} exited {exc.returncode}:\n{exc.output}")
    finally:
        ctx.done.append(block)


def test_the_c_examples_register_names_python_accepts() -> None:
    """A C series reports under the same rules (a C and a Python recorder can be one), so the
    examples and the docs must not teach a name the heartbeat refuses (``latency_ms`` was)."""
    import re

    from edgetelemetry.recording.naming import check_series_names

    calls = re.compile(r'(?:et_series_add\(\s*\w+|\.series\()\s*,?\s*"([^"]+)",\s*"([^"]+)",\s*'
                       r'"([^"]+)"')
    found = []
    for path in [ROOT / "examples" / "infer_loop.c", ROOT / "examples" / "infer_loop.cpp",
                 ROOT / "docs" / "native-sdk.md", ROOT / "tests" / "native_ext" /
                 "et_native_ext.c"]:
        for model, version, metric in calls.findall(path.read_text()):
            found.append((path.name, model, version, metric))
            check_series_names(model, version, metric, None, None)
    assert len(found) >= 4, found
