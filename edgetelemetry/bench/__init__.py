"""``edgetelemetry bench``: what telemetry costs on this machine (see ``command.py``).

Also ``python -m edgetelemetry.bench``.  The rooms: ``command`` (the command and its table),
``measure`` (timing and the figures), ``stats`` (statistics), ``inference`` (the inference
loops), ``plot`` (the chart), ``loops`` (C loops in their own cffi module, ``_loops``).
This package uses only edgetelemetry's public names.
"""

from __future__ import annotations

from .command import SCHEMA, format_table, main, run

__all__ = ["SCHEMA", "format_table", "main", "run"]
