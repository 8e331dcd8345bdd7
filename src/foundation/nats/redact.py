"""Credentials out of URLs and texts, so no output ever shows them.

``nats://alice:s3cret@host:4222`` becomes ``nats://<redacted>@host:4222``; every status,
statistics snapshot, log line and error message that names a server goes through here.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"
"""What replaces a secret."""


def redact_url(url: str) -> str:
    """``url`` (or a comma-separated list of URLs) with any user, password or token removed.

    ``nats://alice:s3cret@host:4222`` becomes ``nats://<redacted>@host:4222``.
    """
    return ",".join(_redact_one(part) for part in url.split(","))


def _redact_one(url: str) -> str:
    text = url.strip()
    try:
        parts = urlsplit(text if "://" in text else f"nats://{text}")
    except ValueError:
        return re.sub(r"[^/@]*@", f"{REDACTED}@", text)
    if "@" not in parts.netloc:
        return text
    host = parts.netloc.rsplit("@", 1)[1]
    cleaned = urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))
    return cleaned if "://" in text else cleaned.split("://", 1)[1]


def redact_text(text: str) -> str:
    """``text`` with the credentials of every URL in it removed (for logs and errors)."""
    return re.sub(r"([a-z][a-z0-9+.-]*://)[^/\s@,]+@", rf"\1{REDACTED}@", text)


__all__ = ["REDACTED", "redact_text", "redact_url"]
