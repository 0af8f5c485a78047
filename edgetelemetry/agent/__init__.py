"""The agent: recorder windows -> durable spool -> delivery, every interval.

``agent`` (``Agent``: lifecycle and tick), ``delivery`` (the send cycle and its sink,
``HeartbeatSink``), ``clock`` (the one owner of the clock offset), ``state`` (the agent's small
durable state), ``spool`` (the on-disk spool), ``sender`` (``SendHeartbeat`` with our retries and
signing), ``credentials`` (every source of keys, built in one place), ``config``
(``AgentConfig``), and ``signals``, ``signing``, ``redact``, ``iot_names`` behind them.
"""

from __future__ import annotations

from .agent import Agent, AgentClosedError
from .config import AgentConfig, ConfigError
from .delivery import TickResult

__all__ = ["Agent", "AgentClosedError", "AgentConfig", "ConfigError", "TickResult"]
