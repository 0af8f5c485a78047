"""The agent's small durable state: per-model times and deployment results not yet delivered.

Kept in ``<spool_dir>/agent-state.json`` beside the spool (whose directory lock already makes
one process its owner).  Written like the spool's cursor: a header line
``edgetelemetry-agent-state 1 <crc32 of body>`` and a JSON body, replaced atomically (temp file,
fsync, rename, fsync of the directory; mode 0600), so a crash leaves the old or the new state.
A damaged file never stops the agent: it is moved to ``quarantine/``, counted and the agent
starts from an empty state (it loses the remembered times, never telemetry: that is in the
spool).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from .._fs import PrivateDir
from ..heartbeat import ModelState

__all__ = ["STATE_FILE", "AgentState", "StateFile"]

log = logging.getLogger(__name__)

STATE_FILE = "agent-state.json"
_TAG = b"edgetelemetry-agent-state 1"
_MAX_BYTES = 4 << 20  # far above what the bounds below allow; refuse to read anything larger


@dataclass
class AgentState:
    """``models``: (model, version) -> times (wall ns, trusted clock only).
    ``deployments``: DeploymentResult mappings (timestamps as epoch seconds) oldest first,
    each kept until a heartbeat carrying it is acknowledged.  ``raw_frame_upto``: the last
    spool seq appended while the spool ran on an unset wall clock (see ``Agent``)."""

    models: dict[tuple[str, str], ModelState] = field(default_factory=dict)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    raw_frame_upto: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [
                [name, version, st.latest_inference_ns, st.latest_sample_ns]
                for (name, version), st in sorted(self.models.items())
            ],
            "deployments": self.deployments,
            "raw_frame_upto": self.raw_frame_upto,
        }

    @classmethod
    def from_json(cls, doc: Any) -> AgentState:
        if not isinstance(doc, dict):
            raise ValueError("state is not an object")
        models: dict[tuple[str, str], ModelState] = {}
        for entry in doc.get("models", []):
            if not (isinstance(entry, list) and len(entry) == 4
                    and all(isinstance(v, str) for v in entry[:2])
                    and all(v is None or (isinstance(v, int) and not isinstance(v, bool))
                            for v in entry[2:])):
                raise ValueError(f"bad model entry {entry!r:.80}")
            models[(entry[0], entry[1])] = ModelState(entry[2], entry[3])
        deployments = doc.get("deployments", [])
        if not isinstance(deployments, list) or not all(isinstance(d, dict) for d in deployments):
            raise ValueError("deployments must be a list of objects")
        upto = doc.get("raw_frame_upto")
        if upto is not None and (not isinstance(upto, int) or isinstance(upto, bool)):
            raise ValueError("raw_frame_upto must be an int or null")
        return cls(models, deployments, upto)


class _NotOurs(OSError):
    """A state file (or its directory) that is not what it should be: never read or written."""


class StateFile:
    """Load and atomically replace the state file in ``directory`` (the spool's private
    directory): never through a symlink, never a FIFO or a file of another user."""

    def __init__(self, directory: str, *, fsync: bool = True) -> None:
        self.path = os.path.join(directory, STATE_FILE)
        self._dir = directory
        self._fsync = fsync
        self.corruption_events = 0

    def _open_dir(self) -> PrivateDir | None:
        return PrivateDir.open(self._dir, error=_NotOurs, what="the spool directory",
                               create=False)

    def load(self) -> AgentState:
        try:
            directory = self._open_dir()
        except _NotOurs:
            return AgentState()  # the spool refuses the directory, saying why, when it opens
        if directory is None:
            return AgentState()
        with directory:
            try:
                raw = directory.read(STATE_FILE, _MAX_BYTES + 1)
            except FileNotFoundError:
                return AgentState()
            except OSError as exc:  # not a regular file of ours, or unreadable
                self._set_aside(directory, str(exc) if isinstance(exc, _NotOurs)
                                else f"unreadable ({exc.strerror})")
                return AgentState()
            try:
                if len(raw) > _MAX_BYTES:
                    raise ValueError("too large")
                head, sep, body = raw.partition(b"\n")
                tag, _, crc = head.rpartition(b" ")
                if not sep or tag != _TAG or int(crc, 16) != zlib.crc32(body):
                    raise ValueError("bad header or checksum")
                return AgentState.from_json(json.loads(body))
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                self._set_aside(directory, str(exc))
                return AgentState()

    def save(self, state: AgentState) -> None:
        """Replace the file; raises ``OSError`` if it could not be written (the old one stays)."""
        body = json.dumps(state.to_json(), sort_keys=True, separators=(",", ":")).encode()
        data = b"%s %08x\n%s" % (_TAG, zlib.crc32(body), body)
        directory = self._open_dir()
        if directory is None:
            raise FileNotFoundError(errno.ENOENT, "the spool directory is gone", self._dir)
        # the temp file is <name>.tmp: the spool deletes leftovers when it opens
        with directory:
            directory.replace(STATE_FILE, data, fsync=self._fsync)

    def _set_aside(self, directory: PrivateDir, why: str) -> None:
        self.corruption_events += 1
        target = f"q-{time.time_ns():020d}-{STATE_FILE}.bad"
        try:
            quarantine = directory.child("quarantine", what="the spool's quarantine directory")
            assert quarantine is not None
            with quarantine:
                directory.rename(STATE_FILE, target, quarantine)
            log.error("agent state %s is damaged (%s); moved to quarantine/%s, starting empty",
                      self.path, why, target)
        except OSError as exc:
            log.error("agent state %s is damaged (%s) and could not be moved aside (%s); "
                      "starting empty", self.path, why, exc)
