"""The nginx front of ``contrib/nginx/edgetelemetry.conf``, run by the team's nginx fixture
machinery (``realservices.NginxProxy``): the shipped file itself, with only its listen address,
upstream lines and certificate paths replaced, so the tests exercise what operators install."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realservices import NginxProxy, start_or_fail

CONTRIB = Path(__file__).resolve().parents[1] / "contrib" / "nginx" / "edgetelemetry.conf"
_UPSTREAM = "    server 127.0.0.1:8080 max_fails=1 fail_timeout=2s;\n"
_LISTEN = "    listen 443 ssl;\n"
_CERT = "    ssl_certificate /etc/edgetelemetry/tls/server.crt;\n"
_KEY = "    ssl_certificate_key /etc/edgetelemetry/tls/server.key;\n"
_PROTOCOLS = "    ssl_protocols TLSv1.2 TLSv1.3;\n"


def render(upstreams: Sequence[str], listen: str, folder: Path | None) -> str:
    """The contrib file for these upstreams and listen address; TLS when ``folder`` holds
    server.crt and server.key."""
    text = CONTRIB.read_text()
    for line in (_UPSTREAM, _LISTEN, _CERT, _KEY, _PROTOCOLS):
        assert text.count(line) == 1, f"{CONTRIB} changed: {line.strip()!r} is not there once"
    servers = "".join(_UPSTREAM.replace("127.0.0.1:8080", u) for u in upstreams)
    text = text.replace(_UPSTREAM, servers)
    if folder is None:
        text = text.replace(_LISTEN, f"    listen {listen};\n")
        for line in (_CERT, _KEY, _PROTOCOLS):
            text = text.replace(line, "")
    else:
        text = text.replace(_LISTEN, f"    listen {listen} ssl;\n")
        text = text.replace(_CERT, f"    ssl_certificate {folder / 'server.crt'};\n")
        text = text.replace(_KEY, f"    ssl_certificate_key {folder / 'server.key'};\n")
    return text


class ContribNginx(NginxProxy):
    """``NginxProxy`` whose server block is the contrib file."""

    def _configure(self) -> None:
        assert self.workdir is not None
        w = self.workdir
        (w / "edgetelemetry.conf").write_text(
            render(self.upstreams, f"{self.host}:{self.port}", w if self.tls else None)
        )
        temp = "\n".join(
            f"  {kind}_temp_path {w / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (w / "nginx.conf").write_text(f"""\
daemon off;
worker_processes 1;
worker_rlimit_nofile 4096;
pid {w / 'nginx.pid'};
error_log stderr notice;
events {{ worker_connections 2048; }}
http {{
  access_log {w / 'access.log'};
{temp}
  include {w / 'edgetelemetry.conf'};
}}
""")


def start_front(stack: Any, upstreams: Sequence[str], *, tls: bool = False) -> ContribNginx:
    """A started front, stopped when ``stack`` (an ExitStack) closes."""
    front = ContribNginx(upstreams, tls=tls)
    stack.callback(front.stop)
    return start_or_fail(front)
