"""``edgetelemetry agent --config agent.json``: one agent per device, for every process on it.

The agent owns the device's shared recorder (``SharedRecorder``: a segment file under
``/run/edgetelemetry/``) that every inference process attaches to - ``Recorder.attach`` in
Python, ``et_recorder_attach`` in C/C++ - and runs the ``Agent`` (spool, sender, sinks,
cursors, retries) over it.  What it does, in order:

1. ``faulthandler`` first: the segment's SIGBUS guard must chain to it, not the other way round;
2. the configuration (``AgentConfig``: the file, ``EDGETELEMETRY_*``); a bad one exits 2;
3. the segment: its directory made if missing (0750, the producers' group), then created, or
   opened and recovered (a window closed and not acknowledged by the agent before is picked
   up; dead producers reaped).  A truncated one is replaced and reported.  One of other sizes
   or another version is refused (exit 2) unless ``segment_replace``: then what it holds is
   spooled first when it can be read;
4. the Agent ticks: each window spooled once by (segment id, seq), then acknowledged;
   ``READY=1`` to systemd;
5. SIGHUP reloads the delivery settings (endpoint, credentials, interval, sinks, log level...):
   the running Agent spools its window and hands over to a new one.  The segment's keys and
   ``spool_dir`` need a restart, which the log says;
6. SIGTERM (or SIGINT): ``STOPPING=1``, the last window spooled and acknowledged, one last send,
   exit 0.  The segment stays (systemd's ``RuntimeDirectoryPreserve=yes``): producers keep
   recording while the agent restarts, and the next agent picks the state up.

Every second the main loop also replaces a segment truncated under it (instead of at the next
tick) and refreshes systemd's STATUS line.  Logs: one line per event on stderr (service.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from .._native import segment_info
from ..errors import (
    LayoutMismatchError,
    NotASegmentError,
    SegmentConfigError,
    SharedRecorderError,
)
from ..recording import SharedRecorder
from .agent import Agent
from .config import AgentConfig, ConfigError
from .segment_config import SEGMENT_KEYS, segment_gid, segment_sizes
from .service import journal_logging, notify, set_verbose

__all__ = ["EXIT_CONFIG", "DeviceAgent", "check_options", "main", "parser"]

log = logging.getLogger(__name__)

EXIT_CONFIG = 2  # a configuration that cannot work: restarting will not help
# what a reload cannot change: the segment is made with these, the spool is open in this one
RESTART_KEYS = (*SEGMENT_KEYS, "spool_dir")
_STOP_TIMEOUT_S = 10.0  # the last window and send, well inside systemd's TimeoutStopSec


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgetelemetry agent",
        description="Run the device agent: it owns the shared recorder every process of this "
                    "device records into (Recorder.attach / et_recorder_attach), and sends its "
                    "windows as heartbeats through a durable spool.  Runs until SIGTERM; "
                    "SIGHUP reloads the delivery settings.",
        epilog="Settings: the JSON file, EDGETELEMETRY_* variables (docs/configuration.md).  "
               "The systemd unit is contrib/systemd/edgetelemetry-agent.service; docs/agent.md "
               "describes the daemon.")
    p.add_argument("--config", metavar="FILE",
                   help="the agent's JSON configuration (default: $EDGETELEMETRY_CONFIG)")
    p.add_argument("--check", action="store_true",
                   help="check the configuration and the segment's group, print the settings "
                        "that matter here, and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return p


def check_options(args: argparse.Namespace) -> tuple[AgentConfig, int | None]:
    """The configuration the arguments name, and the segment's gid; ``ConfigError`` (or
    ``LookupError`` for an unknown group) says what is wrong."""
    if args.config is not None and not os.path.isfile(args.config):
        raise ConfigError(f"--config {args.config}: no such file")
    config = AgentConfig.load(args.config)
    return config, segment_gid(config.segment_group)


def main(argv: Sequence[str] | None = None) -> int:
    faulthandler.enable()  # before the segment: the SIGBUS guard chains to faulthandler
    args = parser().parse_args(argv)
    journal_logging(verbose=args.verbose)
    try:
        config, gid = check_options(args)
    except (ConfigError, LookupError) as exc:
        log.critical("%s", exc)
        return EXIT_CONFIG
    if args.verbose or config.log_verbose:
        set_verbose(True)
    if args.check:
        group = config.segment_group or "the agent's own"
        print(f"configuration ok: device {config.device_name} (fleet {config.fleet_name}) -> "
              f"{config.endpoint_url}; segment {config.segment_path} (mode "
              f"{config.segment_mode:04o}, group {group}, {config.max_processes} processes); "
              f"spool {config.spool_dir}")
        return 0
    return DeviceAgent(args, config, gid).run()


class DeviceAgent:
    """The daemon's state: the configuration, the shared recorder, the running Agent."""

    def __init__(self, args: argparse.Namespace, config: AgentConfig, gid: int | None) -> None:
        self._args = args
        self.config = config
        self._gid = gid
        self._stop = threading.Event()
        self._reload = False
        self.recorder: SharedRecorder | None = None
        self.agent: Agent | None = None

    # -- the life ------------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self.recorder = self._open_segment()
        except (SegmentConfigError, LayoutMismatchError, NotASegmentError) as exc:
            log.critical("%s", exc)
            return EXIT_CONFIG
        except (SharedRecorderError, OSError) as exc:
            log.critical("cannot open the shared recorder: %s", exc)
            return 1
        try:
            self.agent = Agent(self.recorder, config=self.config).start()
        except Exception as exc:
            log.critical("cannot start the agent: %s", exc)
            self.recorder.close()
            return EXIT_CONFIG if isinstance(exc, ConfigError) else 1
        log.info("ready: segment %s (id %s), %s", self.config.segment_path,
                 self.recorder.recorder_id, self._status())
        notify(f"READY=1\nSTATUS={self._status()}")
        last_status = time.monotonic()
        while not self._stop.wait(1.0):
            if self._reload:
                self._reload = False
                self._reload_config()
            try:
                self.recorder.renew_if_truncated()
            except (SharedRecorderError, OSError) as exc:
                log.error("could not replace a truncated segment (tried again): %s", exc)
            if time.monotonic() - last_status >= 10:
                notify(f"STATUS={self._status()}")
                last_status = time.monotonic()
        notify("STOPPING=1")
        log.info("stopping: spooling the last window")
        self.agent.close(timeout=_STOP_TIMEOUT_S)
        self.recorder.close()
        log.info("stopped; the segment stays at %s for the next agent", self.config.segment_path)
        return 0

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            log.warning("%s again: already stopping", signal.Signals(signum).name)
        self._stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True

    def _status(self) -> str:
        assert self.recorder is not None
        try:
            info = self.recorder.shared_info()
        except (SharedRecorderError, OSError):
            return "segment unreadable"
        return (f"{info['processes']} of {info['max_processes']} process slots in use, "
                f"generation {info['generation']}")

    # -- the segment ---------------------------------------------------------------------------

    def _open_segment(self) -> SharedRecorder:
        self._prepare_directory()
        try:
            return self._create(replace=False)
        except SegmentConfigError:
            if not self.config.segment_replace:
                raise
            self._drain_old_segment()
        except LayoutMismatchError as exc:
            if not self.config.segment_replace:
                raise
            log.error("%s; segment_replace is set: replacing it (what it held is lost: this "
                      "version cannot read it)", exc)
        return self._create(replace=True)

    def _create(self, replace: bool) -> SharedRecorder:
        c = self.config
        return SharedRecorder.create(
            c.segment_path, **segment_sizes(dataclasses.asdict(c)), mode=c.segment_mode,
            gid=self._gid, max_processes=c.max_processes, lock_timeout=c.lock_timeout_s,
            replace=replace)

    def _prepare_directory(self) -> None:
        """Make the segment's directory when it is missing (systemd's RuntimeDirectory= makes
        it under the unit): 0750, the producers' group.  An existing one is left as it is,
        with a warning if others may enter it."""
        directory = os.path.dirname(os.path.abspath(self.config.segment_path))
        try:
            mode = stat.S_IMODE(os.stat(directory).st_mode)
        except FileNotFoundError:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            if self._gid is not None:
                os.chown(directory, -1, self._gid)
            os.chmod(directory, 0o750)  # not the umask's
            log.info("made the segment's directory %s (0750)", directory)
            return
        if mode & 0o007:
            log.warning("the segment's directory %s is open to others (mode %04o): keep it to "
                        "the agent's user and the producers' group (0750)", directory, mode)

    def _drain_old_segment(self) -> None:
        """segment_replace over a segment of other sizes: open it with its own, spool what it
        holds (its pending window, then what producers recorded since), then let it go."""
        info = segment_info(self.config.segment_path)
        old_sizes: dict[str, Any] = dict(info.get("config") or {})
        for key in ("min_exponent", "octaves"):  # fixed by the core, not settings
            old_sizes.pop(key, None)
        log.warning("the segment %s has other sizes than configured (%s): spooling what it "
                    "holds, then replacing it; producers attached to it must attach again",
                    self.config.segment_path, old_sizes)
        old = SharedRecorder.create(
            self.config.segment_path, **old_sizes, mode=self.config.segment_mode,
            gid=self._gid, max_processes=int(info.get("max_processes") or 64),
            lock_timeout=self.config.lock_timeout_s)
        try:
            agent = Agent(old, config=self.config)
            agent.tick(send=False)  # the pending window, if any
            agent.tick(send=False)  # what was recorded since
            agent.close(timeout=_STOP_TIMEOUT_S)
        finally:
            old.close()

    # -- reload --------------------------------------------------------------------------------

    def _reload_config(self) -> None:
        assert self.agent is not None and self.recorder is not None
        notify("RELOADING=1")
        try:
            try:
                new, _ = check_options(self._args)
            except (ConfigError, LookupError) as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
                return
            fixed = [k for k in RESTART_KEYS if getattr(new, k) != getattr(self.config, k)]
            if fixed:
                log.warning("reload: %s change only with a restart (systemctl restart "
                            "edgetelemetry-agent); the running values stay", ", ".join(fixed))
                new = dataclasses.replace(new, **{k: getattr(self.config, k) for k in fixed})
            set_verbose(self._args.verbose or new.log_verbose)
            if new == self.config:
                log.info("reload: nothing else changed")
                return
            changed = [f.name for f in dataclasses.fields(new)
                       if getattr(new, f.name) != getattr(self.config, f.name)]
            self.agent.close(timeout=_STOP_TIMEOUT_S)  # its window spooled and acknowledged
            try:
                self.agent = Agent(self.recorder, config=new).start()
                self.config = new
                log.info("reloaded: %s", ", ".join(changed))
            except Exception as exc:
                log.error("reload failed (%s); the running configuration stays", exc)
                self.agent = Agent(self.recorder, config=self.config).start()
        finally:
            notify("READY=1")
