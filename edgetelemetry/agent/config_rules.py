"""The rules a configuration value is checked against: each takes the raw value and whether it
came from text (an environment variable), returns the value to use, or raises ``RuleError``
saying what would pass.  ``config`` and ``sink_config`` build their key tables from these."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

__all__ = [
    "Key",
    "Rule",
    "RuleError",
    "boolean",
    "choice",
    "text_value",
    "name_rule",
    "number",
    "path",
    "secret",
    "string",
    "url",
    "NAME_PATTERN",
]

# The service's rule for DeviceName and DeviceFleetName (botocore's model, the contract).
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*_*[a-zA-Z0-9])*$")

# (raw, from_text) -> value, raises RuleError.  from_text: the value came from an environment
# variable, so "30" and "true" are read as a number and a bool; JSON and Python values must
# already have the right type.
Rule = Callable[[Any, bool], Any]


class RuleError(Exception):
    """A value breaks its key's rule; ``rule`` says what would pass."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


def text_value(value: Any, kind: str) -> Any:
    """Environment variables (and the original agent's file) give text; read it as ``kind``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise RuleError("must be true or false (1/0, yes/no, on/off)")
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        raise RuleError(f"must be {'an integer' if kind == 'int' else 'a number'}") from None


def number(lo: float, hi: float, *, integer: bool = False, lo_open: bool = False) -> Rule:
    lo_text = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
    what = "an integer" if integer else "a number"
    rule = f"must be {what} {lo_text} and at most {hi:g}"

    def check(raw: Any, from_text: bool) -> Any:
        value = text_value(raw, "int" if integer else "float") if from_text else raw
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RuleError(rule)
        if integer and (not isinstance(value, int) and not float(value).is_integer()):
            raise RuleError(rule)
        if isinstance(value, float) and not math.isfinite(value):
            raise RuleError(rule)
        if (value <= lo if lo_open else value < lo) or value > hi:
            raise RuleError(rule)
        return int(value) if integer else float(value)

    return check


def boolean(raw: Any, from_text: bool) -> bool:
    value = text_value(raw, "bool") if from_text else raw
    if not isinstance(value, bool):
        raise RuleError("must be true or false")
    return value


def string(pattern: re.Pattern[str] | None = None, rule: str = "",
            max_len: int = 4096) -> Rule:
    def check(raw: Any, from_text: bool) -> Any:
        if not isinstance(raw, str) or not raw or len(raw) > max_len:
            raise RuleError(f"must be a non-empty string of at most {max_len} characters")
        if pattern is not None and not pattern.match(raw):
            raise RuleError(rule)
        return raw

    return check


def choice(options: tuple[str, ...]) -> Rule:
    def check(raw: Any, from_text: bool) -> Any:
        if raw not in options:
            raise RuleError(f"must be one of {', '.join(repr(o) for o in options)}")
        return raw

    return check


def name_rule(raw: Any, from_text: bool) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw) <= 63 or not NAME_PATTERN.match(raw):
        raise RuleError("must be 1-63 characters matching ^[a-zA-Z0-9](-*_*[a-zA-Z0-9])*$ "
                   "(letters and digits, single '-'/'_' runs between them, e.g. 'cam-01')")
    return raw


def url(raw: Any, from_text: bool) -> str:
    if not isinstance(raw, str):
        raise RuleError("must be an http:// or https:// URL")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuleError("must be an http:// or https:// URL with a host, e.g. https://edge.example.com")
    if parts.username or parts.password:
        raise RuleError("must not contain a user or password (use the credentials settings)")
    if parts.query or parts.fragment:
        raise RuleError("must not have a query or fragment")
    return raw


def path(raw: Any, from_text: bool) -> str:
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) or not raw or "\0" in raw:
        raise RuleError("must be a non-empty path")
    return os.path.expanduser(raw)


def secret(raw: Any, from_text: bool) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > 4096 or raw != raw.strip():
        raise RuleError("must be a non-empty string without surrounding spaces")
    return raw


@dataclass(frozen=True)
class Key:
    rule: Rule
    doc: str
