"""The agent's half of a shared recorder's window hand-over: spool each window once, then ack.

The device's shared recorder returns a closed window again and again, also to the next agent
after a crash, until the agent acknowledges it (``SharedRecorder.ack``).  So the agent:

1. takes the pending window (``take``);
2. appends it to the spool, unless the spool has it already: spooled by this agent, which
   then failed to ack, or by the agent before it, killed between the append and the ack;
3. acknowledges it (``done``) - only then may the segment forget it.

A window's identity is (segment id, seq): its snapshot's source.  A window already spooled is
the spool's newest record for the heartbeat sink: every window is appended and acknowledged in
one step, before any send of the heartbeat sink, so the record cannot have been sent (and
acknowledged out of the spool) in between.  A failed append leaves the window in the segment,
where the next tick finds it (nothing is kept in memory or merged, as a private recorder's
window is).  A live producer holding the lock past the timeout makes a close give up: counted,
tried again at the next tick.
"""

from __future__ import annotations

import logging

from ..errors import LockTimeoutError, RecorderClosedError, SnapshotFormatError
from ..heartbeat.agent_metrics import SHARED_FIGURES
from ..recording import SharedRecorder
from ..snapshot import Snapshot
from .sink_config import HEARTBEAT_SINK
from .spool import Spool, SpoolClosedError

__all__ = ["WindowHandover"]

log = logging.getLogger(__name__)

WindowKey = tuple[str, int]  # (segment id, window seq)


def window_key(snap: Snapshot) -> WindowKey:
    src = snap.sources[-1]
    return src.recorder_id, src.seq_last


class WindowHandover:
    """Between one ``SharedRecorder`` and the agent's spool; the agent's window lock held."""

    def __init__(self, recorder: SharedRecorder, spool: Spool) -> None:
        self._recorder = recorder
        self._spool = spool
        self._spooled: WindowKey | None = None  # the last window this agent spooled
        self._spool_checked = False
        self._close_timeouts = 0
        self._found_spooled = 0

    def take(self) -> Snapshot | None:
        """The window to spool now, or None: the recorder is closed, or a live producer held
        the lock too long (try again next tick)."""
        for _ in range(2):
            try:
                snap = self._recorder.snapshot()
            except RecorderClosedError:
                return None
            except LockTimeoutError as exc:
                self._close_timeouts += 1
                log.warning("window close gave up, tried again at the next tick: %s", exc)
                return None
            key = window_key(snap)
            if not self._already_spooled(key):
                return snap
            self._found_spooled += 1
            log.info("window %d of segment %s is spooled already: acknowledged, not spooled "
                     "again", key[1], key[0])
            self._recorder.ack(key[1])  # and the next close makes the next window
        return None

    def done(self, snap: Snapshot) -> None:
        """``snap`` is spooled (or lost for good, too large for the spool): release it."""
        key = window_key(snap)
        self._spooled = key  # before the ack: an ack that fails is not followed by a resend
        self._recorder.ack(key[1])

    def figures(self) -> dict[str, float]:
        """The shared recorder's AgentMetrics (``SHARED_FIGURES``)."""
        try:
            info = self._recorder.shared_info()
        except RecorderClosedError:
            info = {}
        info["close_timeouts"] = self._close_timeouts
        info["found_spooled"] = self._found_spooled
        return {name: float(info[key]) for key, name in SHARED_FIGURES.items() if key in info}

    def _already_spooled(self, key: WindowKey) -> bool:
        if key == self._spooled:
            return True
        if self._spool_checked:
            return False
        # the first window this agent sees may be one its predecessor spooled and did not ack
        self._spool_checked = False
        try:
            newest = self._spool.newest(sink=HEARTBEAT_SINK)
        except SpoolClosedError:
            return False
        if newest is None:
            return False
        try:
            return window_key(Snapshot.from_msgpack(newest.payload)) == key
        except SnapshotFormatError:
            return False
