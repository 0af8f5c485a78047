"""Reading a request's head (request line and header fields, RFC 9112) for the embedded
server: ``http.server``'s reading of the request line, with header fields read here instead of
by the email package, which took a tenth of a worker's CPU."""

from __future__ import annotations

import re
from http.server import BaseHTTPRequestHandler

__all__ = ["HeadReadingHandler"]

# a request head's limits (as http.server's): a line of 64 KiB, 100 header fields
_MAX_LINE = 65536
_MAX_FIELDS = 100
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a token (RFC 9110 5.1)


class _Fields:
    """A request's header fields in arrival order, names as sent: what the handler and the app
    read of them (``http.server`` gives an ``email.message.Message`` instead)."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def get_all(self, name: str) -> list[str] | None:
        wanted = name.lower()
        found = [value for field, value in self._pairs if field.lower() == wanted]
        return found or None

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.get_all(name)
        return found[0] if found else default


class HeadReadingHandler(BaseHTTPRequestHandler):
    """``BaseHTTPRequestHandler`` whose ``parse_request`` reads the header fields itself."""

    raw_requestline: bytes  # read by the handler before it calls parse_request

    def parse_request(self) -> bool:
        """The request line and header fields (RFC 9112), as ``http.server`` reads them but for
        the fields: its parser (the email package's) took a tenth of a worker's CPU.  Field
        lines must be ``token ":" value``; an obsolete folded line or one without a colon is a
        400 (RFC 9112 5.2 lets a server refuse them), not the end of the head.  False when an
        answer was sent (or the line was blank)."""
        self.command = None  # type: ignore[assignment]  # http.server's own initial value
        self.request_version = version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            number = _http_version(version)
            if number is None:
                self.send_error(400, f"Bad request version ({version!r})")
                return False
            if number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(505, f"Invalid HTTP version ({version})")
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(400, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:  # HTTP/0.9: GET only, and the connection closes
            self.close_connection = True
            if command != "GET":
                self.send_error(400, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        if path.startswith("//"):  # never a scheme-relative URL: a path from the root
            path = "/" + path.lstrip("/")
        self.command, self.path = command, path
        pairs: list[tuple[str, str]] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(431, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            if len(pairs) == _MAX_FIELDS:
                self.send_error(431, "Too many headers")
                return False
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if not colon or _FIELD_NAME.fullmatch(name) is None:
                self.send_error(400, "Malformed header field")
                return False
            pairs.append((name, value.lstrip(" \t").rstrip("\r\n")))
        self.headers = _Fields(pairs)  # type: ignore[assignment]
        connection = (self.headers.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = (self.headers.get("Expect") or "").lower()
        if (expect == "100-continue" and self.protocol_version >= "HTTP/1.1"
                and self.request_version >= "HTTP/1.1"):
            return self.handle_expect_100()
        return True


def _http_version(text: str) -> tuple[int, int] | None:
    """``HTTP/1.1`` as (1, 1); None unless ``HTTP/`` and two runs of at most 10 ASCII digits."""
    if not text.startswith("HTTP/"):
        return None
    major, dot, minor = text[5:].partition(".")
    for part in (major, minor):
        if not (dot and part.isascii() and part.isdigit() and len(part) <= 10):
            return None
    return int(major), int(minor)
