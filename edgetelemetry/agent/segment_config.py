"""The settings of the device agent's shared recorder (``edgetelemetry agent``): the segment
file every process of the device attaches to, who may attach, and its sizes.

Flat keys beside the others in ``AgentConfig``; an in-process ``Agent`` (over a private
``Recorder``) ignores them.  Changing one of them needs an agent restart (the segment is made
with them); ``edgetelemetry agent`` says so on SIGHUP.  Every key is in
``docs/configuration.md``.
"""

from __future__ import annotations

import grp
import os
import re
from collections.abc import Mapping
from typing import Any

from .config_rules import Key, RuleError, boolean, number, path

__all__ = [
    "SEGMENT_FILE",
    "SEGMENT_KEYS",
    "SEGMENT_PATH_KEYS",
    "default_segment_path",
    "segment_gid",
    "segment_problems",
    "segment_sizes",
]

SEGMENT_FILE = "recorder"  # the file's name in the runtime directory
_GROUP = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$|^[0-9]{1,10}$")


def default_segment_path(environ: Mapping[str, str] | None = None) -> str:
    """``$RUNTIME_DIRECTORY/recorder`` under systemd (``RuntimeDirectory=edgetelemetry``; the
    first directory when it names several), else ``/run/edgetelemetry/recorder``."""
    env = os.environ if environ is None else environ
    runtime = (env.get("RUNTIME_DIRECTORY") or "").split(":")[0]
    return os.path.join(runtime or "/run/edgetelemetry", SEGMENT_FILE)


def group(raw: Any, from_text: bool) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        raw = str(raw)
    if not isinstance(raw, str) or not _GROUP.match(raw):
        raise RuleError("must be a group name (e.g. 'edgetelemetry') or a numeric gid")
    return raw


def mode(raw: Any, from_text: bool) -> int:
    """Octal text ("0660") or an int; owner read-write, group at most read-write, others
    nothing (others must never write into every producer's memory)."""
    rule = "must be an octal mode such as \"0660\" or \"0600\" (others get no access)"
    if isinstance(raw, str):
        try:
            raw = int(raw.strip(), 8)
        except ValueError:
            raise RuleError(rule) from None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw & ~0o660 or raw & 0o600 != 0o600:
        raise RuleError(rule)
    return raw


SEGMENT_KEYS: dict[str, Key] = {
    "segment_path": Key(path, "the shared recorder's file (default: $RUNTIME_DIRECTORY/recorder "
                        "or /run/edgetelemetry/recorder)"),
    "segment_group": Key(group, "the producers' group: may attach (default: the agent's)"),
    "segment_mode": Key(mode, "the file's mode (0660)"),
    "segment_replace": Key(boolean, "replace a segment of other sizes or another version "
                           "(after spooling what it holds, when it can be read)"),
    "max_processes": Key(number(1, 4096, integer=True), "processes attached at once"),
    "max_series": Key(number(1, 65536, integer=True), "series of the whole device"),
    "max_threads": Key(number(1, 1024, integer=True),
                       "recording threads with a ring of their own, all processes together"),
    "ring_capacity": Key(number(64, 1 << 24, integer=True), "records per ring (a power of 2)"),
    "buckets_per_octave": Key(number(8, 255, integer=True), "histogram accuracy (36: < 1%)"),
    "names_bytes": Key(number(16, 64 << 20, integer=True), "series names' room (bytes)"),
    "histogram_pages": Key(number(1, 1 << 24, integer=True), "histogram pages per window"),
    "lock_timeout_s": Key(number(0.001, 60), "the agent's longest wait on a producer's lock"),
}
SEGMENT_PATH_KEYS = ("segment_path",)
# the sizes, as SharedRecorder.create takes them
_SIZE_KEYS = ("max_series", "max_threads", "ring_capacity", "buckets_per_octave",
              "names_bytes", "histogram_pages")


def segment_problems(values: Mapping[str, Any]) -> list[str]:
    """What is wrong between the segment keys of a resolved config (empty if nothing)."""
    ring = values.get("ring_capacity")
    if ring is not None and ring & (ring - 1):
        return [f"ring_capacity must be a power of two, got {ring}"]
    return []


def segment_sizes(values: Mapping[str, Any]) -> dict[str, Any]:
    """``SharedRecorder.create``'s size arguments from a resolved config (None: its default)."""
    return {key: values[key] for key in _SIZE_KEYS if values.get(key) is not None}


def segment_gid(name: str | None) -> int | None:
    """The gid of ``segment_group`` (None: the agent's own); ``LookupError`` if unknown."""
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise LookupError(f"segment_group {name!r}: no such group on this system (create it "
                          "with groupadd, and add the producers' users to it)") from None
