"""The package's version: one place, read by ``edgetelemetry.__version__`` and the heartbeat's
``AgentVersion`` (``pyproject.toml`` holds the same string; a test compares them)."""

__version__ = "0.1.0"
