"""The AWS IoT credentials provider's naming rules, written once: role alias and thing name
(AWS's patterns; both end up in a URL path and a header) and the forms of its endpoint URL.

Used by ``config`` (checking settings) and ``credentials`` (the provider); no botocore here.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["ROLE_ALIAS", "THING_NAME", "split_url"]

ROLE_ALIAS = re.compile(r"^[\w=,@-]{1,128}$")
THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
_PATH = re.compile(r"^/role-aliases/([^/]+)/credentials/?$")


def split_url(url: str) -> tuple[str, str | None]:
    """``https://host/role-aliases/A/credentials`` -> (``https://host``, ``A``).

    The original agent's ``sagemaker_edge_provider_aws_iot_cred_endpoint`` may hold the bare
    host or the whole URL; a bare host or origin gives ``(endpoint, None)``.
    """
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    origin = f"{parts.scheme}://{parts.netloc}"
    if parts.path in ("", "/"):
        return origin, None
    m = _PATH.match(parts.path)
    if not m:
        raise ValueError(
            f"IoT credentials endpoint {url!r}: expected a host, https://host[:port] or "
            "https://host/role-aliases/<alias>/credentials"
        )
    return origin, m.group(1)
